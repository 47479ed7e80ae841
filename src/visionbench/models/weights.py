"""Weights into a model, safely and tolerantly: safetensors or torch.load(weights_only=True);
tensors of another shape are skipped, RGB stems summed for grey input, and every tensor is
accounted for (loaded, adapted, skipped, missing, unused, reset); weights that barely fit
(another architecture) are an error listing the mismatched tensors."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import VisionbenchError


def read_state_file(path: str | Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt/.bin (never unpickling code); a dict
    holding the weights under 'model' or 'state_dict' (a checkpoint) is unwrapped. `data`:
    the file's bytes, when already read."""
    path = Path(path)
    if data is None and not path.is_file():
        raise VisionbenchError("weights file not found", where=str(path), fix="check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        try:  # in name order, as load_file gives them (load's own order varies from call to call)
            return dict(sorted(load(path.read_bytes() if data is None else data).items()))
        except Exception as e:  # noqa: BLE001 - SafetensorError, or a header that is not JSON
            raise VisionbenchError(
                f"the weights file is damaged or not safetensors ({str(e).splitlines()[0]})",
                where=str(path),
                fix="was it cut short (a full disk, a copy stopped)? copy or save it again",
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that wants to run code, or not a torch file at all
        raise VisionbenchError(
            f"cannot read weights safely: {str(e).splitlines()[0]}",
            where=str(path),
            fix="give a .safetensors file or a .pth holding a plain state dict",
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VisionbenchError("the file holds no state dict of tensors", where=str(path))
    return state


def adapt_channels(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """An RGB conv stem for `dst`'s input channels: filters summed over colour (grey from RGB),
    spread evenly over the channels asked for; None when the shapes differ otherwise."""
    if src.ndim != 4 or src.shape[1] != 3 or src.shape[:1] + src.shape[2:] != dst.shape[:1] + dst.shape[2:]:
        return None
    c = dst.shape[1]
    return src.sum(1, keepdim=True).repeat(1, c, 1, 1) / c


# Below this share of the tensors outside the head set from the file, a run would train mostly
# from scratch while its user believes it fine-tunes (RELIABILITY #16): simple_cnn's weights
# gave small_cnn 0 of 20 tensors, silently. Counted in tensors, not parameters: a first linear
# layer whose shape follows the input size (simple_cnn's) would otherwise outweigh every conv.
MIN_SHARE = 0.5


def under(key: str, module: str | None) -> bool:
    return bool(module) and (key == module or key.startswith(module + "."))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], reset: str | None = None) -> dict:
    """Load what fits of `state` into `model`; tensors under the module `reset` (the head) are
    left as initialised. Returns the report: names per outcome."""
    own = model.state_dict()
    report: dict[str, list] = {k: [] for k in ("loaded", "adapted", "skipped", "missing", "unused", "reset")}
    take = {}
    for key, value in state.items():
        if key not in own:
            report["unused"].append(key)
        elif under(key, reset):
            report["reset"].append(key)
        elif value.shape == own[key].shape:
            take[key] = value
            report["loaded"].append(key)
        elif (adapted := adapt_channels(value, own[key])) is not None:
            take[key] = adapted
            report["adapted"].append(key)
        else:
            report["skipped"].append(f"{key} {tuple(value.shape)} -> {tuple(own[key].shape)}")
    report["missing"] = [k for k in own if k not in take and k not in report["reset"]]
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in take.items()}, strict=False)
    return report


def check_fit(
    model: nn.Module, head: str, name: str, report: dict, state: dict, where: str, fix: str
) -> None:
    """An error when load_state's `report` set less than MIN_SHARE of `model`'s tensors outside
    its `head` (a new head of another shape is fine-tuning, not a mismatch), naming a few
    mismatched tensors of each kind: name, shape in the file, shape in the model."""
    own = model.state_dict()
    body = [k for k, v in own.items() if v.is_floating_point() and not under(k, head)]
    fitted = [k for k in report["loaded"] + report["adapted"] if k in body]
    if not body or len(fitted) / len(body) >= MIN_SHARE:
        return
    size = lambda t: "x".join(map(str, t.shape)) or "scalar"
    kinds = [
        [
            f"{k} {size(state[k])} in the file, {size(own[k])} in the model"
            for k in body
            if k in state and k not in fitted
        ],
        [f"{k} {size(own[k])} in the model, not in the file" for k in body if k not in state],
        [f"{k} {size(state[k])} in the file, not in the model" for k in report["unused"]],
    ]
    shown = [line for kind in kinds for line in kind[:2]]
    more = sum(map(len, kinds)) - len(shown)
    raise VisionbenchError(
        f"the weights set {len(fitted)} of the {len(body)} tensors of {name} outside its head: they come "
        "from another architecture. Mismatched: " + "; ".join(shown) + (f"; and {more} more" if more else ""),
        where=where,
        fix=fix,
    )


def describe(report: dict) -> str:
    """One line: how many tensors of each outcome, naming the few skipped ones."""
    counts = ", ".join(f"{len(v)} {k}" for k, v in report.items() if v)
    skipped = report["skipped"][:3]
    return counts + (
        f" (shape mismatch: {'; '.join(skipped)}{' ...' if len(report['skipped']) > 3 else ''})"
        if skipped
        else ""
    )
