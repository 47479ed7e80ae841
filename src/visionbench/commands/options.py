"""The options the CLI's commands and the Python API share, as a config tree: what
`--data mnist --epochs 2` (or `vb.train(data="mnist", epochs=2)`) sets, before key=value settings."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import VisionbenchError


def prune(tree: dict) -> dict:
    """Drop unset (None) options, so they do not override config files."""
    pruned = {k: prune(v) if isinstance(v, dict) else v for k, v in tree.items()}
    return {k: v for k, v in pruned.items() if v is not None and v != {}}


def data_options(data: str | None, data_dir: str | Path | None) -> dict:
    """--data and --data-dir as a config tree; data.dir is stored absolute, so `eval` and
    `--resume` work from any folder."""
    return {"data": {"name": data, "dir": str(Path(data_dir).resolve()) if data_dir else None}}


# lr-find's steps from start to end lr: one default for the CLI, the API and a study's step
LR_FIND_ITERS = 200

# `visionbench train`'s options, by the names a Python caller gives them
TRAIN_OPTIONS = (
    "data", "model", "epochs", "lr", "batch_size", "seed", "device", "name", "weights", "input_size", "data_dir",
    "task",
)  # fmt: skip


PATH_EXAMPLES = {"config": "run.yaml", "runs_dir": "runs", "data_dir": "data", "weights": "model.safetensors"}


def check_path(key: str, value) -> None:
    """A Python caller's path (None: not given) is a str or a path, with a clear error otherwise."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise VisionbenchError(
            f"{key} is a path, not {value!r:.60} ({type(value).__name__})",
            fix=f'give {key} as a str or a pathlib.Path, e.g. {key}="{PATH_EXAMPLES[key]}"',
        )


def check_option(key: str, value) -> None:
    """A Python caller's TRAIN_OPTIONS value: paths as `check_path`; a bool is no number here
    (pydantic would take epochs=True as 1 epoch; the config checks the other types)."""
    if key in ("weights", "data_dir"):
        check_path(key, value)
    elif isinstance(value, bool) and key in ("epochs", "lr", "batch_size", "seed", "input_size"):
        raise VisionbenchError(
            f"{key} is a number, not {value!r}", fix=f"give {key} as a number, e.g. {key}=2"
        )


def train_options(options: dict) -> dict:
    """TRAIN_OPTIONS (a dict of them; unset ones None or absent) as a config tree; a weights
    file is stored absolute (run:RUN_ID as it is)."""
    from ..config import deep_merge  # not at import: the CLI starts without pydantic

    get = options.get
    weights = get("weights")
    if weights and not str(weights).startswith("run:"):
        weights = str(Path(weights).resolve())
    return prune(
        {
            **deep_merge(data_options(get("data"), get("data_dir")), {"data": {"task": get("task")}}),
            "model": {"name": get("model"), "weights": weights, "input_size": get("input_size")},
            "train": {"epochs": get("epochs"), "batch_size": get("batch_size"), "device": get("device")},
            "optim": {"lr": get("lr")},
            "seed": get("seed"),
            "name": get("name"),
        }
    )


def settings_tree(settings: dict) -> dict:
    """Python keyword settings as a config tree: dotted keys (`{"optim.lr": 0.05}`) and whole
    sections (`optim={"lr": 0.05}`); the config names an unknown key with the nearest valid one."""
    from ..config import deep_merge  # not at import: the CLI starts without pydantic

    tree: dict = {}
    for key, value in settings.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        tree = deep_merge(tree, value)
    return tree


def config_tree(settings: dict) -> dict:
    """A Python caller's keywords as one config tree: the CLI's options by name (`data`,
    `epochs`, `lr`, ... TRAIN_OPTIONS), any other keyword a config setting."""
    from ..config import RunConfig, config_keys, deep_merge
    from ..errors import did_you_mean

    for key in settings:  # the nearest option or key, as the CLI says for --epoch
        if key not in TRAIN_OPTIONS and key.split(".")[0] not in RunConfig.model_fields:
            raise VisionbenchError(
                f"unknown setting '{key}'.{did_you_mean(key, [*TRAIN_OPTIONS, *config_keys()])}",
                fix=f"give an option ({', '.join(TRAIN_OPTIONS)}) or a config key, dotted "
                "(**{'optim.lr': 0.05}) or as a section (optim={'lr': 0.05}); "
                "`visionbench train --help-config` lists every key",
            )
    given = {k: v for k, v in settings.items() if k in TRAIN_OPTIONS and not isinstance(v, dict)}
    for key, value in given.items():
        check_option(key, value)
    rest = {k: v for k, v in settings.items() if k not in given}
    return deep_merge(train_options(given), settings_tree(rest))


def as_overrides(tree: dict, prefix: str = "") -> list[str]:
    """A config tree as key=value overrides (what the command line gives), e.g. for a study."""
    import json

    from ..config import config_keys

    leaves = set(config_keys())
    items = []
    for key, value in tree.items():
        if isinstance(value, dict) and prefix + key not in leaves:
            items += as_overrides(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={json.dumps(value, default=str)}")  # a Path as its text
    return items
