"""Optimizers and per-step learning-rate schedules, created by name from the config."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import OptimConfig, SchedConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors): decaying them only hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


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
    if cfg.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    return 1.0


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per batch; its state is a step count, so resume is exact."""
    total = steps_per_epoch * epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, steps_per_epoch, cfg))
