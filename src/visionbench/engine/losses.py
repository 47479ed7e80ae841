"""Training losses by name; both take class indices (B,) or soft targets (B, K) from Mixup/CutMix."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import unknown_name

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_targets(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices or soft targets -> (B, K) probabilities, smoothed towards uniform."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, num_classes).float()
    return targets * (1 - smoothing) + smoothing / num_classes


def cross_entropy(label_smoothing: float = 0.0) -> Loss:
    """Softmax cross-entropy."""
    return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def binary_cross_entropy(label_smoothing: float = 0.0) -> Loss:
    """One sigmoid per class against the (smoothed, mixed) targets, averaged over classes and
    images -- the loss of "ResNet strikes back" (Wightman et al., 2021)."""
    return lambda logits, y: F.binary_cross_entropy_with_logits(
        logits, soft_targets(y, logits.shape[1], label_smoothing).to(logits.dtype)
    )


# `train.loss`: config.py checks it against these names (this module imports no config)
LOSSES: dict[str, Callable[[float], Loss]] = {"ce": cross_entropy, "bce": binary_cross_entropy}


def create_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name](label_smoothing)
