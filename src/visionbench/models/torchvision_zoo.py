"""Every torchvision classification model: a head for any class count, any input channels,
a small-image stem for ResNets, and ImageNet weights from torch hub's cache, downloaded there
once unless offline."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from ..errors import VisionbenchError
from .hub import damaged, hub_file, hub_path
from .weights import load_state, read_state_file

RESNETS = ("resnet", "resnext", "wide_resnet")


@functools.cache
def torchvision_names() -> list[str]:
    import torchvision  # here, not at the top: it costs seconds of start-up that small models never need

    return torchvision.models.list_models(module=torchvision.models)


def weights_url(arch: str) -> str:
    """The URL of torchvision's default ImageNet weights for `arch`."""
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.url


def weight_file(arch: str) -> tuple[Path, str]:
    """Where torchvision keeps `arch`'s default ImageNet weights ($TORCH_HOME), and their URL."""
    url = weights_url(arch)
    return hub_path(url), url


def pretrained_state(arch: str) -> dict:
    """torchvision's weights from torch hub's cache, downloaded there once (checked against the
    sha256 prefix in their name) unless offline."""
    path = hub_file(arch, weights_url(arch), check_hash=True)
    try:
        return read_state_file(path)
    except VisionbenchError as e:  # it passed its checksum yet does not read: damaged all the same
        raise damaged(arch, path, e.what) from None


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def build_torchvision(
    arch: str,
    num_classes: int,
    in_chans: int,
    img_size: int,
    pretrained: bool,
    small_stem: bool,
    **extra,
) -> nn.Module:
    import torchvision

    if arch in ("googlenet", "inception_v3"):
        extra |= {"aux_logits": False, "init_weights": True}
    if arch.startswith("vit_"):
        extra["image_size"] = img_size  # its position embedding is sized for one input size
    model = torchvision.models.get_model(arch, num_classes=num_classes, **extra)
    name, conv = first_conv(model)
    if small_stem:  # 3x3 stride-1 stem, no max-pool: keeps 32x32 inputs at 32x32 into layer1
        model.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != conv.in_channels:
        new = nn.Conv2d(
            in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None,
        )  # fmt: skip
        replace_module(model, name, new)
    if pretrained:  # the head (other class count) and a small stem are skipped; grey stems summed
        model.weights_report = load_state(model, pretrained_state(arch))
    return model


def torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    """A builder for `arch`; ResNets also take small_stem (default on, for 28-64 px inputs) and
    zero_init_residual (model.kwargs)."""
    if arch.startswith(RESNETS):

        def builder(
            num_classes: int,
            in_chans: int = 3,
            pretrained: bool = False,
            small_stem: bool = True,
            zero_init_residual: bool = False,
        ):
            # zero_init_residual: each block's last BatchNorm starts at zero, so every block starts
            # as the identity (Goyal et al. 2017; timm's default, so RSB's). Measured on 2,700 MNIST
            # images, 168 steps of batch 32 at lr 0.0125: ResNet-50 with the standard stem 92.4%
            # test with it, 74.8% without (its loss blew up to 4.3 first); but ResNet-18 with the
            # small stem 31.5% with it, 96.0% without - the identity blocks leave only a 3x3 stem's
            # local features at first. torchvision's default (off) stays ours.
            return build_torchvision(
                arch,
                num_classes,
                in_chans,
                224,
                pretrained,
                small_stem,
                zero_init_residual=zero_init_residual,
            )

    else:

        def builder(num_classes: int, in_chans: int = 3, img_size: int = 224, pretrained: bool = False):
            return build_torchvision(arch, num_classes, in_chans, img_size, pretrained, False)

    builder.__name__ = arch
    builder.__doc__ = f"torchvision {arch}"
    return builder
