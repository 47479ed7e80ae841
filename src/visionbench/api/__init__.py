"""The Python API, the CLI's twin: the same config, recipes and run folders, through the same
functions (commands/ and analysis/), from a notebook or a script.

    >>> import visionbench as vb
    >>> run = vb.train(data="digits", model="small_cnn", epochs=2, **{"optim.lr": 0.05})
    >>> run.history               # one row per epoch: a pandas DataFrame, or a list of dicts
    >>> run.plot("confusion")     # figures show inline in Jupyter
    >>> run.predict("photos/")    # a folder, image files, PIL images or arrays
    >>> vb.compare(run, vb.train(data="digits", model="scratch_cnn", epochs=2))

Settings are given as the CLI's options (`data`, `model`, `epochs`, `lr`, ...), as dotted config
keys (`**{"optim.lr": 0.05}`, what `optim.lr=0.05` is on the command line) or as whole sections
(`optim={"lr": 0.05, "name": "adam"}`); `visionbench train --help-config` lists every key.
Tables (history, predictions, runs) are pandas DataFrames when pandas is installed
(`pip install "visionbench[notebook]"`), else lists of dicts with the same columns.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..commands.options import LR_FIND_ITERS, TRAIN_OPTIONS, check_path
from ..errors import VisionbenchError
from .objects import Comparison, Ensemble, Figure, Result, Run, ref_of, table, tta_mode

__all__ = [
    "Comparison", "Ensemble", "Figure", "Result", "Run", "compare", "ensemble", "load", "lr_find",
    "report", "resolve", "resume", "runs", "study", "sweep", "train",
]  # fmt: skip


def config_files(config) -> list[str]:
    """`config`: one YAML file or a list of them (None: none)."""
    files = [config] if isinstance(config, (str, os.PathLike)) else config or []
    if not isinstance(files, (list, tuple)):
        files = [files]  # a wrong type: check_path names it
    for file in files:
        check_path("config", file)
    return [str(f) for f in files]


def resolve(config=None, recipe: str | None = None, **settings):
    """The run config the CLI would build from the same files, recipe, options and settings
    (what `vb.train` trains; `.model_dump()` shows it).

    >>> vb.resolve(data="digits", epochs=2, **{"optim.lr": 0.05}).optim.lr
    """
    from ..commands.options import config_tree
    from ..config import resolve_config

    return resolve_config(config_files(config), [], config_tree(settings), recipe)


def train(
    data: str | None = None,
    model: str | None = None,
    epochs: int | None = None,
    *,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    name: str | None = None,
    weights: str | None = None,
    input_size: int | None = None,
    data_dir: str | Path | None = None,
    task: str | None = None,
    config: str | Path | list | None = None,
    recipe: str | None = None,
    runs_dir: str | Path | None = None,
    quiet: bool = False,
    **settings,
) -> Run:
    """`visionbench train`: train a run to the end and return it. The options are the CLI's;
    `config` is one or more YAML files, `recipe` a preset (`visionbench recipes`), and any
    other keyword a config key, dotted or as a section. Progress and one line per epoch are
    printed (also in Jupyter); `quiet` prints nothing.

    >>> run = vb.train(data="digits", model="small_cnn", epochs=2, **{"optim.lr": 0.05})
    >>> run = vb.train(recipe="fast", data="cifar10", data_dir="data", train={"epochs": 3})
    >>> run.summary["test_acc"]
    >>> vb.train(data="csv:photos/labels.csv", task="multilabel").summary["map"]  # data.task
    """
    from ..commands.train import train as fit

    options = {k: v for k, v in locals().items() if k in TRAIN_OPTIONS}
    check_path("runs_dir", runs_dir)
    cfg = resolve(config, recipe, **options, **settings)
    return Run(fit(cfg, runs_dir, quiet=quiet).path)


def resume(ref: str | Path, runs_dir: str | Path | None = None, quiet: bool = False) -> Run:
    """`visionbench train --resume`: continue an interrupted run (id or folder) exactly.

    >>> run = vb.resume("20250101-120000-cifar10-resnet18")
    """
    from ..commands.train import train as fit

    return Run(fit(None, runs_dir, resume=str(ref), quiet=quiet).path)


def load(ref: str | Path | Run | Ensemble, runs_dir: str | Path | None = None) -> Run | Ensemble:
    """A finished (or unfinished) run, or a saved ensemble, by id or folder.

    >>> vb.load("20250101-120000-digits-small_cnn").plot("curves")
    """
    from ..analysis.predictor import ensemble_json, load_ensemble
    from ..runs import Run as RunFolder
    from ..runs import runs_root

    if isinstance(ref, (Run, Ensemble)):
        ref = ref_of(ref)
    if not isinstance(ref, (str, Path)) or not str(ref):
        raise VisionbenchError(
            f"vb.load takes a run's id or folder, not {ref!r}",
            fix='give a run id or folder as a string (vb.runs() lists them), e.g. vb.load("my-run")',
        )
    root = runs_root(runs_dir)
    found = ensemble_json(ref, root)
    if found:
        voter = load_ensemble(found, root)
        saved = RunFolder(voter.path).read_json("summary.json")  # what `ensemble --save` measured
        return Ensemble(voter, {"run": voter.id, **saved} if saved else None)
    return Run(RunFolder.open(ref, root).path)


def runs(runs_dir: str | Path | None = None):
    """`visionbench runs`: every run and saved ensemble, newest first: id, kind, status, data,
    model, epochs, val_acc, test_acc, seconds.

    >>> vb.runs()
    """
    from ..runs import list_runs, runs_root

    return table(list_runs(runs_root(runs_dir)))


def compare(
    *runs,
    rows: str = "model.name",
    cols: str | None = None,
    reference: str | list[str] | None = None,
    runs_dir: str | Path | None = None,
) -> Comparison:
    """`visionbench compare`: the runs (objects, ids or folders; default every finished run)
    grouped by two config keys, with the named published references beside them and the
    learning curves overlaid (`.curves`); `.table` is the data, `.to_markdown()` the text.

    >>> vb.compare(run_a, run_b, rows="model.name", reference="writeup-002-cifar10")
    """
    from ..analysis.compare import read_runs

    refs = [ref_of(r) for item in runs for r in (item if isinstance(item, (list, tuple)) else [item])]
    references = [reference] if isinstance(reference, str) else list(reference or [])
    return Comparison(read_runs(refs or None, runs_dir), rows, cols, references)


def ensemble(
    runs: list,
    vote: str = "hard",
    tie_break=None,
    weights: list[float] | None = None,
    run_weights: str = "last",
    tta: bool | str | None = None,
    save: str | None = None,
    device: str = "auto",
    runs_dir: str | Path | None = None,
) -> Ensemble:
    """`visionbench ensemble`: runs combined by a hard (majority; ties to `tie_break`) or soft
    (mean probability) vote, evaluated on the test split; `save` keeps it as a folder NAME in
    the runs folder, which `vb.load`, `eval` and `predict` accept wherever a run goes.

    >>> trio = vb.ensemble([a, b, c], vote="hard", tie_break=b, save="trio")
    >>> trio.report["top1"], trio.predict(images)
    """
    from ..commands.ensemble import build_ensemble, evaluate_ensemble

    if isinstance(runs, (str, Path, Run, Ensemble)) or not isinstance(runs, Iterable):
        raise VisionbenchError(
            f"vb.ensemble takes a list of runs, not {runs!r}",
            fix=f"give two or more runs (objects, ids or folders) in a list, e.g. vb.ensemble([{ref_of(runs)!r}, ...])",
        )
    refs = [ref_of(r) for r in runs]
    tie = ref_of(tie_break) if tie_break is not None else None
    voter = build_ensemble(refs, runs_dir, vote, tie, ",".join(map(str, weights or [])), run_weights, device)
    return Ensemble(voter, evaluate_ensemble(voter, tta_mode(tta), runs_dir, save))


def study(
    file: str | Path,
    scale: str = "smoke",
    runs_dir: str | Path | None = None,
    quiet: bool = False,
    *,
    data_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    **settings,
) -> dict:
    """`visionbench study`: a write-up's runs and steps at `scale` (smoke, cpu or full) and its
    HTML report; finished runs are skipped, interrupted ones resumed. `overrides` (key=value, as
    on the command line) and keyword settings (as `vb.train`'s) set every run's config over the
    file's, and are recorded in the report; `data_dir` is every run's data root.

    >>> vb.study("examples/writeups/002-cifar10-lab.yaml", scale="smoke", **{"train.epochs": 2})["report"]
    """
    from ..commands.options import as_overrides, config_tree
    from ..commands.study import run_study

    items = [overrides] if isinstance(overrides, str) else list(overrides or [])
    items += as_overrides(config_tree(settings))
    return run_study(file, scale, runs_dir, (lambda msg: None) if quiet else print, data_dir, items)


def sweep(
    grid: dict[str, list],
    *,
    name: str | None = None,
    jobs: int = 1,
    search: str | None = None,
    trials: int = 20,
    metric: str = "val_acc",
    storage: str | None = None,
    config: str | Path | list | None = None,
    runs_dir: str | Path | None = None,
    quiet: bool = False,
    **settings,
):
    """`visionbench sweep`: one run per cell of `grid` ({key: [values]}), or an Optuna search
    (`search="optuna"`, ranges as "lo..hi[:log]"); other keywords are settings for every run.
    Re-running it skips finished runs and resumes interrupted ones. Returns one row per run.

    >>> vb.sweep({"model.name": ["scratch_cnn", "small_cnn"], "seed": [0, 1]}, data="digits", epochs=2)
    """
    from ..commands.options import config_tree
    from ..commands.search import check_results, run_sweep
    from ..commands.sweep import Sweep, check_grid, default_name

    grid = check_grid(dict(grid), "vb.sweep(grid=...)")
    plan = Sweep("", config_files(config), [], grid, config_tree(settings))
    plan.name = name or default_name(plan)
    say = (lambda msg: None) if quiet else print
    rows, results = run_sweep(plan, runs_dir, jobs, say, search, trials, metric, storage)
    check_results(results)
    return table(rows)


def lr_find(
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    iters: int = LR_FIND_ITERS,
    repeats: int = 1,
    plot: str | Path | None = None,
    config: str | Path | list | None = None,
    recipe: str | None = None,
    quiet: bool = False,
    **settings,
) -> Result:
    """`visionbench lr-find`: the learning-rate range test on the run `settings` describe (as
    `vb.train`'s: data, model, dotted keys ...);
    its suggestions (valley, steepest, minimum/10: median and spread over `repeats`) and the
    plot (also written to `plot`).

    >>> vb.lr_find(data="digits", model="small_cnn", iters=50)["suggestions"]["valley"]["median"]
    """
    import tempfile

    from ..commands.lr_find import find_lr

    cfg = resolve(config, recipe, **settings)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(plot) if plot else Path(tmp) / "lr_find.png"
        res = find_lr(
            cfg,
            start_lr=start_lr,
            end_lr=end_lr,
            iters=iters,
            repeats=repeats,
            plot=png,
            say=None if quiet else print,
        )
        figure = Figure(png if plot else None, "learning-rate range test", None if plot else png.read_bytes())
    valley = res["suggestions"]["valley"]["median"]
    return Result(
        res, {"lr_find": figure}, f"valley {valley:.2e}" if valley else "no usable learning rate found"
    )


def report(
    *runs,
    html_path: str | Path | None = "report.html",
    markdown: str | Path | None = None,
    rows: str = "model.name",
    cols: str | None = None,
    reference: str | list[str] | None = None,
    runs_dir: str | Path | None = None,
) -> list[Path]:
    """`visionbench report`: one self-contained HTML file (and/or markdown) for the runs and
    saved ensembles (default: every finished run), with published references beside ours.

    >>> vb.report(run_a, run_b, html_path="report.html", reference="rsb-resnet50")
    """
    from ..analysis.report import write_report

    refs = [ref_of(r) for r in runs] or None
    references = [reference] if isinstance(reference, str) else list(reference or [])
    paths = [Path(p) if p else None for p in (html_path, markdown)]
    return write_report(refs, runs_dir, *paths, rows, cols, references)
