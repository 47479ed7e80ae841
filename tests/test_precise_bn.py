"""train.precise_bn: BatchNorm statistics recomputed from the final weights, not the lagging
running averages - measured through hooks on the network, not recomputed the module's way."""

from __future__ import annotations

from itertools import repeat

import pytest
import torch
import torch.nn as nn

from visionbench.engine.precise_bn import recompute_bn_stats


def inputs_of(module: nn.Module, model: nn.Module, batches) -> torch.Tensor:
    """Every input `module` sees when `model` runs over `batches` (concatenated over the batch)."""
    seen = []
    hook = module.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    hook.remove()
    return torch.cat(seen)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.Flatten()
    )


def batches(n: int = 4, size: int = 16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 10, 10, generator=g) * 3 + 2, torch.zeros(size)) for _ in range(n)]


def test_statistics_are_the_mean_over_the_images_through_the_final_weights():
    model, data = net(), batches()
    model.eval()  # a run evaluates in eval mode: the statistics must not depend on the mode it was in
    used = recompute_bn_stats(model, iter(data), images=48)
    assert used == 48 and not model.training
    assert model[1].momentum == 0.1  # BatchNorm's own averaging is back for the next epoch
    stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in (model[1], model[4])]
    # the second BN's inputs depend on the first's normalisation in train mode: take them so
    model.train()
    first, second = inputs_of(model[1], model, data[:3]), inputs_of(model[4], model, data[:3])
    for (running_mean, running_var), x in zip(stats, (first, second)):
        per_batch = x.view(3, 16, *x.shape[1:])
        mean = per_batch.mean((1, 3, 4)).mean(0)
        var = per_batch.transpose(1, 2).flatten(2).var(2).mean(0)  # unbiased, per batch, averaged
        torch.testing.assert_close(running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(running_var, var, rtol=1e-4, atol=1e-5)


def test_under_accumulation_it_forwards_micro_batches_and_averages_them():
    """train.accumulate: a batch too big for memory in one piece is forwarded in `parts`, as
    training normalised it; the statistics are the mean over those micro-batches."""
    model, data = net(), batches(n=2, size=16)
    sizes = []
    model[0].register_forward_pre_hook(lambda m, inp: sizes.append(len(inp[0])))
    recompute_bn_stats(model, iter(data), images=32, parts=4)
    assert sizes == [4] * 8
    stats = model[1].running_mean.clone()
    micro = [(x, y) for x, _ in data for x, y in zip(x.chunk(4), repeat(None))]
    model.train()
    first = inputs_of(model[1], model, micro)
    mean = first.view(8, 4, *first.shape[1:]).mean((1, 3, 4)).mean(0)
    torch.testing.assert_close(stats, mean, rtol=1e-4, atol=1e-5)


def test_a_batchnorm_held_fixed_keeps_its_statistics():
    model, data = net(), batches()
    frozen = model[1]
    frozen.running_mean.fill_(0.5)
    # as engine/freeze.py holds a frozen stage's BatchNorm: eval mode at each forward
    frozen.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False))
    recompute_bn_stats(model, iter(data), images=32)
    assert torch.all(frozen.running_mean == 0.5)
    assert not torch.allclose(model[4].running_mean, torch.zeros(8))  # the live one was recomputed


@pytest.mark.slow  # a training run: over 2 s on 2 cores
def test_a_run_with_precise_bn_saves_and_validates_the_recomputed_statistics(tmp_path, tiny_overrides):
    from visionbench.commands.train import train
    from visionbench.config import resolve_config
    from visionbench.runs.reopen import open_run

    overrides = [o for o in tiny_overrides if not o.startswith("aug.")]  # the same images every pass
    cfg = resolve_config(
        [],
        overrides
        + [
            "model.name=scratch_cnn",
            "model.kwargs={depth: 2, width: 8}",
            "train.batch_size=32",
            "train.precise_bn=10000",
            "name=p",
        ],
    )
    run = train(cfg, tmp_path / "runs", quiet=True)
    loaded = open_run(run.path, weights="last")
    model, train_split = loaded.model, loaded.data.train
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    # the saved statistics are the last epoch's batches' statistics through the saved weights
    model.train()
    last_epoch = list(train_split.epoch(cfg.train.epochs - 1))
    means = [inputs_of(bns[0], model, [b]).float().mean((0, 2, 3)) for b in last_epoch]
    torch.testing.assert_close(saved[0][0], torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    assert bns[0].momentum == 0.1
