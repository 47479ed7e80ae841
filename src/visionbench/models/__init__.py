"""Models: one registry over our small CNNs and torchvision's ResNets."""

from . import cnn, resnet  # noqa: F401  (registers the builders)
from .registry import MODELS, count_params, create_model, register_model

__all__ = ["MODELS", "count_params", "create_model", "register_model"]
