"""Adaptive search with Optuna: TPE proposes each trial's values, the median pruner stops poor
trials on their epoch metric. Workers on one machine share a journal file; workers on many
machines share an RDB (PostgreSQL) URL. Each trial is a normal run, <sweep>-t<number>.
`run_sweep` runs a sweep either way, the grid (sweep.py) or this search, for the CLI and the API."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import VisionbenchError
from ..runs import Run, runs_root
from .sweep import Cell, Sweep, expand, pool, run_cell, run_grid, stopped, summary_rows


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise VisionbenchError(
            "--search optuna needs Optuna", fix='pip install "visionbench[sweep]"'
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_storage(url: str | None, sweep: Sweep, runs_dir: str | Path | None):
    """A journal file under the runs folder by default; `url` with :// is an RDB (SQLAlchemy) URL,
    anything else a journal file path."""
    optuna = import_optuna()
    if url and "://" in url:
        if url.startswith("postgresql://"):
            try:
                import psycopg2  # noqa: F401  (SQLAlchemy's default PostgreSQL driver)
            except ImportError:
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        for attempt in range(5):
            try:  # workers starting together may race to create the tables: the loser retries
                return optuna.storages.RDBStorage(url)
            except Exception as e:
                if "could not connect" in str(e).lower() or "connection" in str(e).lower() or attempt == 4:
                    raise VisionbenchError(f"cannot open the Optuna storage: {e}", where=url) from None
                time.sleep(0.5 * (attempt + 1))
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url) if url else runs_root(runs_dir) / "sweeps" / f"{sweep.name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def suggest(trial, key: str, values: list):
    """A range `lo..hi` (`:log` for log scale; ints if both ends are) or a choice of values."""
    if len(values) == 1 and isinstance(values[0], str) and ".." in values[0]:
        spec, _, scale = values[0].partition(":")
        lo, hi = (s.strip() for s in spec.split(".."))
        if lo.lstrip("-").isdigit() and hi.lstrip("-").isdigit():
            return trial.suggest_int(key, int(lo), int(hi), log=scale == "log")
        try:
            return trial.suggest_float(key, float(lo), float(hi), log=scale == "log")
        except ValueError:
            raise VisionbenchError(
                f"cannot read the range '{values[0]}' of '{key}'", fix="write e.g. optim.lr=0.01..0.5:log"
            ) from None
    return trial.suggest_categorical(key, values)


def search_worker(
    sweep: Sweep, trials: int, metric: str, storage: str | None, runs_dir: str | Path | None
) -> None:
    """Run trials until the study holds `trials` finished (complete or pruned) ones."""
    optuna = import_optuna()
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(sweep, metric, storage, runs_dir)

    def objective(trial) -> float:
        values = {k: suggest(trial, k, vs) for k, vs in sweep.grid.items()}
        run_id = f"{sweep.name}-t{trial.number:04d}"
        trial.set_user_attr("run", run_id)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        def report(row: dict) -> None:
            if metric in row:
                trial.report(row[metric], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

        try:
            res = run_cell(Cell(run_id, values, sweep.config(values, run_id)), runs_dir, on_epoch=report)
        except optuna.TrialPruned:
            Run(runs_root(runs_dir) / run_id).set_status("pruned")
            raise
        if res["status"] == "interrupted":
            raise stopped(res["exit_code"])
        if res["status"] == "failed":  # e.g. a NaN loss: a failed trial, the search goes on
            print(f"trial {run_id} failed: {res['error']}")
            return float("nan")
        rows = Run(runs_root(runs_dir) / run_id).metrics()
        seen = [r[metric] for r in rows if metric in r]
        if not seen:
            raise VisionbenchError(
                f"the runs have no epoch metric '{metric}'", fix=f"use --metric {' or '.join(rows[-1])}"
            )
        return (min if "loss" in metric else max)(seen)

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    study.optimize(objective, n_trials=trials, callbacks=[MaxTrialsCallback(trials, states=done)])


def open_study(sweep: Sweep, metric: str, storage: str | None, runs_dir: str | Path | None):
    optuna = import_optuna()
    return optuna.create_study(
        study_name=sweep.name,
        storage=make_storage(storage, sweep, runs_dir),
        load_if_exists=True,
        direction="minimize" if "loss" in metric else "maximize",
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )


def run_search(
    sweep: Sweep,
    trials: int,
    metric: str = "val_acc",
    storage: str | None = None,
    runs_dir: str | Path | None = None,
    jobs: int = 1,
) -> list[tuple[str, dict]]:
    """Search with `jobs` local workers (more may join from anywhere sharing `storage`);
    returns (run id, values) of every trial in the study."""
    import_optuna()
    if not sweep.grid:
        raise VisionbenchError("nothing to search", fix="add --grid KEY=a,b or KEY=lo..hi")
    args = (sweep, trials, metric, storage, runs_dir)
    if jobs == 1:
        search_worker(*args)
    else:
        with pool(jobs) as workers:
            for fut in [workers.submit(search_worker, *args) for _ in range(jobs)]:
                fut.result()
    study = open_study(sweep, metric, storage, runs_dir)
    return [(t.user_attrs.get("run", f"t{t.number}"), t.params) for t in study.trials]


def run_sweep(
    plan: Sweep,
    runs_dir: str | Path | None = None,
    jobs: int = 1,
    say: Callable[[str], None] = print,
    search: str | None = None,
    trials: int = 20,
    metric: str = "val_acc",
    storage: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """Train the grid's cells (or an Optuna search's trials): one summary row per run (see
    `summary_rows`), and each grid cell's result ({id, status[, error, exit_code]})."""
    if search == "optuna":
        return summary_rows(run_search(plan, trials, metric, storage, runs_dir, jobs), runs_dir), []
    if search:
        raise VisionbenchError(f"unknown search '{search}'", fix="use --search optuna (or leave it out)")
    cells = expand(plan)
    say(f"sweep {plan.name}: {len(cells)} runs, {jobs} at a time")
    results = run_grid(cells, runs_dir, jobs, say)
    return summary_rows([(c.id, c.values) for c in cells], runs_dir), results


def check_results(results: list[dict]) -> None:
    """A sweep stopped by a signal exits as `train` does; failed runs are one error naming them."""
    codes = [r["exit_code"] for r in results if r["status"] == "interrupted"]
    if codes:
        raise stopped(codes[0])
    failed = [r["id"] for r in results if r["status"] == "failed"]
    if failed:
        raise VisionbenchError(
            f"{len(failed)} run(s) failed: {', '.join(failed)}", fix="see the errors above"
        )
