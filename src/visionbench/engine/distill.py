"""Knowledge distillation (Hinton et al., 2015): the student also learns a frozen teacher's soft
targets - the probabilities of a finished run, or of a saved ensemble's members averaged."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import state_digest


class Teacher:
    """Frozen networks whose (vote-weighted) mean probability at temperature T is the target,
    each network's logits first divided by its fitted temperature (`calibration`, None: not
    calibrated), as `predict` and soft votes do. They see the student's own batch - the same
    augmented, normalised images - so any augmentation is distilled as it is trained. Where
    the images are the same every epoch, `cache_targets` computes each image's target once."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[float],
        weight: float,
        temperature: float,
        calibration: Sequence[float | None] = (),
    ):
        self.models = [m.eval().requires_grad_(False) for m in models]
        total = sum(weights)
        self.shares = [w / total for w in weights]
        self.calibration = list(calibration) or [None] * len(self.models)
        self.weight, self.temperature = weight, temperature
        self.cached: torch.Tensor | None = None  # (N, C): training image i's target at row i
        self.identity: dict = {}  # what names it and its fingerprint, recorded in the run

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return sum(
            s * F.softmax(m(x).float() / (t * (c or 1.0)), 1)
            for s, m, c in zip(self.shares, self.models, self.calibration)
        )

    def targets(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The soft targets of the images `x`, read from the cache by their indices `idx`
        (positions in the training set) when it is filled."""
        return self.probs(x) if self.cached is None or idx is None else self.cached[idx]

    def blend(
        self, loss: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(1 - w) x the loss on the labels + w x T^2 x KL(teacher || student) at temperature T:
        T^2 keeps the soft targets' gradients on the labels' scale as T grows (Hinton et al.)."""
        t, target = self.temperature, self.targets(x, idx)
        log_student = F.log_softmax(logits.float() / t, 1)
        soft = F.kl_div(log_student, target, reduction="batchmean") * t * t
        return (1 - self.weight) * loss + self.weight * soft

    @torch.no_grad()
    def cache_targets(self, loader, amp_dtype: torch.dtype | None = None) -> None:
        """Every training image's target, once: `loader` serves the training images unaugmented,
        in image order, normalised as training's loader does, and the networks run under the
        same autocast as in a step - the cached targets are the ones a step would compute."""
        device = loader.device
        parts = []
        for x, _ in loader.epoch(0):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                parts.append(self.probs(x))
        self.cached = torch.cat(parts)

    def fingerprint(self) -> str:
        """sha256 of what the targets depend on besides the images and the run's config: every
        network's weights and buffers, its vote share and its fitted temperature."""
        h = hashlib.sha256()
        for m, s, c in zip(self.models, self.shares, self.calibration):
            h.update(f"{state_digest(m)} {s!r} {c!r}".encode())
        return h.hexdigest()

    def nbytes(self) -> int:
        """The memory the networks' parameters and buffers (and the cached targets) hold."""
        held = [t for m in self.models for t in (*m.parameters(), *m.buffers())]
        held += [self.cached] if self.cached is not None else []
        return sum(t.numel() * t.element_size() for t in held)
