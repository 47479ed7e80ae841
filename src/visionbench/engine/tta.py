"""Test-time augmentation: named sets of weighted views whose logits `predict` averages."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import unknown_name

View = Callable[[torch.Tensor], torch.Tensor]


def shifted(dy: int, dx: int) -> View:
    """The image moved by (dy, dx) pixels, its edge reflected in (x is NCHW, normalised)."""

    def view(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = max(abs(dy), abs(dx))
        return F.pad(x, (p, p, p, p), mode="reflect")[..., p - dy : p - dy + h, p - dx : p - dx + w]

    return view


def mirrored(view: View) -> View:
    return lambda x: view(x).flip(3)


identity: View = lambda x: x  # noqa: E731

# (weight, view) pairs. "flip": the image and its mirror image (+0.3-0.5 points on CIFAR-10 for
# models trained with flips). "flip-translate": airbench's level 2 - half on the image and its
# mirror, half on both shifted one pixel up-left and down-right (+0.2 points more for `fastnet`)
TTA_VIEWS: dict[str, tuple[tuple[float, View], ...]] = {
    "none": (),
    "flip": ((0.5, identity), (0.5, mirrored(identity))),
    "flip-translate": (
        (0.25, identity),
        (0.25, mirrored(identity)),
        *((0.125, v) for s in (shifted(-1, -1), shifted(1, 1)) for v in (s, mirrored(s))),
    ),
}


def tta_views(name: str | None) -> tuple[tuple[float, View], ...]:
    if name is None:
        return ()
    if isinstance(name, bool):  # the API's tta=True / False
        name = "flip" if name else "none"
    if name not in TTA_VIEWS:
        raise unknown_name("test-time augmentation", name, TTA_VIEWS)
    return TTA_VIEWS[name]
