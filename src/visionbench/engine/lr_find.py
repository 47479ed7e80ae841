"""The learning-rate range test (Smith, 2015/2017): raise the lr exponentially, one batch per step,
watch the smoothed loss, stop when it diverges -- then put the model back as it was."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn

from ..data.loader import TensorLoader
from .checkpoint import rng_state, set_rng_state
from .loop import forward_backward, optimizer_step
from .losses import Loss


def range_test(
    model: nn.Module,
    loader: TensorLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: Loss,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    iters: int = 200,
    beta: float = 0.98,
    diverge: float = 4.0,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """{lrs, losses (smoothed), raw}. The loss is an exponential moving average with Adam-style
    bias correction (fastai's); the test stops once it exceeds `diverge` x its minimum. 200 steps,
    not fastai's 100: the average remembers ~50 steps, and at 100 steps over 8 decades of lr that
    is half a decade of lag (measured on CIFAR-10: suggestions spread 2.1x over 3 repeats at 100
    steps, 1.7x at 200; benchmarks/RESULTS.md). Weights, buffers, gradients, train/eval modes,
    optimizer state and every RNG (torch, CUDA, numpy, random) are restored afterwards, whatever
    happens: a run trained after the test is the run trained without it."""
    scaler = torch.amp.GradScaler(loader.device.type) if amp_dtype == torch.float16 else None
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), rng_state()
    modes = [m.training for m in model.modules()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    lrs, losses, raw = [], [], []
    mults = [g["lr"] / optimizer.defaults["lr"] for g in optimizer.param_groups]  # optim.norm_lr_mult
    avg, best = 0.0, math.inf
    model.train()
    try:
        batches = (xy for epoch in range(10**6) for xy in loader.epoch(epoch))
        for i, (x, y) in zip(range(iters), batches):
            lr = start_lr * (end_lr / start_lr) ** (i / max(1, iters - 1))
            for group, mult in zip(optimizer.param_groups, mults):
                group["lr"] = lr * mult
            optimizer.zero_grad(set_to_none=True)
            _, loss = forward_backward(model, x, y, loss_fn, amp_dtype, scaler)
            optimizer_step(optimizer, scaler)
            value = loss.item()  # one sync per step: the test decides on every loss
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            raw.append(value)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
            best = min(best, smoothed)
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        set_rng_state(saved[2])
        for m, training in zip(model.modules(), modes):
            m.training = training
        for p, grad in zip(model.parameters(), grads):
            p.grad = grad
    return {"lrs": lrs, "losses": losses, "raw": raw}


def suggest(lrs: list[float], losses: list[float]) -> dict:
    """Three readings of one curve:
    minimum/10 -- a tenth of the lr at the lowest loss (Smith's rule of thumb);
    steepest   -- where the loss falls fastest per decade of lr, before the minimum;
    valley     -- 2/3 of the way down the longest falling stretch (fastai's default, the steadiest)."""
    lr, loss = np.asarray(lrs), np.asarray(losses)
    finite = np.isfinite(loss)
    # as fastai does: drop the first tenth, where the average rests on a few noisy batches (a
    # lucky first batch would be the "minimum"), and the last 5 points, where it diverges
    lr, loss = lr[finite][len(lrs) // 10 : -5], loss[finite][len(lrs) // 10 : -5]
    if len(loss) < 5:
        return {"valley": None, "steepest": None, "minimum/10": None}
    low = int(np.argmin(loss))
    slope = np.gradient(loss[: low + 1], np.log10(lr[: low + 1])) if low >= 2 else np.zeros(1)
    # longest strictly falling subsequence, O(n^2) over ~100 points
    run = np.ones(len(loss), dtype=int)
    start = end = 0
    for i in range(1, len(loss)):
        for j in range(i):
            if loss[i] < loss[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
            start = max(0, end - run[end])
    third = (end - start) / 3
    return {
        "valley": float(lr[min(len(lr) - 1, start + int(third) + int(third / 2))]),
        "steepest": float(lr[int(np.argmin(slope))]),
        "minimum/10": float(lr[low] / 10),
    }
