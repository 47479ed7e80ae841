"""The training and evaluation loops: plain PyTorch, one screen each."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import repeat

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.loader import TensorLoader
from ..errors import VisionbenchError
from .ema import ModelEMA
from .losses import Loss, create_loss
from .stopping import StopFlag


def train_one_epoch(
    model: nn.Module,
    loader: TensorLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epoch: int,
    start_batch: int = 0,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
    amp_dtype: torch.dtype | None = None,
    stop: StopFlag | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    loss_fn: Loss | None = None,
    ema: ModelEMA | None = None,
    scaler: torch.amp.GradScaler | None = None,
    accumulate: int = 1,
    teacher=None,
    multilabel: bool = False,
) -> dict:
    """One pass over the loader from `start_batch`. Returns sums (loss, correct, seen), the next
    batch index, and whether a stop was asked for; loss and accuracy stay on the device until
    the end, so nothing synchronises a GPU inside a step. Targets may be soft (Mixup/CutMix):
    accuracy then counts the class with the largest share; `multilabel` (multi-hot targets):
    the images whose every label is right at probability 0.5 (exact match)."""
    loss_fn = loss_fn or create_loss("ce", label_smoothing)
    model.train()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, batch, t0 = 0, start_batch, time.perf_counter()
    # a teacher's cached targets are read by the images' indices in the training set
    cached = teacher is not None and teacher.cached is not None
    indices = loader.indices(epoch, start_batch) if cached else repeat(None)
    for batch, ((x, y), idx) in enumerate(zip(loader.epoch(epoch, start_batch), indices), start=start_batch):
        optimizer.zero_grad(set_to_none=True)
        logits, loss = forward_backward(model, x, y, loss_fn, amp_dtype, scaler, accumulate, teacher, idx)
        optimizer_step(optimizer, scaler, grad_clip and (grad_clip, model.parameters()))
        scheduler.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.detach() * len(y)
        correct += is_right(logits.detach(), y, multilabel).sum()
        seen += len(y)
        if on_step is not None:
            on_step(batch, loss)
        if stop:
            batch += 1
            break
    else:
        batch = len(loader)
    loss_total = loss_sum.item()
    if not np.isfinite(loss_total):
        raise VisionbenchError(
            f"training loss became {loss_total} in epoch {epoch + 1}",
            fix="lower optim.lr, set train.grad_clip, or check the data for NaN pixels; "
            "the last good checkpoint is kept",
        )
    return {
        "loss_sum": loss_total,
        "correct": int(correct.item()),
        "seen": seen,
        "next_batch": batch,
        "stopped": bool(stop),
        "seconds": time.perf_counter() - t0,
    }


def forward_backward(
    model, x, y, loss_fn, amp_dtype=None, scaler=None, parts: int = 1, teacher=None, idx=None
):
    """The batch's logits and mean loss, its gradients left in the parameters. With `parts` > 1
    (train.accumulate) the batch runs as that many micro-batches, each loss weighted by its
    share of the batch: the summed gradients are the whole batch's (BatchNorm aside), in the
    memory of one micro-batch. Under fp16 autocast `scaler` scales the loss (engine/device.py);
    a `teacher` (engine/distill.py) blends its soft targets into it, cached ones read by the
    images' training-set indices `idx`."""
    outs, total = [], torch.zeros((), device=x.device)
    idxs = idx.chunk(parts) if idx is not None else repeat(None)
    for xs, ys, ids in zip(x.chunk(parts), y.chunk(parts), idxs) if parts > 1 else ((x, y, idx),):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(xs)
            loss = loss_fn(out, ys) if teacher is None else teacher.blend(loss_fn(out, ys), out, xs, ids)
            loss = loss if parts == 1 else loss * (len(ys) / len(y))
        (scaler.scale(loss) if scaler else loss).backward()
        outs.append(out.detach())
        total = total + loss.detach()
    return (outs[0] if parts == 1 else torch.cat(outs)), total


def optimizer_step(optimizer: torch.optim.Optimizer, scaler=None, clip=None) -> None:
    """The step on the gradients backward left. Under fp16 autocast (GPUs before Ampere) the
    loss was scaled by `scaler` so small gradients do not flush to zero in fp16: the step is
    skipped when they overflowed; `clip` = (max norm, parameters) clips the unscaled gradients."""
    if clip:
        if scaler:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(clip[1], clip[0])
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def is_right(logits: torch.Tensor, y: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Whether each image is predicted right: the argmax class (of a soft target, its largest
    share); for multi-hot targets, every label's sigmoid on the right side of 0.5 (logit 0)."""
    if multilabel:
        return ((logits > 0) == (y > 0.5)).all(1)
    return logits.argmax(1) == (y if y.ndim == 1 else y.argmax(1))


PARTIAL_SUMS = ("loss_sum", "correct", "seen", "seconds")


def train_epoch_in_pieces(
    model: nn.Module,
    loader: TensorLoader,
    state,
    pause,
    checkpoint: Callable[[], None],
    reduce: Callable[[dict], dict] = lambda sums: sums,
    **step,
) -> dict:
    """The epoch `state.epoch` from batch `state.batch`, in pieces: `pause` (a CheckpointTimer)
    cuts it at a batch boundary when a periodic checkpoint is due or a stop was asked for; the
    state (with the sums so far in `state.partial`) is then checkpointed. Returns the whole
    epoch's sums with state.batch back at 0 - or, when stopped mid-epoch, with state.batch at
    the next batch. `reduce` sums over distributed ranks; `step` goes to train_one_epoch."""
    while True:
        sums = reduce(
            train_one_epoch(
                model,
                loader,
                state.optimizer,
                state.scheduler,
                epoch=state.epoch,
                start_batch=state.batch,
                stop=pause,
                ema=state.ema,
                scaler=state.scaler,
                **step,
            )
        )
        if state.partial:  # the part of this epoch trained before the last checkpoint
            sums = {k: sums[k] + state.partial.get(k, 0) if k in PARTIAL_SUMS else sums[k] for k in sums}
        if not (sums["stopped"] and sums["next_batch"] < len(loader)):
            state.batch, state.partial = 0, None
            return sums
        state.batch, state.partial = sums["next_batch"], {k: sums[k] for k in PARTIAL_SUMS}
        checkpoint()
        pause.reset()
        if pause.stop:
            return sums


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: TensorLoader,
    amp_dtype: torch.dtype | None = None,
    views: Sequence[tuple[float, Callable[[torch.Tensor], torch.Tensor]]] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for the whole loader, on the CPU, in loader order; with `views`
    (test-time augmentation, engine/tta.py) the weighted mean of the logits over those views."""
    model.eval()
    outs, ys = [], []
    for x, y in loader.epoch(0):
        with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if views:
                outs.append(sum(w * model(view(x)).float() for w, view in views))
            else:
                outs.append(model(x).float())
        ys.append(y)
    return torch.cat(outs).cpu(), torch.cat(ys).cpu()


def evaluate(model: nn.Module, loader: TensorLoader, amp_dtype: torch.dtype | None = None) -> dict:
    """Loss and accuracy over the loader: cross-entropy and top-1, or for multi-hot targets
    (N, C) the mean BCE and the exact-match share."""
    logits, targets = predict(model, loader, amp_dtype)
    multilabel = targets.ndim == 2
    loss = F.binary_cross_entropy_with_logits if multilabel else F.cross_entropy
    return {
        "loss": loss(logits, targets).item(),
        "acc": is_right(logits, targets, multilabel).float().mean().item(),
        "logits": logits,
        "targets": targets,
    }
