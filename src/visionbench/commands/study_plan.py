"""A study run's plan at its scale against its `full` plan and against what the write-up states:
a shortened run keeps its schedule's shape (warmup and freeze stages scale with the epochs),
and every departure is computed here, never written by hand."""

from __future__ import annotations

import json
import math

from ..config import FreezeStage, RunConfig, resolve_config

# The official datasets' sizes (train, test, classes, channels, side): what "all of the data"
# means in a difference, and the shape a parameter count is taken on, without reading the data.
OFFICIAL = {
    "digits": (1_437, 360, 10, 1, 8),
    "mnist": (60_000, 10_000, 10, 1, 28),
    "fashion-mnist": (60_000, 10_000, 10, 1, 28),
    "cifar10": (50_000, 10_000, 10, 3, 32),
    "cifar100": (50_000, 10_000, 100, 3, 32),
    "svhn": (73_257, 26_032, 10, 3, 32),
    "tiny-imagenet": (100_000, 10_000, 200, 3, 64),
}
DATA_KEYS = ("data.name", "data.per_class", "data.test_per_class", "data.classes")
IGNORED = ("name", "data.dir")  # the run id and the data root say nothing about the experiment


def settings(tree: dict | None) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in (tree or {}).items()]


def run_overrides(spec: dict, scale: str, key: str, run: dict, values: dict) -> tuple[list[str], set[str]]:
    """One run's key=value settings at `scale`, lowest first: the study's `set` < the scale's
    `set` (defaults for every run) < the run's own `set` < the scale's entry for this run < the
    grid cell's values. A scale changes what a run states only through its `runs:` entry.
    Also returns the keys the scale sets (those are taken as they are, not reshaped)."""
    scale_spec = (spec.get("scales") or {}).get(scale) or {}
    own = {k: v for k, v in ((scale_spec.get("runs") or {}).get(key) or {}).items() if k != "grid"}
    overrides = (
        settings(spec.get("set"))
        + settings(scale_spec.get("set"))
        + settings(run.get("set"))
        + settings(own)
        + settings(values)
    )
    return overrides, set(own) | set(scale_spec.get("set") or {})


def resolve(overrides: list[str]) -> RunConfig:
    return resolve_config([], overrides)


def keep_shape(cfg: RunConfig, full: RunConfig, explicit: set[str]) -> RunConfig:
    """A run the scale shortened keeps its full plan's shape: warmup and each freeze stage last
    the same share of the epochs (write-up 003's rsb-a3 at 5 epochs was 5 epochs of warmup, the
    cosine never ran; 004's 30 head-only epochs outlasted a 4-epoch run). A scale that sets
    `sched.warmup_epochs` or `finetune.stages` itself is taken at its word."""
    ratio = cfg.train.epochs / full.train.epochs
    if ratio == 1:
        return cfg
    sched, finetune = cfg.sched, cfg.finetune
    if "sched.warmup_epochs" not in explicit and full.sched.warmup_epochs:
        sched = sched.model_copy(update={"warmup_epochs": round(full.sched.warmup_epochs * ratio, 3)})
    if "finetune.stages" not in explicit and full.finetune.stages:
        finetune = finetune.model_copy(update={"stages": scaled_stages(full.finetune.stages, ratio, cfg)})
    return cfg.model_copy(update={"sched": sched, "finetune": finetune})


def scaled_stages(stages: list[FreezeStage], ratio: float, cfg: RunConfig) -> list[FreezeStage]:
    """Each bounded stage `ratio` as long, at least one epoch, and the last (open) stage still
    given at least one epoch of the run."""
    out, left = [], cfg.train.epochs
    for stage in stages:
        epochs = stage.epochs
        if epochs is not None:
            epochs = max(1, min(round(epochs * ratio), left - 1)) if left > 1 else 1
            left -= epochs
        out.append(stage.model_copy(update={"epochs": epochs}))
    return out


# --- differences ---------------------------------------------------------------------------------


def flat(cfg: RunConfig) -> dict:
    from ..analysis.compare import flatten

    return {k: v for k, v in flatten(cfg.model_dump(mode="json")).items() if k not in IGNORED}


def describe_data(cfg: RunConfig) -> str:
    """e.g. 'cifar10, 50,000 train (10% held out for validation) / 10,000 test images'."""
    name, d = cfg.data.name, cfg.data
    train, test, classes, _, _ = OFFICIAL.get(name, (None, None, None, None, None))
    if classes and d.classes:
        classes = len(d.classes)
    n_train = d.per_class * classes if d.per_class and classes else train
    n_test = d.test_per_class * classes if d.test_per_class and classes else test
    if n_train is None:
        return name
    held = f" ({d.val_fraction:.0%} held out for validation)" if d.val_fraction else ""
    return f"{name}, {n_train:,} train{held} / {n_test:,} test images"


def describe(key: str, value, cfg: RunConfig) -> str:
    if key == "model.input_size":
        side = OFFICIAL.get(cfg.data.name, (0,) * 5)[4]
        if value is None:
            return f"{side} px (the data's own)" if side else "the data's own size"
        return f"{value} px" + (f" (from {side} px)" if side and side != value else "")
    if key == "finetune.stages":
        return freeze_plan(value)
    if key == "params" and isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def freeze_plan(stages: list) -> str:
    """[{epochs: 30, freeze: head-only}, {freeze: none}] -> '30 head-only, then none'."""
    if not stages:
        return "no stages"
    parts = []
    for s in stages:
        mult = s.get("backbone_lr_mult", 1.0)
        what = s.get("freeze", "none") + (f" (backbone lr x{mult:g})" if mult != 1.0 else "")
        n = s.get("epochs")
        parts.append(f"{n} epoch{'s' if n != 1 else ''} {what}" if n else f"then {what}")
    return ", ".join(parts)


def scale_differences(cfg: RunConfig, full: RunConfig) -> list[str]:
    """What this scale's plan changes from the full plan, one line each: 'train.epochs 20 → 5'."""
    ours, theirs = flat(cfg), flat(full)
    out = []
    if any(ours.get(k) != theirs.get(k) for k in DATA_KEYS):
        out.append(f"data {describe_data(full)} → {describe_data(cfg)}")
    for key in sorted(set(ours) | set(theirs)):
        if key in DATA_KEYS or ours.get(key) == theirs.get(key):
            continue
        out.append(f"{key} {describe(key, theirs.get(key), full)} → {describe(key, ours.get(key), cfg)}")
    return out


def stated_value(full: RunConfig, key: str):
    if key == "params":
        return param_count(full)
    return flat(full).get(key)


def same(stated, ours) -> bool:
    if isinstance(stated, (int, float)) and isinstance(ours, (int, float)) and not isinstance(stated, bool):
        return math.isclose(stated, ours, rel_tol=1e-9)
    if isinstance(stated, list) and isinstance(ours, list):
        return len(stated) == len(ours) and all(
            all(o.get(k) == v for k, v in s.items()) for s, o in zip(stated, ours)
        )
    return stated == ours


def writeup_differences(full: RunConfig, states: dict | None) -> list[str]:
    """What the full plan does differently from the write-up's stated settings (`states`, a
    mapping of config keys, or `params`, to the write-up's values): one line each."""
    out = []
    for key, stated in (states or {}).items():
        ours = stated_value(full, key)
        if not same(stated, ours):
            out.append(
                f"{key}: the write-up states {describe(key, stated, full)}, the full plan has "
                f"{describe(key, ours, full) if ours is not None else 'none'}"
            )
    return out


def param_count(cfg: RunConfig) -> int | None:
    """The model's parameter count for the run's data (built on the meta device: no memory,
    no weights); None for data whose shape is not known without reading it."""
    import torch

    from ..models import create_model
    from ..models.registry import count_params

    if cfg.data.name not in OFFICIAL:
        return None
    _, _, classes, chans, side = OFFICIAL[cfg.data.name]
    classes = len(cfg.data.classes) if cfg.data.classes else classes
    with torch.device("meta"):
        model = create_model(
            cfg.model.name,
            num_classes=classes,
            in_chans=chans,
            img_size=cfg.model.input_size or side,
            defaults={"small_stem": cfg.model.small_stem, "dropout": cfg.model.dropout},
            **cfg.model.kwargs,
        )
    return count_params(model)
