"""Learning-rate schedules by name (`sched.name`): each gives the multiplier of the base lr at one
step. This module imports no config (config.py checks `sched.name` against SCHEDULES)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# f(step, total, steps_per_epoch, cfg) -> multiplier of the base lr; step is 0-based of `total`
# and cfg is the run's SchedConfig
Factor = Callable[[int, int, int, Any], float]


def onecycle(step: int, total: int, steps_per_epoch: int, cfg: Any) -> float:
    """Linear up from 1/25 to 1, then cosine down to ~0 (Smith & Topin); the rise is its warmup."""
    t = step / max(1, total)
    if t < cfg.pct_start:
        return 0.04 + 0.96 * t / cfg.pct_start
    return 0.5 * (1 + math.cos(math.pi * (t - cfg.pct_start) / (1 - cfg.pct_start))) + 1e-4


def after_warmup(decay: Callable[[float, int, int, Any], float]) -> Factor:
    """Linear warmup over `sched.warmup_epochs` from `sched.warmup_start` of the peak, then
    decay(done, step, steps_per_epoch, cfg), where `done` runs from 0 to 1 after the warmup."""

    def factor(step: int, total: int, steps_per_epoch: int, cfg: Any) -> float:
        warm = cfg.warmup_epochs * steps_per_epoch
        if step < warm:
            return cfg.warmup_start + (1 - cfg.warmup_start) * (step + 1) / warm
        return decay((step - warm) / max(1, total - warm), step, steps_per_epoch, cfg)

    return factor


SCHEDULES: dict[str, Factor] = {
    "onecycle": onecycle,
    "cosine": after_warmup(
        lambda done, step, spe, c: (
            c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))
        )
    ),
    "linear": after_warmup(lambda done, step, spe, c: c.min_lr_ratio + (1 - c.min_lr_ratio) * (1 - done)),
    "step": after_warmup(lambda done, step, spe, c: c.gamma ** (step // (c.step_epochs * spe))),
    "plateau": after_warmup(lambda *_: 1.0),  # Schedule.report scales it down on each plateau
    "constant": after_warmup(lambda *_: 1.0),
}
