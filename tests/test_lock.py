"""One owner per run: a run another process trains is refused (train --resume, train --name,
sweeps, studies) with that process's pid and host; after a kill -9 the kernel lets go and the
run resumes."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import visionbench
from visionbench.cli import app
from visionbench.commands.sweep import Sweep, expand, run_cell
from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.runs import Run, list_runs
from visionbench.runs.lock import RunLock, RunLocked, is_locked

runner = CliRunner()
SRC = str(Path(visionbench.__file__).resolve().parents[1])
HOLD = (
    "import sys, time; from pathlib import Path; from visionbench.runs.lock import RunLock; "
    "lock = RunLock.take(Path(sys.argv[1]), 'x'); print('held', flush=True); time.sleep(600)"
)


def unfinished_copy(tiny_run: Path, root: Path, name: str = "live") -> Path:
    """tiny_run as an unfinished run (stopped after its last epoch's checkpoint)."""
    path = root / name
    shutil.copytree(tiny_run, path, ignore=shutil.ignore_patterns("eval-*", "*.png", ".lock"))
    (path / "summary.json").unlink()
    return path


@pytest.fixture
def holder():
    """Another process that takes a run's lock and keeps it until killed."""
    procs = []

    def hold(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": SRC}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, env=env)
        procs.append(proc)
        assert proc.stdout.readline() == b"held\n"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def gone_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_run_another_process_trains_is_refused_then_resumes_after_its_kill_9(
    tmp_path, tiny_run, tiny_overrides, holder
):
    path = unfinished_copy(tiny_run, tmp_path / "runs")
    owner = holder(path)
    # run.json names a dead process: the lock, not the pid, says the run is alive
    meta = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**meta, "status": "interrupted", "pid": gone_pid()}))
    said = f"run 'live' is being trained by pid {owner.pid} on {platform.node()}"
    with pytest.raises(RunLocked, match=said) as refused:
        train(None, resume="live", quiet=True)
    assert f"kill {owner.pid}" in refused.value.fix
    res = runner.invoke(app, ["train", "--resume", "live"])
    assert res.exit_code == 2 and said in res.output, res.output
    with pytest.raises(RunLocked, match="choose another name"):  # a new run under its name
        train(resolve_config([], tiny_overrides + ["name=live"]), quiet=True)
    assert [r["status"] for r in list_runs(tmp_path / "runs")] == ["running"]
    assert not (path / "summary.json").exists() and len(Run(path).metrics()) == 2

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    (path / "run.json").write_text(json.dumps({**meta, "status": "running", "pid": os.getpid()}))
    assert [r["status"] for r in list_runs(tmp_path / "runs")] == ["stopped (process gone)"]
    run = train(None, resume="live", quiet=True)  # the kernel let go
    assert run.finished and len(run.metrics()) == 2
    assert is_locked(path) is False  # and so did the run at its end


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_the_training_process_holds_its_run_until_the_end(tmp_path, tiny_overrides):
    seen = []

    def during(row: dict) -> None:
        path = tmp_path / "runs" / "own"
        seen.append((is_locked(path), [r["status"] for r in list_runs(tmp_path / "runs")]))
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):  # a second owner in this process
            Run.create(path.parent, "own", resume=True, own=True)

    run = train(resolve_config([], tiny_overrides + ["name=own"]), quiet=True, on_epoch=during)
    assert seen == [(True, ["running"])] * 2
    assert json.loads((run.path / ".lock").read_text()) == {"pid": os.getpid(), "host": platform.node()}
    assert is_locked(run.path) is False


def test_a_new_folder_appears_locked_and_a_refused_claim_leaves_nothing(tmp_path):
    run = Run.create(tmp_path, "X", files={"config.yaml": "seed: 0\n"}, own=True)
    assert is_locked(run.path)
    with pytest.raises(RunLocked, match="choose another name"):
        Run.create(tmp_path, "X", files={"config.yaml": "seed: 0\n"}, own=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]  # no temp folder, still locked
    with run:
        assert is_locked(run.path)
    assert is_locked(run.path) is False
    assert Run.create(tmp_path, "X", resume=True, own=True).lock is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_keep_its_parents_run_locked(tmp_path):
    lock = RunLock.take(tmp_path, "x")
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: alive after its parent let go (or was killed)
        os.write(started, b"1")  # after os.fork's at-fork handlers ran here
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"1"
        lock.release()
        assert is_locked(tmp_path) is False
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


def cells(name: str):
    return expand(Sweep(name, overrides=["data.name=digits", "model.name=small_cnn"], grid={"seed": [0, 1]}))


def test_a_sweep_with_a_run_another_process_trains_is_refused_before_any_training(tmp_path):
    first, second = cells("s")
    (tmp_path / "runs" / second.id).mkdir(parents=True)
    lock = RunLock.take(tmp_path / "runs" / second.id, second.id)  # the same sweep, started earlier
    res = runner.invoke(
        app, ["sweep", "--name", "s", "--grid", "seed=0,1", "--data", "digits", "--model", "small_cnn"]
    )
    assert res.exit_code == 2 and f"run '{second.id}' is being trained by pid {os.getpid()}" in res.output
    assert not (tmp_path / "runs" / first.id).exists()  # refused before the first cell trained
    with pytest.raises(RunLocked):  # found only when the cell starts (a race): the sweep stops too
        run_cell(second, None)
    lock.release()


def test_a_study_with_a_run_another_process_trains_is_refused(tmp_path):
    file = tmp_path / "tiny.yaml"
    file.write_text("name: tiny\nruns: {a: {set: {model.name: small_cnn, train.epochs: 1}}}\n")
    (tmp_path / "runs" / "tiny-smoke-a").mkdir(parents=True)
    with RunLock.take(tmp_path / "runs" / "tiny-smoke-a", "tiny-smoke-a"):
        res = runner.invoke(app, ["study", str(file), "--scale", "smoke"])
    assert res.exit_code == 2 and f"is being trained by pid {os.getpid()}" in res.output, res.output
    assert not (tmp_path / "runs" / "tiny-smoke-a" / "config.yaml").exists()


def test_without_fcntl_runs_train_unlocked_and_the_listing_uses_the_pid(tmp_path, monkeypatch):
    from visionbench.runs import lock as lock_module  # (visionbench.runs is also vb.runs())

    monkeypatch.setattr(lock_module, "fcntl", None)  # Windows
    run = Run.create(tmp_path, "w", files={"config.yaml": "seed: 0\n"}, own=True)
    assert Run.create(tmp_path, "w", resume=True, own=True).path == run.path  # nothing to refuse
    assert is_locked(run.path) is None and not (run.path / ".lock").exists()
    for pid, status in [(os.getpid(), "running"), (gone_pid(), "stopped (process gone)")]:
        (run.path / "run.json").write_text(
            json.dumps({"status": "running", "pid": pid, "host": platform.node()})
        )
        assert [r["status"] for r in list_runs(tmp_path)] == [status]
