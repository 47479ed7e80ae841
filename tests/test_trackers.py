"""Trackers (runs/trackers.py): TensorBoard's and MLflow's own readers get back the run's
metrics.jsonl, and a tracker that fails or is missing never costs the run."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.errors import VisionbenchError
from visionbench.runs import trackers


def metrics_rows(run) -> list[dict]:
    return [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_the_runs_metrics(tiny_overrides, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(
        resolve_config([], tiny_overrides + ["train.track=tensorboard"]), tmp_path / "runs", quiet=True
    )
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    rows = metrics_rows(run)
    keys = [k for k in rows[0] if k != "epoch"]
    assert set(keys) <= set(events.Tags()["scalars"]) and "val_acc" in keys
    for key in keys:
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["epoch"] for r in rows]
        # TensorBoard keeps float32: the same numbers, rounded once
        assert [s.value for s in scalars] == [np.float32(r[key]) for r in rows], key
    summary = json.loads((run.path / "summary.json").read_text())
    (test,) = events.Scalars("test_acc")
    assert test.value == np.float32(summary["test_acc"]) and test.step == summary["epochs"]
    assert "optim" in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()


@pytest.mark.slow  # MLflow's import and its SQLite schema migrations: ~10 s on 2 cores
def test_mlflow_sqlite_store_holds_the_runs_metrics_params_and_artifacts(
    tiny_overrides, tmp_path, monkeypatch
):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's default store: a SQLite mlflow.db in the working folder
    run = train(resolve_config([], tiny_overrides + ["train.track=mlflow"]), tmp_path / "runs", quiet=True)
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracked = json.loads((run.path / "tracking.json").read_text())
    assert tracked["tracker"] == "mlflow" and "error" not in tracked
    found = client.get_run(tracked["run_id"])
    assert found.info.status == "FINISHED" and found.info.run_name == run.id
    assert client.get_experiment(found.info.experiment_id).name == "visionbench"
    rows = metrics_rows(run)
    for key in (k for k in rows[0] if k != "epoch"):
        history = sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], r[key]) for r in rows], key
    summary = json.loads((run.path / "summary.json").read_text())
    assert found.data.metrics["test_acc"] == summary["test_acc"]
    params = found.data.params  # the resolved config, one param per key
    assert params["optim.lr"] == "0.1" and params["model.kwargs"] == '{"width": 8}'
    assert params["data.name"] == "digits" and params["train.track"] == "mlflow"
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "config.yaml", "curves.png", "eval-last"} <= artifacts
    bundle = {a.path for a in client.list_artifacts(found.info.run_id, "eval-last")}
    assert {"eval-last/confusion.png", "eval-last/metrics.json"} <= bundle


def test_a_failing_tracker_is_one_warning_and_the_run_finishes(tiny_overrides, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    calls = {"n": 0}

    def broken(self, *args, **kwargs):
        calls["n"] += 1
        raise OSError("disk full")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    cfg = resolve_config([], tiny_overrides + ["train.track=tensorboard", "name=kept"])
    run = train(cfg, tmp_path / "runs")
    out = capsys.readouterr().out
    assert out.count("tracking failed") == 1 and "OSError: disk full" in out
    assert calls["n"] == 1  # switched off after the failure: no retry per epoch
    assert run.finished and len(metrics_rows(run)) == 2
    assert json.loads((run.path / "tracking.json").read_text())["error"] == "OSError: disk full"


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_an_unreachable_store_is_one_warning_too(tiny_overrides, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://tracking.invalid")
    cfg = resolve_config([], tiny_overrides + ["train.track=mlflow", "train.epochs=1"])
    run = train(cfg, tmp_path / "runs")
    out = capsys.readouterr().out
    assert out.count("mlflow tracking failed") == 1 and run.finished


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_a_missing_tracker_package_names_the_extra_before_anything_is_written(
    kind, tiny_overrides, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, kind, None)  # import fails as if not installed
    with pytest.raises(VisionbenchError, match=f'pip install "visionbench\\[{kind}\\]"'):
        train(resolve_config([], tiny_overrides + [f"train.track={kind}"]), tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()


def test_tracking_is_off_by_default(tiny_run):
    assert resolve_config([]).train.track == "none"
    assert "track: none" in (tiny_run / "config.yaml").read_text()
    assert not (tiny_run / "tensorboard").exists() and not (tiny_run / "tracking.json").exists()


# --- an MLflow store that cannot be reached is found in seconds, not MLflow's minutes ------------
class HealthOnly(BaseHTTPRequestHandler):
    """Answers /health, then never answers MLflow's API calls (until the test ends)."""

    def do_GET(self):
        if self.path.endswith("/health"):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        else:
            self.server.done.wait(30)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def health_only():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), HealthOnly)
    srv.done = threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.done.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(monkeypatch, cls, method: str) -> list[float]:
    """The seconds each call of cls.method takes (the tracker alone: the machine may be busy)."""
    spent, real = [], getattr(cls, method)

    def wrapper(*args):
        start = time.perf_counter()
        try:
            return real(*args)
        finally:
            spent.append(time.perf_counter() - start)

    monkeypatch.setattr(cls, method, wrapper)
    return spent


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_mlflow_server_that_refuses_or_never_answers_is_found_in_seconds(kind, silent_port, monkeypatch):
    monkeypatch.setattr(trackers, "REACH_TIMEOUT_S", 0.5)
    uri = f"http://127.0.0.1:{closed_port() if kind == 'refused' else silent_port}"
    start = time.perf_counter()
    with pytest.raises(VisionbenchError, match="did not answer within 0.5 s") as e:
        trackers.check_store(uri)
    assert time.perf_counter() - start < 2 and e.value.where == uri


def test_a_read_only_sqlite_store_is_found_at_once(small_disk):
    import sqlite3

    sqlite3.connect(small_disk.path / "mlflow.db").close()
    small_disk.read_only()
    for name in ("mlflow.db", "new.db"):  # an existing file, and one the folder cannot take
        with pytest.raises(VisionbenchError, match="the MLflow store cannot be written"):
            trackers.check_store(f"sqlite:///{small_disk.path / name}")


@pytest.mark.slow  # MLflow's import and a training run: ~15 s on 2 busy cores
def test_an_unreachable_mlflow_server_is_one_quick_warning_and_the_run_trains_on(
    tiny_overrides, tmp_path, monkeypatch, capsys, silent_port
):
    pytest.importorskip("mlflow")
    monkeypatch.setattr(trackers, "REACH_TIMEOUT_S", 0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_port}")
    spent = timed(monkeypatch, trackers.MLflow, "start")
    run = train(resolve_config([], tiny_overrides + ["train.track=mlflow"]), tmp_path / "runs")
    assert spent == [pytest.approx(0.5, abs=2)]  # MLflow's own retries: minutes
    out = capsys.readouterr().out
    assert out.count("mlflow tracking failed") == 1 and "did not answer within 0.5 s" in out
    assert run.finished and "did not answer" in json.loads((run.path / "tracking.json").read_text())["error"]


@pytest.mark.slow  # MLflow's import and a training run: ~15 s on 2 busy cores
def test_mlflow_calls_are_bounded_past_the_first_contact(
    tiny_overrides, tmp_path, monkeypatch, capsys, health_only
):
    """A server that answers /health and then hangs: MLflow's calls end at the bounded timeout
    and retries (1 s and none here) instead of MLflow's 120 s and 7 retries."""
    pytest.importorskip("mlflow")
    monkeypatch.setattr(
        trackers,
        "MLFLOW_LIMITS",
        {
            **trackers.MLFLOW_LIMITS,
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", health_only)
    spent = timed(monkeypatch, trackers.MLflow, "start")
    run = train(resolve_config([], tiny_overrides + ["train.track=mlflow"]), tmp_path / "runs")
    assert len(spent) == 1 and spent[0] < 5
    assert capsys.readouterr().out.count("mlflow tracking failed") == 1 and run.finished
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ  # set for MLflow's calls only
