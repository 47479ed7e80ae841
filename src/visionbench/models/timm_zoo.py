"""timm models under a `timm:` prefix (the optional `timm` extra); pretrained weights come from
the Hugging Face cache (or torch hub's, for the few timm keeps at a URL), downloaded there once
unless offline, and load through timm's own path with its checkpoint filters."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ..data.download import Unavailable
from ..errors import VisionbenchError, did_you_mean
from .hub import damaged, hf_cached, hf_file, hub_file, hub_path

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order: safetensors first


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


def pretrained_cfg(name: str):
    """timm's pretrained config for `name` (where its weights live, its stem and classifier)."""
    return import_timm().models.get_pretrained_cfg(name)


def hf_files(cfg) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES


def cached_weights(name: str) -> Path | None:
    """The weight file of timm model `name` already on this machine, or None (no network)."""
    cfg = pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        return hf_cached(cfg.hf_hub_id, hf_files(cfg))
    if cfg is not None and cfg.url:
        path = hub_path(cfg.url)
        return path if path.is_file() else None
    return None


def weights_file(name: str) -> Path:
    """The weight file of timm model `name`, downloaded first if needed: from the Hugging Face
    hub where timm has it there (as timm prefers), else from its URL into torch hub's cache
    (without the hash check: timm's URL names do not all carry a sha256 prefix)."""
    cfg = pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        return hf_file(f"timm:{name}", cfg.hf_hub_id, hf_files(cfg))
    if cfg is not None and cfg.url:
        return hub_file(f"timm:{name}", cfg.url, check_hash=False)
    raise Unavailable(
        f"timm has no pretrained weights for {name}",
        fix="use model.pretrained=false, or a tagged name with weights (`visionbench models timm:PATTERN`)",
    )


def as_list(names: str | list[str] | tuple[str, ...] | None) -> list[str]:
    return [names] if isinstance(names, str) else list(names or [])


def timm_report(model: nn.Module, in_chans: int, num_classes: int) -> dict:
    """What timm's load did, in load_state's report form: timm loads every tensor of the
    checkpoint strictly, except the classifier, which it drops for another class count, and the
    stem, which it adapts to other input channels (anything else that does not fit is an error)."""
    cfg = model.pretrained_cfg
    own = list(model.state_dict())
    heads = as_list(cfg.get("classifier")) if num_classes != cfg["num_classes"] else []
    stems = as_list(cfg.get("first_conv")) if in_chans != 3 else []
    reset = [k for k in own if any(k.startswith(h + ".") for h in heads)]
    adapted = [k for k in own if any(k == s + ".weight" for s in stems)]
    report: dict[str, list] = {k: [] for k in ("loaded", "adapted", "skipped", "missing", "unused", "reset")}
    report.update(adapted=adapted, reset=reset, loaded=[k for k in own if k not in reset + adapted])
    return report


def size_kwargs(name: str, img_size: int | None) -> dict:
    """{img_size: N} for the models built for one input size (timm's `fixed_input_size`: ViT,
    DeiT, Swin ...), so that 32 px CIFAR images do not meet a 224 px patch grid; timm resamples
    the pretrained position embeddings to it when it loads them. Convolutional networks take
    any size and no such argument."""
    cfg = pretrained_cfg(name)
    if img_size is None or cfg is None or not cfg.fixed_input_size or cfg.input_size[-1] == img_size:
        return {}
    return {"img_size": img_size}


def fits_input(model: nn.Module) -> nn.Module:
    """The model, unless its patch grid is empty at this size (a 16-px patch on 8-px digits)."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None and min(grid) < 1:
        raise ValueError(f"its {model.patch_embed.patch_size[0]} px patches leave no token")
    return model


def build(name: str, kwargs: dict, img_size: int | None, meta: bool = False) -> nn.Module:
    """timm's `name` built without weights, its input size checked; on the meta device (no
    memory, no init) where the build is a check only."""
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return fits_input(import_timm().create_model(name, **kwargs))
    except (AssertionError, ValueError, RuntimeError) as e:  # e.g. a window larger than the input
        raise VisionbenchError(
            f"timm:{name} cannot be built for {img_size} px inputs: "
            f"{str(e).splitlines()[0] if str(e) else e!r}",
            fix=f"set model.input_size={native_size(name)} (each batch is resized to it on the device)",
        ) from None


def native_size(name: str) -> int:
    cfg = pretrained_cfg(name)
    return cfg.input_size[-1] if cfg is not None else 224


def timm_builder(name: str) -> Callable[..., nn.Module]:
    timm = import_timm()
    if not timm.is_model(name):
        raise VisionbenchError(
            f"unknown timm model '{name}'.{did_you_mean(name, timm.list_models())}",
            fix="`visionbench models timm:PATTERN` lists them (e.g. timm:resnet*)",
        )

    def builder(
        num_classes: int,
        in_chans: int = 3,
        img_size: int | None = None,
        pretrained: bool = False,
        drop_rate: float = 0.0,
    ):
        kwargs = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": drop_rate}
        kwargs.update(size_kwargs(name, img_size))
        if not pretrained:
            return build(name, kwargs, img_size)
        if "img_size" in kwargs:  # a patch grid this size can hold, checked before any download
            build(name, kwargs, img_size, meta=True)
        path = weights_file(name)
        try:  # timm's own load: its filters (position embeddings, stem channels, head) apply
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except Exception as e:  # a file torch or safetensors cannot read, or of another model
            raise damaged(f"timm:{name}", path, str(e).splitlines()[0] if str(e) else repr(e)) from e
        model.weights_report = timm_report(model, in_chans, num_classes)
        return model

    builder.__name__ = f"timm:{name}"
    builder.__doc__ = f"timm {name}"
    return builder
