"""Precise BatchNorm statistics (train.precise_bn): after an epoch, each BatchNorm's running
mean and variance are recomputed as the plain average over N training images through the final
weights, as fvcore's and pycls's PreciseBN do (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021). The running averages BatchNorm keeps lag behind weights that still move
fast: a MobileNetV2 trained 49 steps from scratch scored 20% (chance, 5 classes) in eval mode
and 49.6% with its statistics recomputed over 2,304 images (benchmarks/RESULTS.md)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    batches,
    images: int,
    amp_dtype: torch.dtype | None = None,
    average: Callable[[list[torch.Tensor]], None] | None = None,
    parts: int = 1,
) -> int:
    """Set the running statistics of `model`'s trained BatchNorms to their mean over the first
    `images` images of `batches` (an iterator of (x, y) training batches); the number of images
    used. A BatchNorm held fixed (a frozen stage keeps it in eval mode) keeps its statistics;
    `average` (distributed runs) averages the statistics over the ranks in place. The model's
    mode and each BatchNorm's momentum are as before. `parts` (train.accumulate): each batch is
    forwarded as that many micro-batches, the size training normalised and the memory allows."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms or images <= 0:
        return 0
    saved = [
        (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in norms
    ]
    updated: set[int] = set()

    def note(mod: nn.Module, *_) -> None:  # trained in this pass: a BN held fixed reads eval mode
        if mod.training:
            updated.add(id(mod))

    hooks = [m.register_forward_hook(note) for m in norms]
    for m in norms:  # momentum None: a cumulative average of the batches' statistics
        m.reset_running_stats()
        m.momentum = None
    was_training, seen = model.training, 0
    model.train()
    try:
        for x, _ in batches:
            for xs in x.chunk(parts) if parts > 1 else (x,):
                with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    model(xs)
            seen += len(x)
            if seen >= images:
                break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        for m, (momentum, mean, var, count) in zip(norms, saved):
            m.momentum = momentum
            if id(m) not in updated:  # held fixed (or never reached): its statistics as they were
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    live = [t for m in norms if id(m) in updated for t in (m.running_mean, m.running_var)]
    if average is not None and live:
        average(live)
    return seen
