"""Recipes: every shipped preset resolves to a valid config, overridable key by key."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.config import resolve_config
from visionbench.errors import VisionbenchError
from visionbench.recipes import list_recipes, read_recipe, recipe_names


def test_every_recipe_is_versioned_described_and_valid():
    assert {"baseline", "augmented", "rsb-a1", "rsb-a2", "rsb-a3", "fast", "finetune"} <= set(recipe_names())
    for name in recipe_names():
        r = read_recipe(name)
        assert isinstance(r["version"], int) and r["description"]
        cfg = resolve_config(recipe=name)
        assert cfg.recipe == f"{name}@{r['version']}"


def test_rsb_recipes_carry_the_papers_settings():
    a1, a3 = resolve_config(recipe="rsb-a1"), resolve_config(recipe="rsb-a3")
    assert (a1.optim.name, a1.train.loss, a1.aug.mixup, a1.aug.cutmix, a1.train.epochs) == (
        "lamb",
        "bce",
        0.2,
        1.0,
        600,
    )
    assert (a3.aug.mixup, a3.train.epochs, a3.optim.lr, a3.aug.magnitude) == (0.1, 100, 8e-3, 6)
    assert a1.aug.repeats == 3 and a3.aug.repeats == 1


def test_files_and_key_values_override_the_recipe(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"train": {"epochs": 7}, "optim": {"lr": 0.5}}))
    cfg = resolve_config([f], ["optim.lr=0.25"], recipe="rsb-a3")
    assert (cfg.train.epochs, cfg.optim.lr, cfg.optim.name) == (7, 0.25, "lamb")


def test_unknown_recipe_names_the_nearest():
    with pytest.raises(VisionbenchError, match="rsb-a3"):
        resolve_config(recipe="rsb-3a")


def test_recipes_command_lists_each_with_its_description():
    res = CliRunner().invoke(app, ["recipes"])
    assert res.exit_code == 0
    for r in list_recipes():
        assert r["name"] in res.output and r["description"][:30] in res.output
    rows = json.loads(CliRunner().invoke(app, ["recipes", "--json"]).output)
    assert {r["name"] for r in rows} == set(recipe_names())


def test_recipe_named_in_a_config_file_or_override_is_applied_not_only_recorded(tmp_path):
    """`recipe: fast` in a YAML file (or recipe=fast) trains with the recipe's settings, as
    --recipe fast does; the run records name@version."""
    path = tmp_path / "cfg.yaml"
    path.write_text("recipe: fast\ndata: {name: digits}\ntrain: {epochs: 3}\n")
    from_file, from_flag = (
        resolve_config([path]),
        resolve_config([], ["data.name=digits", "train.epochs=3"], recipe="fast"),
    )
    assert from_file == from_flag
    assert (
        from_file.train.label_smoothing == 0.2
        and from_file.train.lookahead == 5
        and from_file.train.epochs == 3
    )
    assert from_file.recipe == f"fast@{read_recipe('fast')['version']}"
    assert resolve_config([], ["recipe=fast"]).train.lookahead == 5
    # a saved config fed back (recipe: fast@1, every value written out) changes nothing
    saved = tmp_path / "saved.yaml"
    from visionbench.config import dump_config

    saved.write_text(
        dump_config(from_file.model_copy(update={"train": from_file.train.model_copy(update={"ema": 0.5})}))
    )
    assert resolve_config([saved]).train.ema == 0.5
