"""`visionbench models`: names, parameter counts (built on the meta device: no memory, no
weights) and whether pretrained weights are on this machine."""

from __future__ import annotations

import fnmatch

import torch

from .registry import MODELS, TIMM_PREFIX, count_params, create_model

MAX_COUNTED = 20  # counting builds each model (~0.1-1 s each): only for a short list


def matches(names: list[str], pattern: str) -> list[str]:
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatch(n, pattern)]
    return [n for n in names if pattern in n]


def meta_params(name: str, num_classes: int, in_chans: int, img_size: int) -> int | None:
    """Parameters of `name` as create_model builds it; None where a model cannot be built on
    the meta device (torchvision's RegNets compute widths with real tensors)."""
    try:
        with torch.device("meta"):
            return count_params(create_model(name, num_classes, in_chans, img_size))
    except Exception:
        return None


def weights_on_disk(name: str) -> bool | None:
    """True/False for models with published weights; None for ours (no pretrained weights)."""
    if name in MODELS:
        return None
    if name.startswith(TIMM_PREFIX):
        from .timm_zoo import cached_weights

        return cached_weights(name[len(TIMM_PREFIX) :]) is not None
    from .torchvision_zoo import weight_file

    return weight_file(name)[0].is_file()


def list_models(
    pattern: str = "", num_classes: int = 10, in_chans: int = 3, img_size: int = 32
) -> list[dict]:
    """Matching models: ours and torchvision's, or timm's for a `timm:` pattern."""
    if pattern.startswith(TIMM_PREFIX):
        from .timm_zoo import timm_names

        rest = pattern[len(TIMM_PREFIX) :] or "*"
        names = [TIMM_PREFIX + n for n in timm_names(rest if any(c in rest for c in "*?[") else f"*{rest}*")]
    else:
        from .torchvision_zoo import torchvision_names

        names = matches(sorted(MODELS), pattern) + matches(torchvision_names(), pattern)
    count = len(names) <= MAX_COUNTED
    return [
        {
            "name": n,
            "source": "timm"
            if n.startswith(TIMM_PREFIX)
            else "visionbench"
            if n in MODELS
            else "torchvision",
            "params": meta_params(n, num_classes, in_chans, img_size) if count else None,
            "weights_offline": weights_on_disk(n),
        }
        for n in names
    ]
