"""Training losses by name; both take class indices (B,) or soft targets (B, K) from Mixup/CutMix,
and optional class weights (train.class_weights) that apply to soft targets too."""

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


def target_weights(targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each image's class weight, (B,): w[y], or for a mixed target the mix of its classes'
    weights (lambda w[a] + (1 - lambda) w[b]). Read from the unsmoothed targets: label smoothing
    spreads the loss, not the image's weight."""
    return (soft_targets(targets, len(weight)) * weight).sum(1)  # not a matmul: autocast keeps fp32


# Class weights (train.class_weights) scale each image's loss, and the batch's loss is the mean
# over its images -- not torch's sum / sum of the weights: a mean over images is what
# train.accumulate's micro-batches add up to exactly (engine/loop.py), and balanced weights
# average 1 over the training images, so the loss keeps its unweighted scale on average.


def cross_entropy(label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> Loss:
    """Softmax cross-entropy. With class weights w, per image sum_c w_c t_ic (-log p_ic) over the
    (smoothed) targets: w[y] CE for a class index (torch's weighted CE, smoothing included), and
    for Mixup/CutMix's soft targets, being linear in them, lambda w_a CE_a + (1 - lambda) w_b CE_b."""
    if weight is None:
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    def weighted(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        smoothed = soft_targets(y, logits.shape[1], label_smoothing)
        return -(smoothed * weight * F.log_softmax(logits.float(), 1)).sum() / len(y)

    return weighted


def binary_cross_entropy(label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> Loss:
    """One sigmoid per class against the (smoothed, mixed) targets, averaged over classes and
    images -- the loss of "ResNet strikes back" (Wightman et al., 2021). With class weights,
    each image's mean over classes times its target's weight (target_weights)."""

    def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = soft_targets(y, logits.shape[1], label_smoothing).to(logits.dtype)
        if weight is None:
            return F.binary_cross_entropy_with_logits(logits, targets)
        per_image = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        return (per_image.mean(1) * target_weights(y, weight)).mean()

    return bce


# `train.loss`: config.py checks it against these names (this module imports no config)
LOSSES: dict[str, Callable[..., Loss]] = {"ce": cross_entropy, "bce": binary_cross_entropy}


def create_loss(name: str, label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> Loss:
    """The loss `name`; `weight` (K,), on the logits' device: each class's weight in it
    (train.class_weights), or None."""
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name](label_smoothing, weight)
