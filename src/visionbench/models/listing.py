"""`visionbench models`: names, parameters and forward FLOPs per image at each model's usual
input (built and run on the meta device: no memory, no weights, no arithmetic) and whether
pretrained weights are on this machine."""

from __future__ import annotations

import fnmatch

import torch

from .registry import MODELS, TIMM_PREFIX, count_params, create_model

MAX_COUNTED = 20  # counting builds each model (~0.1-1 s each): only for a short list
IMAGENET_SIZE = 224  # torchvision's and timm's models are listed at their ImageNet input size


def matches(names: list[str], pattern: str) -> list[str]:
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatch(n, pattern)]
    return [n for n in names if pattern in n]


def input_size(name: str, img_size: int) -> int:
    """The side a model is listed at: ours at `img_size` (CIFAR's 32 by default), the ImageNet
    models at 224 with their ImageNet stem."""
    return img_size if name in MODELS else IMAGENET_SIZE


def meta_cost(name: str, num_classes: int, in_chans: int, img_size: int) -> tuple[int | None, int | None]:
    """(parameters, forward FLOPs for one image) of `name` as create_model builds it for
    `in_chans` x `img_size`^2, counted by torch's FlopCounterMode (2 FLOPs per multiply-add,
    convolutions, matmuls and attention; elementwise ops not counted). None where a model
    cannot be built or run on the meta device (torchvision's RegNets compute widths with real
    tensors). The first count costs ~1.5 s: FlopCounterMode imports torch._dynamo."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            # small_stem=False: the ResNets' ImageNet stem, as at 224 px (ignored by other builders)
            model = create_model(name, num_classes, in_chans, img_size, defaults={"small_stem": False})
    except Exception:
        return None, None
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.empty(1, in_chans, img_size, img_size, device="meta"))
        return count_params(model), counter.get_total_flops()
    except Exception:
        return count_params(model), None


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
    counted = len(names) <= MAX_COUNTED  # else ours only: a handful of small builds
    rows = []
    for n in names:
        size = input_size(n, img_size)
        params, flops = meta_cost(n, num_classes, in_chans, size) if counted or n in MODELS else (None, None)
        rows.append(
            {
                "name": n,
                "source": "timm"
                if n.startswith(TIMM_PREFIX)
                else "visionbench"
                if n in MODELS
                else "torchvision",
                "input": f"{in_chans}x{size}x{size}",
                "params": params,
                "flops": flops,
                "weights_offline": weights_on_disk(n),
            }
        )
    return rows
