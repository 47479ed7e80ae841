"""Test-time augmentation: named sets of views whose logits `predict` averages."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import unknown_name

View = Callable[[torch.Tensor], torch.Tensor]

# "flip": the image and its mirror image, as airbench's evaluation does (+0.3-0.5 points on
# CIFAR-10 for models trained with flips); x is a normalised NCHW batch, width is dim 3
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (),
    "flip": (lambda x: x, lambda x: x.flip(3)),
}


def tta_views(name: str | None) -> tuple[View, ...]:
    if name is None:
        return ()
    if name not in TTA_VIEWS:
        raise unknown_name("test-time augmentation", name, TTA_VIEWS)
    return TTA_VIEWS[name]
