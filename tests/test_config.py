"""Config values are checked where they are declared: ranges, not only types."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.config import resolve_config
from visionbench.errors import VisionbenchError


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=1", "data.val_fraction"),
        ("data.img_size=-5", "data.img_size"),
        ("data.per_class=0", "data.per_class"),
        ("aug.mix_prob=2", "aug.mix_prob"),
        ("aug.repeats=0", "aug.repeats"),
        ("model.dropout=1", "model.dropout"),
        ("optim.betas=[0.9, 1.5]", "optim.betas.1"),
        ("sched.pct_start=0", "sched.pct_start"),
        ("train.label_smoothing=-0.1", "train.label_smoothing"),
        ("train.checkpoint_steps=0", "train.checkpoint_steps"),
        ("seed=-1", "seed"),
    ],
)
def test_a_value_out_of_range_is_an_error_naming_the_key(override, key):
    with pytest.raises(VisionbenchError) as exc:
        resolve_config([], [override])
    assert f"bad value for '{key}'" in str(exc.value)


def test_unset_values_chosen_from_the_data_may_stay_none():
    cfg = resolve_config([], ["train.batch_size=null", "optim.lr=null", "model.small_stem=null"])
    assert cfg.train.batch_size is None and cfg.optim.lr is None and cfg.model.small_stem is None


def test_a_bad_value_on_the_command_line_leaves_no_run_folder(tmp_path):
    res = CliRunner().invoke(app, ["train", "--data", "digits", "--batch-size", "0", "--name", "X"])
    assert res.exit_code == 2 and "bad value for 'train.batch_size'" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs" / "X").exists()


def test_paths_are_stored_absolute_so_a_run_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config([], ["data.name=folder:pics", "data.dir=data", "model.weights=w.safetensors"])
    assert cfg.data.name == f"folder:{tmp_path / 'pics'}" and cfg.data.dir == str(tmp_path / "data")
    assert cfg.model.weights == str(tmp_path / "w.safetensors")
    assert resolve_config([], ["model.weights=run:abc"]).model.weights == "run:abc"
    assert resolve_config([], ["data.name=cifar10"]).data.name == "cifar10"


def test_an_unknown_key_inside_a_finetune_stage_names_the_nearest():
    """Not pydantic's 'Extra inputs are not permitted': the stage, the key, the nearest name."""
    with pytest.raises(VisionbenchError) as exc:
        resolve_config([], ["finetune.stages=[{epochs: 1}, {epochs: 1, freez: head-only}]"])
    assert exc.value.what == (
        "unknown config key 'finetune.stages[1].freez'. Did you mean 'finetune.stages[1].freeze'?"
    )
    assert exc.value.fix == "the keys of finetune.stages[1]: epochs, freeze, backbone_lr_mult"


@pytest.mark.parametrize(
    "override", ["train.epochs=true", "optim.lr=false", "seed=true", "data.val_fraction=true"]
)
def test_a_bool_is_not_taken_for_a_number(override):
    """YAML's true would otherwise be read as 1: one epoch, an lr of 0 - silently."""
    with pytest.raises(VisionbenchError, match="a number is needed"):
        resolve_config([], [override])


def test_a_config_file_with_a_key_twice_or_not_utf8_is_a_clear_error(tmp_path):
    """PyYAML keeps the last of two equal keys silently; a latin-1 file was a UnicodeDecodeError."""
    from typer.testing import CliRunner

    from visionbench.cli import app

    file = tmp_path / "c.yaml"
    file.write_text("optim:\n  lr: 0.1\n  lr: 0.5\n")
    res = CliRunner().invoke(app, ["train", "--config", str(file)])
    assert res.exit_code == 2 and "'lr' twice" in res.output and "Traceback" not in res.output
    file.write_bytes(b"name: caf\xe9\n")
    res = CliRunner().invoke(app, ["train", "--config", str(file)])
    assert res.exit_code == 2 and "UTF-8" in res.output and "Traceback" not in res.output
