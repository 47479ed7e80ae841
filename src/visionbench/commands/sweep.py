"""Sweeps: a grid (or an Optuna search) over any config keys, each cell a normal run whose id
comes from the sweep name and the cell's values, so re-running a sweep skips finished cells
and resumes interrupted ones."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import RunConfig, load_yaml, parse_overrides, resolve_config
from ..errors import VisionbenchError, did_you_mean
from ..runs import Run, runs_root
from ..runs.lock import RunLocked, refuse_if_owned

FILE_KEYS = ("name", "config", "set", "grid", "trials", "metric")


@dataclass
class Sweep:
    """What to sweep: shared settings (config files, key=value) and the grid of key -> values."""

    name: str
    files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=dict)
    cli: dict = field(default_factory=dict)

    def config(self, values: dict, name: str) -> RunConfig:
        cell = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        return resolve_config(self.files, self.overrides + cell + [f"name={name}"], self.cli)


@dataclass
class Cell:
    id: str
    values: dict
    cfg: RunConfig


def parse_grid(items: list[str]) -> dict[str, list]:
    """['model.name=a,b', 'seed=0,1'] -> {'model.name': ['a', 'b'], 'seed': [0, 1]}; values are
    YAML scalars (or flow mappings such as {width: 8}); `lo..hi[:log]` is a range (search only)."""
    grid = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            grid[key.strip()] = yaml.safe_load(f"[{raw}]") if raw else None
        except yaml.YAMLError:
            grid[key.strip()] = None
    return check_grid(grid, "--grid")


def check_grid(grid: dict, where: str) -> dict[str, list]:
    for key, values in grid.items():
        parse_overrides([f"{key}=0"])  # an unknown key is named with the nearest valid one
        if not values:
            raise VisionbenchError(
                f"no values for '{key}'", where=where, fix="write e.g. --grid optim.lr=0.1,0.05"
            )
    return {k: v if isinstance(v, list) else [v] for k, v in grid.items()}


def load_sweep_file(path: str | Path) -> dict:
    """A sweep file: name, config (files), set (key: value), grid (key: [values]), trials, metric."""
    tree = load_yaml(path)
    for key in tree:
        if key not in FILE_KEYS:
            raise VisionbenchError(
                f"unknown sweep key '{key}'.{did_you_mean(key, FILE_KEYS)}", where=str(path)
            )
    tree["set"] = [f"{k}={json.dumps(v)}" for k, v in (tree.get("set") or {}).items()]
    tree["grid"] = check_grid(tree.get("grid") or {}, str(path))
    return tree


def default_name(sweep: Sweep) -> str:
    """The same settings give the same name, so re-running the command continues the sweep."""
    key = json.dumps([sweep.files, sweep.overrides, sweep.grid, sweep.cli], sort_keys=True, default=str)
    return "sweep-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def cell_id(sweep_name: str, values: dict) -> str:
    text = "-".join(
        "_".join(f"{k}{x}" for k, x in v.items()) if isinstance(v, dict) else str(v) for v in values.values()
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:48].strip("_-")
    digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]
    return "-".join(p for p in (sweep_name, slug, digest) if p)


def expand(sweep: Sweep) -> list[Cell]:
    """Every cell of the grid, configs resolved up front: a bad value fails before any training."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", sweep.name):
        raise VisionbenchError(
            f"bad sweep name '{sweep.name}'", fix="use letters, digits, '.', '_', '-' (at most 60)"
        )
    ranges = [k for k, vs in sweep.grid.items() if any(isinstance(v, str) and ".." in v for v in vs)]
    if ranges:
        raise VisionbenchError(
            f"'{ranges[0]}' has a range: ranges are for --search optuna", fix="list the values"
        )
    cells = []
    for combo in itertools.product(*sweep.grid.values()):
        values = dict(zip(sweep.grid, combo))
        run_id = cell_id(sweep.name, values)
        cells.append(Cell(run_id, values, sweep.config(values, run_id)))
    return cells


def stopped(exit_code: int) -> VisionbenchError:
    e = VisionbenchError(
        "the sweep was stopped by a signal; the interrupted run has a checkpoint",
        fix="run the same command again: finished runs are skipped, interrupted ones resumed",
    )
    e.exit_code = exit_code  # 128 + signal, as `train` exits
    return e


def run_cell(cell: Cell, runs_dir: str | Path | None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one cell, or resume it, or skip it if finished. Returns {id, status[, error]}.
    A cell another process trains (RunLocked) is raised: the sweep stops there, rather than
    train the next cells beside a second copy of itself."""
    from .train import Interrupted, train

    path = runs_root(runs_dir) / cell.id
    if (path / "summary.json").is_file():
        return {"id": cell.id, "status": "skipped"}
    try:
        if (path / "config.yaml").is_file():
            train(None, runs_dir, resume=cell.id, quiet=True, on_epoch=on_epoch)
            return {"id": cell.id, "status": "resumed"}
        train(cell.cfg, runs_dir, quiet=True, on_epoch=on_epoch)  # an empty folder is taken over
        return {"id": cell.id, "status": "trained"}
    except Interrupted as e:
        return {"id": cell.id, "status": "interrupted", "exit_code": e.exit_code}
    except RunLocked:
        raise
    except VisionbenchError as e:
        return {"id": cell.id, "status": "failed", "error": str(e)}


def _claim_gpu(gpus) -> None:
    """Pool worker start: one GPU per worker, chosen before CUDA is initialised here."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())


def pool(jobs: int):
    """`jobs` worker processes (spawned: no forked torch threads), each on its own GPU if any."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    ctx = mp.get_context("spawn")
    n_gpus = torch.cuda.device_count()
    if not n_gpus:
        return ProcessPoolExecutor(jobs, mp_context=ctx)
    gpus = ctx.Queue()
    for i in range(jobs):
        gpus.put(i % n_gpus)
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_claim_gpu, initargs=(gpus,))


def check_unowned(cells: list[Cell], runs_dir: str | Path | None) -> None:
    """A cell that another process trains (the same sweep or study started twice): refused
    before any training here."""
    for cell in cells:
        path = runs_root(runs_dir) / cell.id
        if not (path / "summary.json").is_file():
            refuse_if_owned(path, cell.id)


def check_unchanged(
    cells: list[Cell], runs_dir: str | Path | None, fix: str = "give this sweep another --name"
) -> None:
    """A sweep re-run with other settings under the same name would mix two sweeps: refused."""
    for cell in cells:
        path = runs_root(runs_dir) / cell.id
        if (path / "config.yaml").is_file() and not same_settings(Run(path).config(), cell.cfg):
            raise VisionbenchError(
                f"run '{cell.id}' was made with other settings than this sweep's",
                where=str(path),
                fix=fix,
            )


AUTO_KEYS = ("train.batch_size", "optim.lr", "model.small_stem")  # None: chosen from the data
NO_RESULT_KEYS = ("name", "data.dir", "train.eval_batch_size")  # change no number a run reports


def same_settings(saved: RunConfig, wanted: RunConfig) -> bool:
    """Whether a run's saved config is `wanted`; AUTO_KEYS left unset in `wanted` were chosen
    from the data when the run started (models/build.py auto_settings) and match any value.
    data.dir is where the data was found, not what it is (the checkpoint checks its fingerprint):
    --data-dir one time and $VISIONBENCH_DATA the next is the same run; the evaluation batch may
    have been brought down to fit in memory (engine/memory.py) and changes no result; train.amp=true
    was recorded as the autocast chosen for the device (engine/device.py resolve_amp), and an unset
    train.accumulate as the micro-batches chosen when the batch did not fit (engine/memory.py)."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "kwargs" else {prefix + k: v}
        return out

    have, want = flat(saved.model_dump(mode="json")), flat(wanted.model_dump(mode="json"))
    return all(
        have.get(k) == v
        for k, v in want.items()
        if k not in NO_RESULT_KEYS
        and not (k in AUTO_KEYS and v is None)
        and not (k == "train.amp" and v is True)
        and not (k == "train.accumulate" and v == 1)  # chosen when the set batch did not fit
    )


def run_grid(
    cells: list[Cell],
    runs_dir: str | Path | None,
    jobs: int = 1,
    say=print,
    fix: str = "give this sweep another --name",
) -> list[dict]:
    """Run every cell (`jobs` at a time); stops launching new cells once one is interrupted.
    `fix` is said when a cell's run exists with other settings (see check_unchanged)."""
    check_unchanged(cells, runs_dir, fix)
    check_unowned(cells, runs_dir)
    results = []
    if jobs == 1:
        for cell in cells:
            res = run_cell(cell, runs_dir)
            say(f"{res['status']:>11}  {cell.id}" + (f": {res['error']}" if "error" in res else ""))
            results.append(res)
            if res["status"] == "interrupted":
                break
        return results
    from concurrent.futures import as_completed

    with pool(jobs) as workers:
        futures = [workers.submit(run_cell, cell, runs_dir) for cell in cells]
        try:
            for fut in as_completed(futures):
                if fut.cancelled():  # not started: the sweep was interrupted
                    continue
                res = fut.result()
                say(f"{res['status']:>11}  {res['id']}" + (f": {res['error']}" if "error" in res else ""))
                results.append(res)
                if res["status"] == "interrupted":
                    workers.shutdown(cancel_futures=True)
        except RunLocked:  # the cells already training finish; no other starts
            workers.shutdown(cancel_futures=True)
            raise
        except KeyboardInterrupt:  # the workers got the signal too: they checkpoint and stop
            workers.shutdown(cancel_futures=True)
            results.append({"id": "", "status": "interrupted", "exit_code": 130})
    return results


def summary_rows(cells: list[tuple[str, dict]], runs_dir: str | Path | None) -> list[dict]:
    """One row per cell: its values, status and results, as a comparison table shows them."""
    rows = []
    for run_id, values in cells:
        run = Run(runs_root(runs_dir) / run_id)
        status, summary, _ = run.record(absent="absent") if run.path.is_dir() else ("absent", {}, {})
        rows.append(
            {
                "id": run_id,
                **values,
                "status": status,
                "best_val_acc": summary.get("best_val_acc"),
                "test_acc": summary.get("test_acc"),
                "seconds": summary.get("train_seconds"),
            }
        )
    return rows


def comparison(rows: list[dict], grid_keys: list[str], runs_dir: str | Path | None) -> dict | None:
    """The `compare` table of the finished runs by the grid's keys (seeds averaged), with "n"
    the runs in it; None when nothing finished or the grid has more than two keys besides the
    seed (more would be averaged together)."""
    from ..analysis import compare as cmp

    finished = [r["id"] for r in rows if r["status"] == "finished"]
    keys = [k for k in grid_keys if k != "seed"]
    if not finished or len(keys) > 2:
        return None
    records = cmp.read_runs(finished, runs_dir)
    flat = sorted(records[0].config)  # a dict-valued key (model.kwargs) is compared by its first entry
    by = [next((c for c in flat if c == k or c.startswith(k + ".")), "model.name") for k in keys]
    table = cmp.compare_table(records, by[0] if by else "model.name", by[1] if len(by) > 1 else None)
    return {**table, "n": len(finished)}
