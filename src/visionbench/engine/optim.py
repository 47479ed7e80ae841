"""Optimizers and per-step learning-rate schedules, created by name from the config."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import OptimConfig, SchedConfig
from .optimizers import Lamb, Lars, Lion, Yogi


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors): decaying them only hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def given(cfg: OptimConfig, *keys: str) -> dict:
    """The keys the user set (not None): the others keep each optimizer's own (its paper's) default."""
    return {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}


OPTIMIZERS = {
    "sgd": lambda g, c: torch.optim.SGD(
        g, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0
    ),
    "adam": lambda g, c: torch.optim.Adam(g, lr=c.lr, **given(c, "betas", "eps")),
    "adamw": lambda g, c: torch.optim.AdamW(g, lr=c.lr, **given(c, "betas", "eps")),
    "rmsprop": lambda g, c: torch.optim.RMSprop(g, lr=c.lr, momentum=c.momentum, **given(c, "eps")),
    "yogi": lambda g, c: Yogi(g, lr=c.lr, **given(c, "betas", "eps")),
    "lamb": lambda g, c: Lamb(g, lr=c.lr, **given(c, "betas", "eps")),
    "lars": lambda g, c: Lars(g, lr=c.lr, momentum=c.momentum, trust_coefficient=c.trust_coefficient),
    "lion": lambda g, c: Lion(g, lr=c.lr, **given(c, "betas")),
}


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Weight decay comes from the parameter groups: coupled (L2) for sgd/adam/rmsprop/lars,
    decoupled for adamw/yogi/lamb/lion."""
    return OPTIMIZERS[cfg.name](param_groups(model, cfg.weight_decay), cfg)


def lr_factor(step: int, total: int, steps_per_epoch: int, cfg: SchedConfig) -> float:
    """Multiplier of the base lr at `step` (0-based) of `total` steps."""
    t = step / max(1, total)
    if cfg.name == "onecycle":  # linear up from 1/25 to 1, then cosine down to ~0 (Smith & Topin)
        if t < cfg.pct_start:
            return 0.04 + 0.96 * t / cfg.pct_start
        return 0.5 * (1 + math.cos(math.pi * (t - cfg.pct_start) / (1 - cfg.pct_start))) + 1e-4
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    done = (step - warm) / max(1, total - warm)
    floor = cfg.min_lr_ratio
    if cfg.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))
    if cfg.name == "linear":
        return floor + (1 - floor) * (1 - done)
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    return 1.0


class Schedule(torch.optim.lr_scheduler.LambdaLR):
    """Stepped once per batch; its state is a step count (and, for plateau, the decay so far),
    so resume is exact. `report(val_loss)` once per epoch drives the plateau decay."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int):
        self.plateau = cfg.name == "plateau"
        self.patience, self.gamma = cfg.patience, cfg.gamma
        self.scale, self.best_loss, self.bad_epochs = 1.0, math.inf, 0
        total = steps_per_epoch * epochs
        super().__init__(optimizer, lambda s: lr_factor(s, total, steps_per_epoch, cfg) * self.scale)

    def report(self, val_loss: float) -> None:
        if not self.plateau:
            return
        if val_loss < self.best_loss:
            self.best_loss, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale *= self.gamma
                self.bad_epochs = 0


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int
) -> Schedule:
    return Schedule(optimizer, cfg, steps_per_epoch, epochs)
