"""Sweeps: a grid cut short and re-run finishes every cell once; an Optuna search shares one
study between worker processes (journal file, or a real PostgreSQL server)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import interrupt_at, skip_or_fail_on_ci
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.runs import Run, list_runs

TINY = ["--data", "digits", "--model", "small_cnn", "--epochs", "1", "--device", "cpu", "train.threads=1"]
GRID = ["--grid", "model.kwargs={width: 4},{width: 8}", "--grid", "seed=0,1", "--grid", "optim.lr=0.1,0.05"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow  # 65 s on 2 cores: a grid of 8 tiny trainings, swept three times
def test_grid_cut_short_then_rerun_skips_finished_and_resumes(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 35)  # 10 steps a run: three finish, the fourth stops mid-epoch
    first = invoke("sweep", "--name", "g", *GRID, *TINY)
    assert first.exit_code == 143, first.output
    assert first.output.count("trained") == 3 and "interrupted" in first.output
    assert "run the same command again" in first.output
    monkeypatch.undo()
    monkeypatch.setenv("VISIONBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))

    again = invoke("sweep", "--name", "g", *GRID, *TINY, "--json", "--jobs", "2")  # worker processes
    assert again.exit_code == 0, again.output
    rows = json.loads(again.stdout)["runs"]
    assert len(rows) == len({r["id"] for r in rows}) == 8
    assert all(r["status"] == "finished" and r["test_acc"] > 0 for r in rows)
    assert {(r["model.kwargs"]["width"], r["seed"], r["optim.lr"]) for r in rows} == {
        (w, s, lr) for w in (4, 8) for s in (0, 1) for lr in (0.1, 0.05)
    }
    assert len(list_runs(tmp_path / "runs")) == 8  # no cell ran twice under another id
    third = invoke("sweep", "--name", "g", *GRID, *TINY)
    assert third.output.count("skipped") == 8
    assert "mean ± std over seeds (8 finished runs)" in third.output  # the compare table
    assert "model.kwargs.width \\ optim.lr" in third.output


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_sweep_file_and_a_changed_setting_under_the_same_name(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("name: f\nset: {train.threads: 1}\ngrid: {seed: [0, 1]}\n")
    res = invoke("sweep", "--file", str(spec), *TINY[:-1])
    assert res.exit_code == 0, res.output
    ids = sorted(r["id"] for r in list_runs(tmp_path / "runs"))
    assert len(ids) == 2 and ids[0].startswith("f-0-") and ids[1].startswith("f-1-")
    res = invoke("sweep", "--file", str(spec), *TINY[:-1], "optim.lr=0.3")
    assert res.exit_code == 2 and "other settings" in res.output
    res = invoke("sweep", "--grid", "optim.lrr=0.1,0.2", *TINY)
    assert res.exit_code == 2 and "optim.lr" in res.output


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_optuna_search_with_journal_file_runs_each_trial_as_a_run(tmp_path):
    res = invoke(
        "sweep",
        "--search",
        "optuna",
        "--trials",
        "3",
        "--name",
        "o",
        "--grid",
        "optim.lr=0.02..0.3:log",
        *TINY,
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "sweeps" / "o.journal").is_file()
    runs = sorted(r["id"] for r in list_runs(tmp_path / "runs"))
    assert runs == ["o-t0000", "o-t0001", "o-t0002"]
    assert all(0.02 <= Run.open(r).config().optim.lr <= 0.3 for r in runs)


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a free local port (as `nobody` when we are root:
    postgres refuses to run as root)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    pg_ctl = shutil.which("pg_ctl") or (str(found[-1]) if found else None)
    if pg_ctl is None:
        skip_or_fail_on_ci("PostgreSQL server binaries not installed (Debian package postgresql)")
    initdb = str(Path(pg_ctl).with_name("initdb"))
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("runuser"):
        skip_or_fail_on_ci("running as root without runuser: cannot start PostgreSQL as another user")
    home = Path(tempfile.mkdtemp(prefix="vb-pg-"))
    if as_user:
        shutil.chown(home, "nobody")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = home / "data"

    def pg(*args):
        subprocess.run(as_user + list(args), cwd=home, check=True, capture_output=True, timeout=120)

    pg(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(pg_ctl, "-D", str(data), "-l", str(home / "log"), "-o", opts, "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # 53 s on 2 cores: two worker processes
def test_two_search_workers_share_one_study_on_postgresql(tmp_path, postgres):
    cmd = [sys.executable, "-m", "visionbench", "sweep", "--search", "optuna", "--trials", "6"]
    cmd += ["--name", "pg", "--storage", postgres, "--grid", "optim.lr=0.02..0.3:log", *TINY]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    import optuna

    url = postgres.replace("postgresql://", "postgresql+psycopg://")
    study = optuna.load_study(study_name="pg", storage=url)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) >= 6
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert len({t.user_attrs["run"] for t in study.trials}) == len(study.trials)
    finished = [r for r in list_runs(tmp_path / "runs") if r["status"] in ("finished", "pruned")]
    assert len(finished) == len(done)
