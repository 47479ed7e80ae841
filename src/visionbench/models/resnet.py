"""torchvision ResNets with a new head, any input channels, and an optional small-image stem."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import VisionbenchError
from .registry import register_model


def pretrained_state(weights_enum) -> dict:
    """torchvision weights from the local hub cache only: nothing is downloaded at run time."""
    url = weights_enum.DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        raise VisionbenchError(
            "pretrained weights are not on this machine",
            where=str(path),
            fix=f"download {url} and place it at that path (or set TORCH_HOME), or use model.pretrained=false",
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def build_resnet(arch: str, num_classes: int, in_chans: int, pretrained: bool, small_stem: bool) -> nn.Module:
    import torchvision  # here, not at the top: it costs seconds of start-up that small models never need

    model = getattr(torchvision.models, arch)()
    if pretrained:
        model.load_state_dict(pretrained_state(torchvision.models.get_model_weights(arch)))
    if small_stem:  # 3x3 stride-1 stem, no max-pool: keeps 32x32 inputs at 32x32 into layer1
        model.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        with torch.no_grad():  # grayscale from RGB weights: sum the colour filters
            model.conv1.weight.copy_(old.weight.sum(1, keepdim=True).repeat(1, in_chans, 1, 1) / in_chans)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _resnet(arch: str):
    def builder(num_classes: int, in_chans: int = 3, pretrained: bool = False, small_stem: bool = True, **_):
        return build_resnet(arch, num_classes, in_chans, pretrained, small_stem)

    builder.__name__ = arch
    builder.__doc__ = f"torchvision {arch}; small_stem for 28-64 px inputs."
    return register_model(builder)


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    _resnet(_arch)
