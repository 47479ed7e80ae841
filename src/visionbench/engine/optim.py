"""Optimizers and per-step learning-rate schedules, created by name from the config."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from ..config import BASE_LR, OptimConfig, SchedConfig
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors): decaying them only hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """OPTIMIZERS[optim.name] with the settings its constructor takes; betas and eps left unset
    keep each optimizer's own default (its paper's). Weight decay comes from the parameter
    groups: coupled (L2) for sgd/adam/rmsprop/lars, decoupled for adamw/yogi/lamb/lion."""
    build = OPTIMIZERS[cfg.name]
    settings = {
        "momentum": cfg.momentum,
        "nesterov": cfg.nesterov and cfg.momentum > 0,
        "betas": cfg.betas,
        "eps": cfg.eps,
        "trust_coefficient": cfg.trust_coefficient,
    }
    takes = inspect.signature(build).parameters
    kwargs = {k: v for k, v in settings.items() if k in takes and v is not None}
    return build(param_groups(model, cfg.weight_decay), lr=BASE_LR if cfg.lr is None else cfg.lr, **kwargs)


class Schedule(torch.optim.lr_scheduler.LambdaLR):
    """Stepped once per batch; its state is a step count (and, for plateau, the decay so far),
    so resume is exact. `report(val_loss)` once per epoch drives the plateau decay."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int):
        self.plateau = cfg.name == "plateau"
        self.patience, self.gamma = cfg.patience, cfg.gamma
        self.scale, self.best_loss, self.bad_epochs = 1.0, math.inf, 0
        total, factor = steps_per_epoch * epochs, SCHEDULES[cfg.name]
        super().__init__(optimizer, lambda s: factor(s, total, steps_per_epoch, cfg) * self.scale)

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
