"""Runs survive kill -9, signals during validation and concurrent writers to one runs folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import visionbench.commands.train as train_module
from visionbench.cli import app
from visionbench.commands.train import Interrupted, train
from visionbench.config import resolve_config
from visionbench.errors import VisionbenchError
from visionbench.runs import Run, list_runs

CLI = [sys.executable, "-m", "visionbench"]


def digest(run_dir) -> str | None:
    try:
        return (run_dir / "checkpoint.pt.sha256").read_text()
    except FileNotFoundError:
        return None


def wait_for_new_checkpoint(run_dir, old: str | None, proc: subprocess.Popen) -> bool:
    """True once a checkpoint other than `old` is on disk; False if the process ended first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = digest(run_dir)
        if now is not None and now != old:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("no checkpoint within 120 s")


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_kill_9_at_random_steps_then_resume_gives_identical_weights(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["train.epochs=4", "train.threads=1", "model.dropout=0.2"]
    full = train(resolve_config([], overrides + ["name=full"]), quiet=True)

    run_dir = tmp_path / "runs" / "killed"
    cmd = CLI + ["train", "--quiet", *overrides, "train.checkpoint_steps=4", "name=killed"]
    resume = CLI + ["train", "--quiet", "--resume", "killed"]
    rng = random.Random(7)
    proc, kills = subprocess.Popen(cmd), 0
    for _ in range(3):
        # each time: let it make progress (a new checkpoint), then kill it at a random moment
        if not wait_for_new_checkpoint(run_dir, digest(run_dir), proc):
            break
        time.sleep(rng.uniform(0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            kills += 1
            proc = subprocess.Popen(resume)
    assert proc.wait(timeout=300) == 0
    assert kills >= 2, "the run ended before it could be killed twice"

    killed = Run.open("killed")
    assert killed.finished and [r["epoch"] for r in killed.metrics()] == [1, 2, 3, 4]
    a, b = full.load_weights("last"), killed.load_weights("last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_sigterm_during_validation_saves_and_resume_equals_uninterrupted(monkeypatch, tiny_overrides):
    cfg = resolve_config([], tiny_overrides)
    full = train(cfg.model_copy(update={"name": "full"}), quiet=True)
    real = train_module.evaluate

    def evaluate_then_signal(*args, **kwargs):  # SIGTERM arrives while validating epoch 1
        signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_then_signal)
    with pytest.raises(Interrupted) as exc:
        train(cfg.model_copy(update={"name": "cut"}), quiet=True)
    assert exc.value.exit_code == 143
    monkeypatch.setattr(train_module, "evaluate", real)
    resumed = train(None, resume="cut", quiet=True)
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2]
    a, b = full.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_periodic_checkpoints_do_not_change_the_result(tiny_overrides):
    plain = train(resolve_config([], tiny_overrides), quiet=True)
    cut = train(resolve_config([], tiny_overrides + ["train.checkpoint_steps=3"]), quiet=True)
    a, b = plain.load_weights("last"), cut.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in cut.metrics()] == [1, 2]
    assert cut.metrics()[1]["train_acc"] == plain.metrics()[1]["train_acc"]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_four_concurrent_runs_in_one_folder_are_all_listed_and_whole(tmp_path, tiny_overrides):
    # no names: all four pick the same <time>-<data>-<model> id and must each claim their own
    # (twice the 2 cores; eight took 32 s of the suite's 8 minutes for the same race)
    cmd = CLI + ["train", "--quiet", *tiny_overrides, "train.epochs=1", "train.threads=1"]
    procs = [subprocess.Popen(cmd) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    rows = list_runs(tmp_path / "runs")
    assert len(rows) == len({r["id"] for r in rows}) == 4
    for r in rows:
        run = Run.open(r["id"])
        assert r["status"] == "finished" and r["test_acc"] > 0.3
        assert [m["epoch"] for m in run.metrics()] == [1]
        assert json.loads((run.path / "run.json").read_text())["status"] == "finished"
        assert run.load_weights("last").keys() == run.load_weights("best").keys()
    listed = CliRunner().invoke(app, ["runs", "--json"])
    assert len(json.loads(listed.stdout)) == 4


def test_run_name_with_sql_is_refused_with_a_clear_error(tmp_path, tiny_overrides):
    res = CliRunner().invoke(app, ["train", *tiny_overrides, "name='); DROP TABLE runs;--"])
    assert res.exit_code == 2
    assert "bad run name" in res.output and "DROP TABLE" in res.output
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


# --- the environment: read-only folders, a full disk (a real tmpfs: see conftest.small_disk) ---
def test_a_read_only_runs_folder_is_said_before_the_data_is_read(small_disk, monkeypatch, tiny_overrides):
    small_disk.read_only()
    monkeypatch.setenv("VISIONBENCH_RUNS", str(small_disk.path / "runs"))
    monkeypatch.setattr(train_module, "prepare_data", lambda *a, **k: pytest.fail("data read first"))
    res = CliRunner().invoke(app, ["train", *tiny_overrides])
    assert res.exit_code == 2 and "Traceback" not in res.output
    out = " ".join(res.output.split())
    assert "cannot write in this folder: Read-only file system" in out and "writable" in out


def test_a_read_only_cache_folder_leaves_the_data_in_memory(small_disk, monkeypatch):
    from visionbench.data import load_dataset

    small_disk.read_only()
    monkeypatch.setenv("VISIONBENCH_CACHE", str(small_disk.path / "cache"))
    lines: list[str] = []
    ds = load_dataset("digits", on_build=lines.append)
    assert len(ds.splits["train"]) + len(ds.splits["test"]) == 1797
    assert "cannot write the array cache (Read-only file system)" in lines[-1]


def test_eval_of_a_read_only_run_is_refused_before_computing(small_disk, monkeypatch, tiny_run):
    import shutil

    import visionbench.commands.evaluate as evaluate_module
    from visionbench.commands.evaluate import evaluate

    shutil.copytree(tiny_run, small_disk.path / "tiny", ignore=shutil.ignore_patterns("eval-*", "*.png"))
    small_disk.read_only()
    monkeypatch.setattr(evaluate_module, "evaluate_predictor", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(VisionbenchError, match="Read-only file system"):
        evaluate(str(small_disk.path / "tiny"), device="cpu")


def test_a_full_disk_stops_training_with_a_clear_error_and_resume_finishes(small_disk, tiny_overrides):
    root, filled = small_disk.path / "runs", []
    cfg = resolve_config([], tiny_overrides + ["name=full"])
    with pytest.raises(VisionbenchError) as exc:  # the disk fills up after epoch 1's checkpoint
        train(cfg, root, quiet=True, on_epoch=lambda row: filled.append(small_disk.fill()))
    assert "No space left on device" in str(exc.value) and "--resume" in exc.value.fix
    assert not list((root / "full").glob(".*.tmp"))  # no temp file left behind
    filled[0].unlink()
    run = train(None, root, resume="full", quiet=True)
    assert run.finished and [r["epoch"] for r in run.metrics()] == [1, 2]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_signal_during_the_test_pass_marks_the_run_interrupted_and_resume_equals_uninterrupted(
    monkeypatch, tiny_overrides
):
    cfg = resolve_config([], tiny_overrides)
    full = train(cfg.model_copy(update={"name": "full"}), quiet=True)
    real = train_module.predict

    def signal_then_predict(*args, **kwargs):  # SIGINT (Ctrl-C) arrives while testing
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "predict", signal_then_predict)
    res = CliRunner().invoke(app, ["train", "--quiet", *tiny_overrides, "name=cut"])
    assert res.exit_code == 130, res.output
    assert "continue with: visionbench train --resume cut" in res.output
    assert Run.open("cut").read_json("run.json")["status"] == "interrupted"
    monkeypatch.setattr(train_module, "predict", real)
    resumed = train(None, resume="cut", quiet=True)
    a, b = full.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.read_json("summary.json")["test_acc"] == full.read_json("summary.json")["test_acc"]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_output_closed_by_head_marks_the_run_interrupted_and_resume_finishes(tmp_path, tiny_overrides):
    cmd = CLI + ["train", *tiny_overrides, "train.threads=1", "train.epochs=3", "name=piped"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()  # the run's header line, then the reader goes, as `| head -1` does
    proc.stdout.close()
    assert proc.wait(timeout=300) == 128 + signal.SIGPIPE
    assert "its output was closed" in proc.stderr.read().decode()
    run = Run.open("piped")
    assert run.read_json("run.json")["status"] == "interrupted"
    assert train(None, resume="piped", quiet=True).finished
