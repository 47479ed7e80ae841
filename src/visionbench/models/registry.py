"""One way in: `create_model(name, num_classes, in_chans, ...)` over registered builders."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..errors import unknown_name

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name: adding a model is one decorated function."""
    MODELS[fn.__name__] = fn
    return fn


def create_model(
    name: str, num_classes: int, in_chans: int = 3, img_size: int = 32, pretrained: bool = False, **kwargs
) -> nn.Module:
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name](
        num_classes=num_classes, in_chans=in_chans, img_size=img_size, pretrained=pretrained, **kwargs
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
