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


def progressive_side(epoch: int, epochs: int, side: int, cfg: Any) -> int:
    """The side training images have in 0-based `epoch` of `epochs` under progressive resizing
    (`cfg`: the run's train.progressive): `scale` x the full `side` for the first `hold` of the
    epochs, then growing linearly to `side`, reached for the last `finetune` of them; a multiple
    of `step` px (at least one step), never above `side`. The last epoch is always at `side`,
    the side the model is validated and tested at, however few the epochs. A function of the
    epoch alone, so a resumed run trains every epoch at the size it would have."""
    if cfg.scale >= 1 or epoch == epochs - 1:
        return side
    t, ramp = epoch / epochs, 1 - cfg.hold - cfg.finetune
    if t < cfg.hold:
        scale = cfg.scale
    elif t >= 1 - cfg.finetune - 1e-9 or ramp <= 0:
        scale = 1.0
    else:
        scale = cfg.scale + (1 - cfg.scale) * (t - cfg.hold) / ramp
    return min(side, max(cfg.step, round(side * scale / cfg.step) * cfg.step))


def progressive_sides(epochs: int, side: int, cfg: Any) -> list[int]:
    """The side of every epoch of a run (progressive_side), e.g. [16]*6 + [20, 28, 32, 32]."""
    return [progressive_side(e, epochs, side, cfg) for e in range(epochs)]
