"""timm models under a `timm:` prefix (the optional `timm` extra), with ImageNet weights read
from the local Hugging Face cache only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from ..errors import VisionbenchError, did_you_mean
from .weights import load_state, read_state_file

HF_FILES = ("model.safetensors", "pytorch_model.bin")


def import_timm():
    try:
        import timm
    except ImportError:
        raise VisionbenchError(
            "timm models need the timm package", fix="pip install 'visionbench[timm]'"
        ) from None
    return timm


def timm_names(pattern: str = "*") -> list[str]:
    return import_timm().list_models(pattern)


def cached_weights(name: str) -> tuple[Path | None, str]:
    """The weight file of timm model `name` in the local Hugging Face cache (or None), and
    where to get it."""
    timm = import_timm()
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        return None, f"timm has no Hugging Face weights for {name}"
    for file in HF_FILES:
        path = try_to_load_from_cache(repo, file)
        if isinstance(path, str):
            return Path(path), ""
    return None, f"https://huggingface.co/{repo}/resolve/main/{HF_FILES[0]}"


def timm_builder(name: str) -> Callable[..., nn.Module]:
    timm = import_timm()
    if not timm.is_model(name):
        raise VisionbenchError(
            f"unknown timm model '{name}'.{did_you_mean(name, timm.list_models())}",
            fix="`visionbench models timm:PATTERN` lists them (e.g. timm:resnet*)",
        )

    def builder(num_classes: int, in_chans: int = 3, pretrained: bool = False, drop_rate: float = 0.0):
        model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        if pretrained:
            path, url = cached_weights(name)
            if path is None:
                raise VisionbenchError(
                    f"pretrained weights for timm:{name} are not on this machine",
                    where="the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface)",
                    fix=f"download {url} and pass it with model.weights=PATH (--weights PATH)",
                )
            model.weights_report = load_state(model, read_state_file(path))
        return model

    builder.__name__ = f"timm:{name}"
    builder.__doc__ = f"timm {name}"
    return builder
