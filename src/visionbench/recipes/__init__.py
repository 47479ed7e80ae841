"""Named, versioned training presets: YAML files beside this module, one per recipe.

A recipe sets augmentation, optimizer, schedule and regularisation together; config files and
key=value overrides then change any key (defaults <- recipe <- files <- options <- key=value)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import VisionbenchError, unknown_name

HERE = Path(__file__).parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def read_recipe(name: str) -> dict:
    """{name, version, description, config} of a shipped recipe."""
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        raise unknown_name("recipe", name, recipe_names())
    doc = yaml.safe_load(path.read_text())
    missing = {"version", "description", "config"} - set(doc)
    if missing:
        raise VisionbenchError(f"recipe file lacks {sorted(missing)}", where=str(path))
    return {"name": name, **doc}


def recipe_config(name: str) -> dict:
    """The recipe's config tree, tagged with name@version so the run records where it started."""
    r = read_recipe(name)
    return {**r["config"], "recipe": f"{name}@{r['version']}"}


def list_recipes() -> list[dict]:
    return [{k: v for k, v in read_recipe(n).items() if k != "config"} for n in recipe_names()]
