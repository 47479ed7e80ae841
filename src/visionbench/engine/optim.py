"""Optimizers and per-step learning-rate schedules, created by name from the config."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from ..config import OptimConfig, SchedConfig, default_lr
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULES

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, cfg: OptimConfig, lr: float) -> list[dict]:
    """Weights decay; biases and norm parameters (1-D tensors) do not unless optim.bias_decay -
    decaying them usually only hurts. Norm layers' parameters learn at optim.norm_lr_mult x the
    lr, their decay divided by it so each step decays them as much as the rest (airbench's
    64x on BN biases)."""
    norm = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    flat_decay = cfg.weight_decay if cfg.bias_decay else 0.0
    groups = {"decay": [], "flat": [], "norm": []}
    for p in model.parameters():
        if p.requires_grad:
            groups[
                "norm" if id(p) in norm and cfg.norm_lr_mult != 1 else "decay" if p.ndim > 1 else "flat"
            ].append(p)
    out = [
        {"params": groups["decay"], "weight_decay": cfg.weight_decay},
        {"params": groups["flat"], "weight_decay": flat_decay},
    ]
    if groups["norm"]:
        out.append(
            {
                "params": groups["norm"],
                "lr": lr * cfg.norm_lr_mult,
                "weight_decay": flat_decay / cfg.norm_lr_mult,
            }
        )
    return out


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
    lr = default_lr(cfg.name, 128)[0] if cfg.lr is None else cfg.lr
    return build(param_groups(model, cfg, lr), lr=lr, **kwargs)


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
