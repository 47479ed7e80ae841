"""Run folders: a name is never stuck by a run that never started, and one damaged file never
hides a run (or every run) from `visionbench runs`."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

import visionbench.commands.train as train_module
from visionbench.cli import app
from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.errors import VisionbenchError
from visionbench.runs import Run, list_runs

runner = CliRunner()


@pytest.mark.parametrize("step", ["prepare_data", "training_state"])
def test_a_run_stopped_in_its_first_seconds_leaves_no_folder(tmp_path, monkeypatch, tiny_overrides, step):
    def interrupted(*args, **kwargs):  # Ctrl-C while the cache builds, or the optimizer is made
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config([], tiny_overrides + ["name=X"]), quiet=True)
    assert not (tmp_path / "runs" / "X").exists()


def test_an_error_before_training_leaves_no_folder(tmp_path, tiny_overrides):
    cfg = resolve_config([], tiny_overrides + ["name=X", "finetune.freeze=until:nowhere"])
    with pytest.raises(VisionbenchError, match="no layer 'nowhere'"):
        train(cfg, quiet=True)
    assert not (tmp_path / "runs" / "X").exists()


def test_an_empty_folder_left_by_a_run_does_not_block_its_name(tmp_path, tiny_overrides):
    (tmp_path / "runs" / "X").mkdir(parents=True)  # what a run stopped in its first seconds left
    res = runner.invoke(app, ["train", "--resume", "X"])
    assert res.exit_code == 2 and "never started" in res.output and "--name X" in res.output
    assert list_runs(tmp_path / "runs") == []  # an empty folder is not a run
    run = train(resolve_config([], tiny_overrides + ["name=X", "train.epochs=1"]), quiet=True)
    assert run.finished and run.path == tmp_path / "runs" / "X"


def test_a_folder_that_holds_no_run_is_never_taken_over(tmp_path):
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "ensemble.json").write_text("{}")
    with pytest.raises(VisionbenchError, match="holds no run"):
        Run.create(tmp_path, "X", files={"config.yaml": "seed: 0\n"})
    assert (tmp_path / "X" / "ensemble.json").read_text() == "{}"
    assert Run.create(tmp_path, "Y", files={"config.yaml": "seed: 0\n"}).config().seed == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X", "Y"]  # no temp folder left


def test_a_damaged_json_file_lists_its_run_as_damaged_and_the_others_still(tmp_path, tiny_run):
    root = tmp_path / "runs"
    for name in ("good", "bad", "half"):
        (root / name).mkdir(parents=True)
        for f in ("config.yaml", "run.json", "summary.json", "metrics.jsonl"):
            (root / name / f).write_bytes((tiny_run / f).read_bytes())
    (root / "bad" / "summary.json").write_text("garbage{")
    (root / "half" / "run.json").write_text("[1, 2]")  # JSON, but not the object it should be
    (root / "half" / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": "x"}\n5\n')
    res = runner.invoke(app, ["runs", "--runs-dir", str(root)])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(runner.invoke(app, ["runs", "--json"]).stdout)}
    assert rows["good"]["status"] == "finished"
    assert rows["bad"]["status"] == "damaged: summary.json"
    assert rows["half"]["status"] == "damaged: run.json" and rows["half"]["val_acc"] is None
    assert Run(root / "bad").finished  # never overwritten
    with pytest.raises(VisionbenchError, match="summary.json is damaged"):
        Run(root / "bad").read_json("summary.json")


def copy_run(tiny_run, root) -> Run:
    import shutil

    shutil.copytree(tiny_run, root / "copy", ignore=shutil.ignore_patterns("eval-*", "*.png"))
    return Run(root / "copy")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_run_weights_are_named_and_the_other_ones_offered(tmp_path, tiny_run, damage):
    from visionbench.runs.reopen import open_run

    run = copy_run(tiny_run, tmp_path)
    data = bytearray((run.path / "last.safetensors").read_bytes())
    if damage == "truncate":  # a full disk or a stopped copy
        data = data[: len(data) // 2]
    else:  # one flipped bit in a weight: safetensors itself cannot tell
        data[-5] ^= 1
    (run.path / "last.safetensors").write_bytes(bytes(data))
    with pytest.raises(VisionbenchError, match="last.safetensors is damaged") as exc:
        open_run(run.path, device="cpu")
    assert "--weights best" in exc.value.fix
    assert open_run(run.path, weights="best", device="cpu").weights == "best"


def test_weights_that_do_not_fit_the_recorded_model_are_a_clear_error(tmp_path, tiny_run):
    from visionbench.runs.reopen import open_run

    run = copy_run(tiny_run, tmp_path)
    config = (run.path / "config.yaml").read_text().replace("width: 8", "width: 16")
    (run.path / "config.yaml").write_text(config)
    (run.path / "config.yaml.sha256").unlink()  # a run made before config digests: no other check
    with pytest.raises(VisionbenchError, match="do not fit the model"):
        open_run(run.path, device="cpu")


@pytest.mark.parametrize("command, done", [("explain", "explained"), ("export", "exported")])
def test_a_saved_ensemble_given_for_one_run_is_named_with_its_members(tmp_path, command, done):
    trio = tmp_path / "runs" / "trio"
    trio.mkdir(parents=True)
    members = [{"id": i, "path": str(tmp_path / "runs" / i)} for i in ("p1", "p2")]
    (trio / "ensemble.json").write_text(json.dumps({"kind": "ensemble", "members": members}))
    res = runner.invoke(app, [command, "trio", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert f"'trio' is a saved ensemble, not a run: an ensemble cannot be {done}" in res.output
    assert "pass one of its member runs instead: p1, p2" in res.output


def test_a_cut_short_config_yaml_is_named_by_every_command_not_filled_with_defaults(tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "cut")
    (runs / "cut" / "config.yaml").write_text("name: null\nrecipe: n\n")
    said = "run 'cut': config.yaml is damaged"
    assert [r["status"] for r in list_runs(runs)] == ["damaged: config.yaml changed"]
    for args in (["eval", "cut"], ["compare", "cut"]):
        res = runner.invoke(app, [*args, "--runs-dir", str(runs)])
        assert res.exit_code == 2 and said in res.output, res.output
    res = runner.invoke(app, ["compare", "--runs-dir", str(runs)])  # every run: left out, said
    assert res.exit_code == 2 and f"warning: run cut left out: {said}" in res.output
    (runs / "cut" / "summary.json").unlink()  # unfinished: a resume reads the config too
    res = runner.invoke(app, ["train", "--resume", "cut", "--runs-dir", str(runs)])
    assert res.exit_code == 2 and said in res.output, res.output


def test_runs_tells_a_running_run_whose_process_is_gone(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is free now: the process that wrote "running" died without a word
    here = platform.node()
    for name, pid, host in [("dead", gone.pid, here), ("alive", os.getpid(), here), ("far", 1, "other")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
        (tmp_path / name / "run.json").write_text(json.dumps({"status": "running", "pid": pid, "host": host}))
    status = {r["id"]: r["status"] for r in list_runs(tmp_path)}
    assert status == {"dead": "stopped (process gone)", "alive": "running", "far": "running? (on other)"}


@pytest.mark.parametrize("command", ["train", "sweep", "study", "runs"])
def test_a_runs_dir_that_is_a_file_is_one_clear_error(tmp_path, command):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nruns: {a: {set: {model.name: small_cnn, train.epochs: 1}}}\n")
    args = {
        "train": ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "1"],
        "sweep": ["sweep", "--grid", "seed=0,1", "--data", "digits", "--model", "small_cnn", "--epochs", "1"],
        "study": ["study", str(study), "--scale", "smoke"],
        "runs": ["runs"],
    }[command]
    for runs_dir, said in [(file, f"--runs-dir {file} is a file"), (file / "sub", f"lies inside {file}")]:
        res = runner.invoke(app, [*args, "--runs-dir", str(runs_dir)])
        assert res.exit_code == 2 and said in res.output and "pass a folder" in res.output, res.output
    assert file.read_text() == "mine"


def test_a_hidden_run_name_is_refused_before_anything_is_written(tmp_path):
    res = runner.invoke(app, ["train", "--data", "digits", "--model", "small_cnn", "--name", ".hidden"])
    assert (
        res.exit_code == 2
        and "bad run name '.hidden'" in res.output
        and "not starting with '.'" in res.output
    )
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_is_not_a_run_is_not_listed(tmp_path, tiny_run):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "real")
    (runs / "study-smoke").mkdir()  # a study's folder while its first run trains (then interrupted)
    (runs / "later-smoke").mkdir()
    (runs / "later-smoke" / "lr_find-a.png").write_bytes(b"png")  # one whose steps had begun
    assert [r["id"] for r in list_runs(runs)] == ["real"]
