"""Knowledge distillation (Hinton et al., 2015): the student also learns a frozen teacher's soft
targets - the probabilities of a finished run, or of a saved ensemble's members averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class Teacher:
    """Frozen networks whose (vote-weighted) mean probability at temperature T is the target.
    They see the student's own batch - the same augmented, normalised images - so any
    augmentation is distilled as it is trained; their logits are never cached."""

    def __init__(
        self, models: Sequence[nn.Module], weights: Sequence[float], weight: float, temperature: float
    ):
        self.models = [m.eval().requires_grad_(False) for m in models]
        total = sum(weights)
        self.shares = [w / total for w in weights]
        self.weight, self.temperature = weight, temperature

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return sum(s * F.softmax(m(x).float() / t, 1) for s, m in zip(self.shares, self.models))

    def blend(self, loss: torch.Tensor, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(1 - w) x the loss on the labels + w x T^2 x KL(teacher || student) at temperature T:
        T^2 keeps the soft targets' gradients on the labels' scale as T grows (Hinton et al.)."""
        t, target = self.temperature, self.probs(x)
        log_student = F.log_softmax(logits.float() / t, 1)
        soft = F.kl_div(log_student, target, reduction="batchmean") * t * t
        return (1 - self.weight) * loss + self.weight * soft
