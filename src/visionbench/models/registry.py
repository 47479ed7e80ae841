"""One way in: `create_model(name, num_classes, in_chans, ...)` over our builders, every
torchvision classification model (imported on first use) and timm's (`timm:` prefix)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.download import Unavailable
from ..errors import VisionbenchError, unknown_name

MODELS: dict[str, Callable[..., nn.Module]] = {}
TIMM_PREFIX = "timm:"


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name: adding a model is one decorated function.
    A name registered twice is an error: the second builder would silently replace the first."""
    if fn.__name__ in MODELS:
        first = MODELS[fn.__name__]
        raise VisionbenchError(
            f"model '{fn.__name__}' is registered twice",
            where=f"{first.__module__}.{first.__qualname__} and {fn.__module__}.{fn.__qualname__}",
            fix="give one of the builder functions another name",
        )
    MODELS[fn.__name__] = fn
    return fn


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name in MODELS:
        return MODELS[name]
    if name.startswith(TIMM_PREFIX):
        from .timm_zoo import timm_builder

        return timm_builder(name[len(TIMM_PREFIX) :])
    from .torchvision_zoo import torchvision_builder, torchvision_names

    if name in torchvision_names():
        return torchvision_builder(name)
    raise unknown_name("model", name, [*MODELS, *torchvision_names(), "timm:<name>"])


def builder_options(builder: Callable[..., nn.Module]) -> list[str]:
    return [p for p in inspect.signature(builder).parameters if p != "num_classes"]


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool = False,
    defaults: dict | None = None,
    **kwargs,
) -> nn.Module:
    """Build `name` with a `num_classes` head for `in_chans` x `img_size` inputs (unset: the
    builder's own size). `kwargs` must
    be options of the builder (else an error naming them); `defaults` (and in_chans/img_size)
    are passed only to builders that take them. pretrained=True loads the published weights from
    their standard cache, downloading them there first unless offline (models.hub), and leaves
    the load report in `model.weights_report`."""
    builder = get_builder(name)
    options = builder_options(builder)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise VisionbenchError(
            f"model '{name}' takes no option {', '.join(unknown)}",
            fix=f"its options: {', '.join(options) or 'none'} (set them with model.kwargs={{...}})",
        )
    if pretrained and "pretrained" not in options:
        raise Unavailable(
            f"model '{name}' has no pretrained weights",
            fix="use model.pretrained=false, or start from a file or a run with model.weights",
        )
    given = {"in_chans": in_chans, "pretrained": pretrained, **(defaults or {})}
    if img_size is not None:  # else the builder's own: 32 for ours, the published size for timm's
        given["img_size"] = img_size
    return builder(num_classes=num_classes, **{k: v for k, v in given.items() if k in options}, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_name(model: nn.Module) -> str:
    """The classifier layer's module name: timm's own answer where it has one, else the last
    Linear or Conv2d (the layer a new class count replaces: fc, classifier.6, heads.head ...)."""
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        for name, module in model.named_modules():
            if module is classifier:
                return name
    last = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = name
    if last is None:
        raise VisionbenchError(f"cannot find the classifier layer of {type(model).__name__}")
    return last


def resize_inputs(model: nn.Module, size: int) -> None:
    """Resize every input batch to size x size on its device before the model sees it (a
    forward pre-hook: one batched interpolate, no per-image Python, state dict unchanged); while
    the model's `train_side` is set (progressive resizing: train_at_side), to that side instead."""
    model.train_side = None

    def hook(module, args):
        return (resized(args[0], module.train_side or size), *args[1:])

    model.register_forward_pre_hook(hook)


@contextmanager
def train_at_side(model: nn.Module, side: int | None) -> Iterator[None]:
    """Within, the batches `model` (or the model inside its DDP or torch.compile wrapper) is fed
    are resized to side x side (None: as built). The model must have been built with
    resize_inputs, as build_model does when train.progressive is on."""
    if side is None:
        yield
        return
    while type(model).__name__ in ("DistributedDataParallel", "OptimizedModule"):
        model = getattr(model, "module", None) or model._orig_mod
    if "train_side" not in model.__dict__:
        raise RuntimeError(f"{type(model).__name__} was built without resize_inputs")
    model.train_side = side
    try:
        yield
    finally:
        model.train_side = None


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """The N x C x H x W batch `x` at size x size, as a model built with `resize_inputs` sees it."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
