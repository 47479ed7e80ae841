"""Models: one registry over our own networks, torchvision's and timm's (`timm:` prefix)."""

from . import cnn, fastnet, vit  # noqa: F401  (registers the builders)
from .hub import offline, set_offline
from .registry import (
    MODELS,
    count_params,
    create_model,
    get_builder,
    head_name,
    register_model,
    resize_inputs,
)

__all__ = [
    "MODELS",
    "count_params",
    "create_model",
    "get_builder",
    "head_name",
    "register_model",
    "offline",
    "resize_inputs",
    "set_offline",
]
