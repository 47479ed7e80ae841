"""Trackers (`train.track`): optional sinks that mirror a run into TensorBoard or MLflow as it
trains. The run folder stays the record of truth: a tracker that fails is one warning (and a
line in the run's tracking.json), never a lost run. Neither is on by default.

    tensorboard  event files in RUN/tensorboard/: each epoch's metrics.jsonl values as scalars
                 (step = epoch), the resolved config as text, the test metrics at the last epoch
    mlflow       a run in the experiment $MLFLOW_EXPERIMENT_NAME (default "visionbench") at
                 mlflow.get_tracking_uri(): $MLFLOW_TRACKING_URI, else MLflow's own default, a
                 local SQLite mlflow.db in the working folder; the resolved config as params,
                 each epoch's metrics (step = epoch), the test metrics, and the run folder's
                 figures, summary and config as artifacts. A resumed run continues its MLflow run.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from functools import reduce
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import VisionbenchError
from .record import Run

TEST_METRICS = ("test_acc", "test_top5", "balanced_acc", "macro_f1", "test_loss")
# what an MLflow run carries as artifacts: the figures, the summary and what reproduces the run
ARTIFACTS = (
    "summary.json",
    "config.yaml",
    "metrics.jsonl",
    "curves.png",
    "eval-last/*.png",
    "eval-last/*.json",
)


# MLflow's own defaults retry a server that is down for minutes (7 retries, backoff factor 2,
# 120 s a request): a 7 s run waited 254 s before its warning. A tracker is a sink, not the
# record: these bound each call (a user's own settings of these variables win).
MLFLOW_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
REACH_TIMEOUT_S = 3.0  # the first contact with a tracking server, before MLflow's retries


@contextlib.contextmanager
def environment(defaults: dict[str, str]) -> Iterator[None]:
    """`defaults` set in os.environ where unset (MLflow reads them at each call), then removed."""
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def check_store(uri: str, timeout: float | None = None) -> None:
    """An error, within about `timeout` seconds, when the MLflow store at `uri` cannot be used:
    an HTTP server that refuses or does not answer, a SQLite file or folder that cannot be
    written (MLflow would retry its engine for 100 s). Other stores are left to MLflow."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        reach_server(uri, REACH_TIMEOUT_S if timeout is None else timeout)
    elif scheme == "sqlite" and uri.startswith("sqlite:///"):  # SQLAlchemy's: then a relative path, or /abs
        path = unquote(uri[len("sqlite:///") :].split("?")[0])
        if path and path != ":memory:":
            writable_sqlite(Path(path))


def reach_server(uri: str, timeout: float) -> None:
    """Any HTTP answer will do (MLflow's server answers /health; a proxy may say 404)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (OSError, http.client.HTTPException) as e:
        why = e.reason if isinstance(e, urllib.error.URLError) else e
        raise VisionbenchError(
            f"the MLflow server did not answer within {timeout:g} s ({why or type(e).__name__})",
            where=uri,
            fix="start the server or set MLFLOW_TRACKING_URI to one that runs (or leave train.track at none)",
        ) from None


def writable_sqlite(path: Path) -> None:
    """The SQLite store can be written: an existing file opened for a write transaction, or a
    file created in its folder (MLflow creates the file and its folders)."""
    try:
        if path.is_file():
            # a write rolled back: SQLite opens a write-protected file read-only without a word
            with contextlib.closing(sqlite3.connect(path, timeout=2, isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE visionbench_probe (x)")
                db.execute("ROLLBACK")
        else:
            folder = next(p for p in path.parents if p.exists())
            tempfile.TemporaryFile(dir=folder).close()
    except (OSError, sqlite3.Error) as e:
        raise VisionbenchError(
            f"the MLflow store cannot be written ({e})",
            where=str(path),
            fix="make it writable, or set MLFLOW_TRACKING_URI to another store (or leave train.track at none)",
        ) from None


def require_tracker(kind: str) -> None:
    """Before anything is written: the tracker's package must be installed."""
    if kind == "none":
        return
    try:
        importlib.import_module(kind)
    except ImportError:
        raise VisionbenchError(
            f"train.track={kind} needs the {kind} package, which is not installed",
            fix=f'pip install "visionbench[{kind}]" (or leave train.track at none)',
        ) from None


def config_params(cfg) -> dict[str, str]:
    """The resolved config as flat `key: text` pairs, one per config key (`optim.lr: 0.1`)."""
    from ..config import config_keys

    tree = cfg.model_dump(mode="json")
    value = lambda key: reduce(lambda node, part: node[part], key.split("."), tree)
    return {k: v if isinstance(v, str) else json.dumps(v) for k in config_keys() for v in [value(k)]}


def numbers(row: dict) -> dict[str, float]:
    """A metrics row's values to log: every number but the epoch itself (it is the step)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class Tracker:
    """No tracking: what `train.track=none` (and every distributed rank but 0) gets."""

    kind = "none"

    def bounded(self) -> contextlib.AbstractContextManager:
        """What bounds each call in time (MLflow's retries), if anything."""
        return contextlib.nullcontext()

    def start(self, run: Run, cfg, epoch: int) -> None:
        """Open the sink for `run`, which resumes after `epoch` epochs (0 for a new run)."""

    def epoch(self, row: dict) -> None:
        """One epoch's metrics row, as logged to metrics.jsonl."""

    def finish(self, run: Run) -> None:
        """The run finished: its test metrics and files."""

    def close(self, status: str) -> None:
        """The run stopped early: FAILED or KILLED."""


class TensorBoard(Tracker):
    kind = "tensorboard"

    def start(self, run: Run, cfg, epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from ..config import dump_config

        # purge_step: a resumed run hides the events an interrupted process wrote past its checkpoint
        self.writer = SummaryWriter(str(run.path / "tensorboard"), purge_step=epoch + 1 if epoch else None)
        self.where = {"logdir": str(run.path / "tensorboard")}
        if not epoch:
            self.writer.add_text("config", "```yaml\n" + dump_config(cfg) + "```")

    def epoch(self, row: dict) -> None:
        for key, value in numbers(row).items():
            self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def finish(self, run: Run) -> None:
        summary = run.read_json("summary.json")
        for key in TEST_METRICS:
            if summary.get(key) is not None:
                self.writer.add_scalar(key, summary[key], summary["epochs"])
        self.writer.close()

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow(Tracker):
    kind = "mlflow"

    def bounded(self) -> contextlib.AbstractContextManager:
        return environment(MLFLOW_LIMITS)

    def start(self, run: Run, cfg, epoch: int) -> None:
        import mlflow
        from mlflow.entities import Param

        uri = mlflow.get_tracking_uri()
        check_store(uri)
        self.client = mlflow.MlflowClient(uri)
        previous = run.read_json("tracking.json").get("run_id") if epoch else None
        if previous:  # a resumed run goes on in its MLflow run
            self.client.update_run(previous, status="RUNNING")
            self.run_id = previous
        else:
            experiment = self.experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "visionbench")
            tags = {"visionbench.run_folder": str(run.path.resolve())}
            self.run_id = self.client.create_run(experiment, tags=tags, run_name=run.id).info.run_id
            params = [Param(k, v) for k, v in config_params(cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.where = {"tracking_uri": uri, "run_id": self.run_id}

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another process created it in between
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def epoch(self, row: dict) -> None:
        self.log(numbers(row), row["epoch"])

    def finish(self, run: Run) -> None:
        summary = run.read_json("summary.json")
        self.log(
            {k: float(summary[k]) for k in TEST_METRICS if summary.get(k) is not None}, summary["epochs"]
        )
        for pattern in ARTIFACTS:
            for path in sorted(run.path.glob(pattern)):
                folder = path.parent.relative_to(run.path).as_posix()
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


class Guarded(Tracker):
    """A tracker whose failure is one warning: it is then switched off and the run goes on.
    tracking.json in the run folder says where the run was tracked, or why it stopped being."""

    def __init__(self, tracker: Tracker, say: Callable[[str], None]):
        self.tracker, self.say, self.run, self.failed = tracker, say, None, False
        self.kind = tracker.kind

    def call(self, method: str, *args) -> None:
        if self.failed:
            return
        try:
            with self.tracker.bounded():
                getattr(self.tracker, method)(*args)
        except Exception as e:  # noqa: BLE001 - any failure of a sink must not stop the run
            self.failed = True
            message = str(e) if isinstance(e, VisionbenchError) else f"{type(e).__name__}: {e}".strip()
            self.say(
                f"warning: {self.kind} tracking failed and is off for this run ({message}); "
                "the run goes on, its folder is the record"
            )
            self.record({"error": message})

    def record(self, extra: dict) -> None:
        if self.run is not None:
            where = getattr(self.tracker, "where", {})
            self.run.write_json("tracking.json", {"tracker": self.kind, **where, **extra})

    def start(self, run: Run, cfg, epoch: int) -> None:
        self.run = run
        self.call("start", run, cfg, epoch)
        if not self.failed:
            self.record({})

    def epoch(self, row: dict) -> None:
        self.call("epoch", row)

    def finish(self, run: Run) -> None:
        self.call("finish", run)

    def close(self, status: str) -> None:
        self.call("close", status)


SINKS = {"tensorboard": TensorBoard, "mlflow": MLflow}  # train.track's values (config.py) but none


def start_tracker(kind: str, run: Run, cfg, epoch: int, say: Callable[[str], None]) -> Tracker:
    """The run's tracker, started (see the module's docstring); failures are warnings."""
    if kind == "none":
        return Tracker()
    tracker = Guarded(SINKS[kind](), say)
    tracker.start(run, cfg, epoch)
    return tracker
