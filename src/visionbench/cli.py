"""The command line: each command parses its arguments, calls its module in commands/ (or an
analysis function) and prints the result; errors print as one readable message."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .commands.options import LR_FIND_ITERS, data_options, prune, train_options
from .console import count_bar, make_console
from .errors import VisionbenchError, did_you_mean

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train, evaluate and report image classifiers, fast and reproducibly.",
)
data_app = typer.Typer(no_args_is_help=True, help="Datasets: download, inspect.")
app.add_typer(data_app, name="data")
out = make_console()
err = make_console(stderr=True)
STATE = {"debug": False}


def friendly(fn):
    """VisionbenchError -> one readable message and a non-zero exit; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VisionbenchError as e:
            if STATE["debug"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(getattr(e, "exit_code", 2)) from None

    return wrapper


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    offline: Annotated[
        bool, typer.Option(help="Never download (also VISIONBENCH_OFFLINE=1 or HF_HUB_OFFLINE=1).")
    ] = False,
):
    STATE["debug"] = debug
    warnings.showwarning = say_warning
    if offline:
        from .models import set_offline

        set_offline(True)


def say_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (a damaged checkpoint, a run left out) as the CLI's own one line,
    not a source path and a line of our code."""
    err.print(f"[yellow]warning:[/] {escape(str(message))}")


RunsDir = Annotated[
    Optional[Path], typer.Option("--runs-dir", help="Runs folder [default: $VISIONBENCH_RUNS or ./runs].")
]
DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Data root [default: $VISIONBENCH_DATA or ~/.cache/visionbench/data]."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TTA_HELP = (
    "Test-time views averaged: none, flip or flip-translate [default: each run's own, train.tta, "
    "as its test pass used]."
)
FinishedRuns = Annotated[
    Optional[list[str]], typer.Argument(help="Run ids or folders [default: every finished run].")
]
RecipeOpt = Annotated[
    Optional[str],
    typer.Option(help="Start from a preset (see `visionbench recipes`); other settings override it."),
]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Option(help="Dataset: digits, mnist, cifar10, folder:PATH.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (see `visionbench models`).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N, mps.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run id [default: <time>-<data>-<model>].")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="Start from a .safetensors/.pth file or run:RUN_ID.")
    ] = None,
    input_size: Annotated[
        Optional[int],
        typer.Option(
            help="model.input_size: the model sees inputs resized to this on the device (224 for ImageNet weights)."
        ),
    ] = None,
    data_dir: DataDir = None,
    config: Annotated[
        Optional[list[Path]], typer.Option(help="YAML config file(s), merged in order.")
    ] = None,
    recipe: RecipeOpt = None,
    runs_dir: RunsDir = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue an unfinished run (id or folder).")] = None,
    quiet: Annotated[bool, typer.Option(help="Print nothing but errors.")] = False,
    help_config: Annotated[bool, typer.Option(help="List every config key with its default.")] = False,
    as_json: AsJson = False,
):
    """Train a model; extra KEY=VALUE arguments set any config key (e.g. optim.lr=0.05)."""
    from .config import RunConfig, config_keys, resolve_config

    if help_config:
        defaults = RunConfig().model_dump()
        for key in config_keys():
            value = defaults
            for part in key.split("."):
                value = value[part]
            out.print(f"{key} = {value!r}")
        return
    refuse_unknown_options(ctx)
    cli = train_options(locals())  # the options named in TRAIN_OPTIONS
    from .commands.train import train as fit

    if resume is not None:  # an empty one too: refused, never the default run started instead
        if ctx.args or cli or config or recipe:
            raise VisionbenchError(
                "--resume continues a run with its saved config; other settings conflict",
                fix="leave out the other options, or start a new run",
            )
        run = fit(None, runs_dir, resume=resume, quiet=quiet or as_json)
    else:
        cfg = resolve_config(config or [], ctx.args, cli, recipe)
        run = fit(cfg, runs_dir, quiet=quiet or as_json)
    if as_json:
        print(json.dumps({"run": str(run.path), **run.read_json("summary.json")}))


def refuse_unknown_options(ctx: typer.Context) -> None:
    """Extra arguments are KEY=VALUE overrides; a stray --option is a typo, named as such."""
    for arg in ctx.args:
        if arg.startswith("-"):
            opt = arg.split("=")[0]
            known = [name for param in ctx.command.params for name in param.opts]
            raise VisionbenchError(
                f"unknown option '{opt}'.{did_you_mean(opt, known)}",
                fix=f"`visionbench {ctx.command.name} --help` lists the options",
            )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def sweep(
    ctx: typer.Context,
    grid: Annotated[
        Optional[list[str]], typer.Option(help="KEY=a,b,c: one axis of the grid (repeat for more).")
    ] = None,
    file: Annotated[Optional[Path], typer.Option(help="Sweep YAML: name, config, set, grid, trials.")] = None,
    name: Annotated[
        Optional[str], typer.Option(help="Sweep name, the runs' id prefix [default: from the settings].")
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Runs at once (processes; one GPU each if any).")] = 1,
    search: Annotated[
        Optional[str], typer.Option(help="optuna: adaptive search instead of the grid.")
    ] = None,
    trials: Annotated[
        Optional[int], typer.Option(min=1, help="Search: trials in the study [default 20].")
    ] = None,
    storage: Annotated[
        Optional[str], typer.Option(help="Search: RDB URL (postgresql://...) or journal file.")
    ] = None,
    metric: Annotated[
        Optional[str], typer.Option(help="Search: epoch metric to optimise and prune on [default: val_acc].")
    ] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset for every run.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model for every run.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, mps.")] = None,
    data_dir: DataDir = None,
    config: Annotated[Optional[list[Path]], typer.Option(help="YAML config file(s) for every run.")] = None,
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Train a grid of runs (or an Optuna search); extra KEY=VALUE arguments apply to every run.
    Re-running the same command skips finished runs and resumes interrupted ones."""
    from .commands.search import check_results, run_sweep
    from .commands.sweep import Sweep, default_name, load_sweep_file, parse_grid

    refuse_unknown_options(ctx)
    spec = load_sweep_file(file) if file else {}
    files = spec.get("config") or []
    files = [file.parent / f for f in ([files] if isinstance(files, str) else files)] + (config or [])
    cli = {
        **data_options(data, data_dir),
        "model": {"name": model},
        "train": {"epochs": epochs, "device": device},
    }
    plan = Sweep("", files, spec.get("set", []) + ctx.args, spec.get("grid", {}) | parse_grid(grid or []))
    plan.cli = prune(cli)
    plan.name = name or spec.get("name") or default_name(plan)
    say = (lambda msg: None) if as_json else (lambda msg: out.print(escape(msg)))
    metric = metric or spec.get("metric", "val_acc")
    trials = trials or spec.get("trials", 20)
    rows, results = run_sweep(plan, runs_dir, jobs, say, search, trials, metric, storage)
    if as_json:
        print(json.dumps({"sweep": plan.name, "runs": rows}))
    else:
        print_sweep_table(plan.name, rows)
        print_sweep_comparison(rows, list(plan.grid), runs_dir)
    check_results(results)


def print_sweep_table(name: str, rows: list[dict]) -> None:
    pct = lambda v: f"{v:.2%}" if v is not None else "-"
    fixed = ("id", "status", "best_val_acc", "test_acc", "seconds")
    keys = [k for k in (rows[0] if rows else {}) if k not in fixed]
    table = Table("id", *keys, "status", "best val acc", "test acc", "seconds", title=f"sweep {name}")
    for r in sorted(rows, key=lambda r: -(r["test_acc"] or -1)):
        table.add_row(
            r["id"],
            *(escape(str(r[k])) for k in keys),
            r["status"],
            pct(r["best_val_acc"]),
            pct(r["test_acc"]),
            f"{r['seconds']:.1f}" if r["seconds"] else "-",
        )
    out.print(table)


def print_sweep_comparison(rows: list[dict], grid_keys: list[str], runs_dir: Path | None) -> None:
    from .analysis import compare as cmp
    from .commands.sweep import comparison

    table = comparison(rows, grid_keys, runs_dir)
    if table is None:
        return
    out.print(f"test accuracy %, mean ± std over seeds ({table['n']} finished runs)")
    out.print(rich_table(*cmp.pivot(table)))
    out.print(rich_table(*cmp.details(table)))


@app.command("eval")
@friendly
def eval_cmd(
    run: Annotated[str, typer.Argument(help="Run id or folder, or a saved ensemble.")],
    weights: Annotated[Optional[str], typer.Option(help="Runs: last or best [default: last].")] = None,
    tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Evaluate on the test split and write a bundle (metrics.json, per-class CSV, confusion
    matrices, reliability diagram, worst mistakes, predictions.npz) into a folder of the run."""
    from .commands.evaluate import evaluate

    rep = evaluate(run, runs_dir, weights, device, tta)
    if as_json:
        print(json.dumps(rep))
        return
    if rep.get("task") == "multilabel":
        print_multilabel(rep)
        return
    out.print(
        f"[bold]{escape(rep['run'])}[/] on {rep['n']:,} test images (TTA: {escape(rep['tta'])}): "
        f"top-1 {rep['top1']:.2%}  top-5 {rep['top5']:.2%}  balanced {rep['balanced_acc']:.2%}  "
        f"macro-F1 {rep['macro_f1']:.2%}"
        + (f"  loss {rep['loss']:.4f}" if rep["loss"] is not None else "")
        + f"  ECE {rep['ece']:.2%} ({rep['ece_bins']} bins)"
        + (
            f", {rep['ece_uncalibrated']:.2%} before temperature scaling"
            if rep["ece_calibrated"] is not None
            else ""
        )
    )
    if "members" in rep:
        print_members(rep)
    table = Table("class", "precision", "recall", "f1", "n")
    for cls, v in rep["per_class"].items():
        table.add_row(
            escape(cls), f"{v['precision']:.2%}", f"{v['recall']:.2%}", f"{v['f1']:.2%}", str(v["support"])
        )
    out.print(table)
    out.print(f"bundle: {escape(rep['bundle'])}")


def print_multilabel(rep: dict) -> None:
    """A multi-label evaluation: mAP first, then AP, F1 and threshold per class."""
    if "members" in rep:
        for m in rep["members"]:
            out.print(f"  member {escape(m['id'])}: mAP {m['map']:.2%}")
    out.print(
        f"[bold]{escape(rep['run'])}[/] on {rep['n']:,} test images (TTA: {escape(rep['tta'])}): "
        f"mAP {rep['map']:.2%}  macro-F1 {rep['macro_f1']:.2%}  micro-F1 {rep['micro_f1']:.2%}  "
        f"exact match {rep['exact_match']:.2%}  loss {rep['loss']:.4f}"
    )
    table = Table("class", "AP", "precision", "recall", "f1", "threshold", "n")
    for cls, v in rep["per_class"].items():
        ap = "-" if v["ap"] is None else f"{v['ap']:.2%}"
        cells = (f"{v[k]:.2%}" for k in ("precision", "recall", "f1"))
        table.add_row(escape(cls), ap, *cells, f"{v['threshold']:.2f}", str(v["support"]))
    out.print(table)
    out.print(f"bundle: {escape(rep['bundle'])}" if "bundle" in rep else "")


def print_members(rep: dict) -> None:
    """Members' accuracy beside the ensemble's, then their pairwise agreement."""
    ids = [m["id"] for m in rep["members"]]
    table = Table("model", "test top-1", *(f"agrees with {i}" for i in range(1, len(ids) + 1)))
    for i, (m, row) in enumerate(zip(rep["members"], rep["agreement"]), start=1):
        table.add_row(f"{i}. {escape(m['id'])}", f"{m['top1']:.2%}", *(f"{a:.1%}" for a in row))
    table.add_row(f"[bold]{rep['vote']} vote", f"[bold]{rep['top1']:.2%}")
    out.print(table)
    out.print(f"tie-break: {escape(rep['tie_break'])}; weights {rep['weights']}")


@app.command()
@friendly
def ensemble(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (ids or folders).")],
    vote: Annotated[str, typer.Option(help="hard (majority) or soft (mean probability).")] = "hard",
    tie_break: Annotated[
        Optional[str], typer.Option(help="Run whose prediction wins a hard-vote tie [default: the first].")
    ] = None,
    weights: Annotated[Optional[str], typer.Option(help="Vote weights, one per run, e.g. 1,1,2.")] = None,
    run_weights: Annotated[str, typer.Option(help="Members' weights file: last or best.")] = "last",
    save: Annotated[
        Optional[str], typer.Option(help="Save as an ensemble folder NAME in the runs folder.")
    ] = None,
    tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Combine runs by vote; test accuracy beside each member's, agreement between members, and
    the ensemble's confusion matrix. Members must share the class list and the test data."""
    from .commands.ensemble import build_ensemble, evaluate_ensemble

    ens = build_ensemble(runs, runs_dir, vote, tie_break, weights, run_weights, device)
    rep = evaluate_ensemble(ens, tta, runs_dir, save)
    if as_json:
        print(json.dumps(rep))
        return
    if rep.get("task") == "multilabel":
        print_multilabel(rep)
        return
    print_members(rep)
    classes = list(rep["per_class"])
    if len(classes) <= 20:
        table = Table("true \\ pred", *map(escape, classes), title="ensemble confusion matrix")
        for cls, row in zip(classes, rep["confusion"]):
            table.add_row(escape(cls), *map(str, row))
        out.print(table)
    saved = f"saved: {escape(str(Path(rep['bundle']).parent))}" if save else None
    out.print(saved or "add --save NAME to keep it (ensemble.json and its eval bundle)")


@app.command("predict")
@friendly
def predict_cmd(
    run: Annotated[str, typer.Argument(help="Run id or folder, or a saved ensemble.")],
    images: Annotated[Path, typer.Option(help="Folder or .zip/.tar archive of images, or one image file.")],
    out_csv: Annotated[Path, typer.Option("--out", help="CSV file to write.")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option(min=1, help="Classes listed per image.")] = 5,
    weights: Annotated[Optional[str], typer.Option(help="Runs: last or best [default: last].")] = None,
    tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Label every image under a folder (or one image file): CSV of file, label, confidence,
    top-k, sorted by file; files that cannot be read get a row with the reason in the error column."""
    from .analysis.predictor import open_predictor
    from .commands.predict import predict_folder

    predictor = open_predictor(run, runs_dir, weights, device)
    res = predict_folder(predictor, images, out_csv, top_k, tta)
    res["confidence"] = predictor.confidence()  # calibrated by the run's temperature, or not
    if as_json:
        print(json.dumps(res))
        return
    out.print(f"labelled {res['predicted']:,} images with {escape(predictor.id)}: {escape(res['csv'])}")
    out.print(escape(res["confidence"]), style="dim")
    for s in res["skipped"]:
        out.print(f"  skipped {escape(s['file'])}: {escape(s['reason'])}")


@app.command()
@friendly
def explain(
    run: Annotated[str, typer.Argument(help="Run id or folder.")],
    index: Annotated[
        Optional[list[int]],
        typer.Option("--index", min=0, help="Test image index (repeatable) [default: the worst]."),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="How many worst-classified images, without --index.")] = 8,
    layer: Annotated[
        Optional[str], typer.Option(help="Grad-CAM layer name [default: the last conv layer].")
    ] = None,
    target: Annotated[str, typer.Option(help="Explain the predicted class (pred) or the true one.")] = "pred",
    weights: Annotated[str, typer.Option(help="last or best.")] = "last",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Saliency, SmoothGrad, Integrated Gradients and Grad-CAM for test images, as a PNG grid."""
    from .commands.explain import explain_run

    rep = explain_run(run, runs_dir, index, count, layer, target, weights, device)
    if as_json:
        print(json.dumps(rep))
        return
    for r in rep["images"]:
        out.print(
            f"#{r['index']:<6} true {escape(r['true'])}  pred {escape(r['pred'])} ({r['confidence']:.1%})"
        )
    out.print(f"Grad-CAM layer {escape(rep['layer'])}; wrote {escape(rep['png'])}")


@app.command()
@friendly
def export(
    run: Annotated[str, typer.Argument(help="Run id or folder.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    out_path: Annotated[
        Optional[Path], typer.Option("--out", help="File to write [default: RUN/export/model.onnx|pt].")
    ] = None,
    weights: Annotated[str, typer.Option(help="last or best.")] = "last",
    images: Annotated[int, typer.Option(min=1, help="Test images for the parity check.")] = 64,
    tolerance: Annotated[float, typer.Option(help="Largest allowed abs logit difference.")] = 1e-4,
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Export the model (normalisation included, [0, 1] NCHW input, dynamic batch) and check its
    logits against PyTorch's on real test images."""
    from .commands.export import export_run

    rep = export_run(run, fmt, out_path, runs_dir, weights, images, tolerance)
    if as_json:
        print(json.dumps(rep))
        return
    p = rep["parity"]
    out.print(f"wrote {escape(rep['path'])} (+ .json: classes, input)")
    out.print(
        f"parity on {p['images']} test images: max abs logit difference {p['max_abs_logit_diff']:.3g} "
        f"(tolerance {p['tolerance']:g})"
    )


@app.command()
@friendly
def compare(
    runs: FinishedRuns = None,
    rows: Annotated[str, typer.Option(help="Config key whose values are the rows.")] = "model.name",
    cols: Annotated[
        Optional[str],
        typer.Option(help="Config key whose values are the columns [default: recipe, else data.name]."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or markdown.")] = "table",
    reference: Annotated[
        Optional[list[str]],
        typer.Option(help="Published figures to show beside (repeatable); 'list' lists them."),
    ] = None,
    curves: Annotated[
        Optional[Path], typer.Option(help="Write the runs' learning curves, overlaid, to this PNG.")
    ] = None,
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Runs side by side: test accuracy (mean ± std over seeds) by two config keys, with params,
    training time and images/s; published references beside them."""
    from .analysis import compare as cmp

    if reference == ["list"]:
        for name, ref in cmp.load_references().items():
            out.print(f"{name:<24} {escape(ref['title'])}")
        return
    if fmt not in ("table", "csv", "markdown"):
        raise VisionbenchError(f"unknown format '{fmt}'", fix="use --format table, csv or markdown")
    records = cmp.read_runs(runs, runs_dir)
    table = cmp.compare_table(records, rows, cols)
    refs = [cmp.reference_block(name, records) for name in reference or []]
    if curves:
        from .analysis.plots import plot_overlaid_curves

        plot_overlaid_curves({r.id: r.metrics for r in records}, curves, title="learning curves")
    if as_json:
        print(json.dumps({**table, "references": refs}))
    elif fmt == "csv":
        sys.stdout.write(cmp.to_csv(table))
    elif fmt == "markdown":
        sys.stdout.write(cmp.to_markdown(table, refs))
    else:
        out.print(f"test accuracy %, mean ± std over seeds ({len(records)} runs)")
        out.print(rich_table(*cmp.pivot(table)))
        out.print(rich_table(*cmp.details(table)))
        for ref in refs:
            out.print(
                f"[bold]{escape(ref['name'])}[/]: {escape(ref['title'])}\nsource: {escape(ref['source'])}"
            )
            out.print(rich_table(ref["header"], ref["rows"]))
            out.print(rich_table(["", "ours", "reference"], [list(d.values()) for d in ref["differences"]]))
    if curves:
        err.print(f"wrote {escape(str(curves))}")


def rich_table(header: list[str], body: list[list[str]]) -> Table:
    table = Table(*map(escape, header))
    for row in body:
        table.add_row(*map(escape, row))
    return table


@app.command()
@friendly
def report(
    runs: FinishedRuns = None,
    html: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Markdown file to write.")] = None,
    rows: Annotated[str, typer.Option(help="Config key for the group table's rows.")] = "model.name",
    cols: Annotated[
        Optional[str], typer.Option(help="Config key for its columns [default: recipe, else data.name].")
    ] = None,
    reference: Annotated[
        Optional[list[str]],
        typer.Option(help="Published figures to show beside ours (repeatable; `compare --reference list`)."),
    ] = None,
    runs_dir: RunsDir = None,
):
    """One self-contained HTML report (figures inlined, works offline) and/or a markdown one:
    leaderboard, groups, learning curves, published references, confusion matrices and
    explanations."""
    from .analysis.report import write_report

    if not html and not markdown:
        html = Path("report.html")
    for path in write_report(runs, runs_dir, html, markdown, rows, cols, reference or []):
        out.print(f"wrote {escape(str(path))}")


@app.command()
@friendly
def runs(runs_dir: RunsDir = None, as_json: AsJson = False):
    """List runs and saved ensembles, newest first."""
    from .runs import list_runs, runs_root

    root = runs_root(runs_dir)
    rows = list_runs(root)
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        out.print(f"no runs in {root}")
        return
    table = Table("id", "kind", "status", "data", "model", "epochs", "val acc", "test acc", "seconds")
    pct = lambda v: f"{v:.2%}" if v is not None else "-"
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["status"],
            r["data"] or "-",
            r["model"] or "-",
            r["epochs"],
            pct(r["val_acc"]),
            pct(r["test_acc"]),
            f"{r['seconds']:.1f}" if r["seconds"] else "-",
        )
    out.print(table)


@app.command()
@friendly
def models(
    pattern: Annotated[str, typer.Argument(help="Substring or glob; timm:PATTERN lists timm's.")] = "",
    num_classes: Annotated[int, typer.Option(min=1, help="Head size the parameters are counted for.")] = 10,
    as_json: AsJson = False,
):
    """List models: name, source, parameters and forward GFLOPs per image at each model's usual
    input (3x32x32 ours, 3x224x224 torchvision's and timm's), and offline weights."""
    from .models.listing import MAX_COUNTED, list_models

    rows = list_models(pattern, num_classes)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(
        "model", "source", "input", f"params ({num_classes} classes)", "GFLOPs/image", "weights on disk"
    )
    for r in rows:
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        flops = f"{r['flops'] / 1e9:.3g}" if r["flops"] is not None else "-"
        weights = {True: "yes", False: "no", None: "-"}[r["weights_offline"]]
        table.add_row(r["name"], r["source"], r["input"], params, flops, weights)
    out.print(table)
    if len(rows) > MAX_COUNTED:
        out.print(
            f"{len(rows)} models; give a PATTERN matching at most {MAX_COUNTED} to count the others' "
            "parameters and FLOPs"
        )
    out.print("GFLOPs: forward, one image, 2 per multiply-add (torch.utils.flop_counter)")
    if not pattern.startswith("timm:"):
        out.print("timm's models: visionbench models timm:PATTERN (e.g. timm:resnet*)")


@app.command("lr-find", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def lr_find(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Option(help="Dataset: digits, mnist, cifar10, folder:PATH.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (see `visionbench models`).")] = None,
    data_dir: DataDir = None,
    config: Annotated[
        Optional[list[Path]], typer.Option(help="YAML config file(s), merged in order.")
    ] = None,
    recipe: RecipeOpt = None,
    start_lr: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end_lr: Annotated[
        float, typer.Option(help="Last learning rate (the test stops earlier on divergence).")
    ] = 10.0,
    iters: Annotated[int, typer.Option(help="Steps (one batch each) from start to end lr.")] = LR_FIND_ITERS,
    repeats: Annotated[int, typer.Option(help="Repeat over other batch orders and report the spread.")] = 1,
    plot: Annotated[Path, typer.Option(help="PNG of the loss against the lr.")] = Path("lr_find.png"),
    use: Annotated[
        str, typer.Option(help="Suggestion --apply takes: valley, steepest, minimum/10.")
    ] = "valley",
    apply: Annotated[
        bool, typer.Option("--apply", help="Then train with optim.lr set to the suggestion.")
    ] = False,
    runs_dir: RunsDir = None,
    as_json: AsJson = False,
):
    """Learning-rate range test (Smith): exponential lr ramp, smoothed loss, stop on divergence;
    the model is restored afterwards. Extra KEY=VALUE arguments set any config key."""
    from .commands.lr_find import KINDS, find_lr
    from .config import resolve_config

    if use not in KINDS:
        raise VisionbenchError(
            f"unknown suggestion '{use}'.{did_you_mean(use, KINDS)}", fix="use " + ", ".join(KINDS)
        )
    if repeats < 1 or iters < 5 or not 0 < start_lr < end_lr:
        raise VisionbenchError("need --repeats >= 1, --iters >= 5 and 0 < --start-lr < --end-lr")
    cli = prune({**data_options(data, data_dir), "model": {"name": model}})
    cfg = resolve_config(config or [], ctx.args, cli, recipe)
    say = None if as_json else (lambda msg: err.print(escape(msg), style="dim"))
    res = find_lr(cfg, start_lr=start_lr, end_lr=end_lr, iters=iters, repeats=repeats, plot=plot, say=say)
    chosen = res["suggestions"][use]["median"]
    if as_json:
        print(json.dumps({k: v for k, v in res.items() if k != "curves"} | {"chosen": chosen}))
    else:
        for kind, s in res["suggestions"].items():
            spread = (
                f"  spread x{s['spread']:.2f} over {repeats} repeats" if repeats > 1 and s["spread"] else ""
            )
            out.print(f"{kind:<11} {s['median']:.2e}{spread}" if s["median"] else f"{kind:<11} -")
        out.print(f"plot: {escape(str(plot))}")
    if apply:
        if not chosen:
            raise VisionbenchError(
                "the range test found no usable learning rate", fix="widen --start-lr/--end-lr"
            )
        from .commands.train import train as fit

        cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": chosen})})
        if not as_json:
            out.print(f"training with optim.lr={chosen:.3g} ({use})")
        fit(cfg, runs_dir, quiet=as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def study(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Study file (examples/writeups/*.yaml).")],
    scale: Annotated[
        str, typer.Option(help="smoke (<= 2 min), cpu (<= 30 min on 2 cores) or full.")
    ] = "smoke",
    data_dir: DataDir = None,
    runs_dir: RunsDir = None,
    show_plan: Annotated[
        bool, typer.Option("--plan", help="Print every run's settings and differences; train nothing.")
    ] = False,
    as_json: AsJson = False,
):
    """Run a write-up as one command: its runs (finished ones skipped, interrupted ones resumed),
    the steps after them, and one HTML report with the write-up's figures beside ours. Extra
    KEY=VALUE arguments set a config key in every run (recorded in the report)."""
    refuse_unknown_options(ctx)
    if show_plan:
        from .commands.study import changed_settings, load_study, plan_rows

        rows = plan_rows(load_study(file, scale, ctx.args), data_dir)
        if as_json:
            print(json.dumps(rows))
        for row in [] if as_json else rows:
            params = f"{row['params']:,}" if row["params"] is not None else "?"
            out.print(escape(f"{row['key']}  {row['id']}  ({params} parameters)"))
            for line in changed_settings(row["config"]) + [f"differs: {d}" for d in row["differences"]]:
                out.print(escape(f"    {line}"))
        return
    from .commands.study import run_study

    say = (lambda msg: None) if as_json else (lambda msg: out.print(escape(msg)))
    res = run_study(file, scale, runs_dir, say, data_dir, ctx.args)
    if as_json:
        print(json.dumps(res))


@app.command()
@friendly
def recipes(as_json: AsJson = False):
    """List the training recipes: presets of augmentation, optimizer, schedule and regularisation."""
    from .recipes import list_recipes

    rows = list_recipes()
    if as_json:
        print(json.dumps(rows))
        return
    for r in rows:
        out.print(f"{r['name']:<10} v{r['version']}  {escape(r['description'])}")


@data_app.command("download")
@friendly
def data_download(
    name: str,
    data_dir: DataDir = None,
    mirror: Annotated[Optional[str], typer.Option(help="Base URL of a mirror.")] = None,
):
    """Download a dataset's official files, verified by md5."""
    from .data import download_dataset

    for p in download_dataset(name, data_dir, mirror):
        out.print(f"ok  {p}")


@contextmanager
def progress_to_stderr():
    """on_build and on_progress callbacks that say on stderr (with a bar for image files)
    when a cache is built."""
    with count_bar(err, "decoding images") as update:
        yield {"on_build": lambda msg: err.print(escape(msg), style="dim"), "on_progress": update}


@data_app.command("info")
@friendly
def data_info(name: str, data_dir: DataDir = None, as_json: AsJson = False):
    """Classes, counts per class and split, image shape, source; warns on imbalance, classes
    missing from a split, exact duplicates across splits and unreadable files."""
    from .commands.data import dataset_info

    with progress_to_stderr() as progress:
        ds, info = dataset_info(name, data_dir, **progress)
    if as_json:
        print(json.dumps(info))
        return
    rep, splits, cached = info, info["splits"], info["cache"]
    out.print(
        f"[bold]{escape(name)}[/]  {len(ds.classes)} classes, images {'x'.join(map(str, ds.shape))} (C x H x W)"
    )
    out.print(f"source: {escape(ds.source)}")
    if ds.originals.get("modes"):
        listed = lambda d: ", ".join(f"{k} {v:,}" for k, v in d.items())
        out.print(
            "files as stored: "
            + (f"formats {listed(ds.originals['formats'])}; " if ds.originals.get("formats") else "")
            + f"modes {listed(ds.originals['modes'])}; sizes {listed(ds.originals['sizes'])}"
        )
    out.print(
        f"cache: {escape(cached['folder'])} ({cached['mib']:,.1f} MiB)"
        if cached
        else "cache: none (streamed from files)"
    )
    names = ds.class_names or [""] * len(ds.classes)  # readable names where classes are ids (wnids)
    table = Table("class", *(["name"] if ds.class_names else []), *splits)
    for i, c in enumerate(ds.classes):
        cells = [escape(names[i])] if ds.class_names else []
        table.add_row(escape(c), *cells, *(f"{splits[s]['per_class'][i]:,}" for s in splits))
    table.add_row(
        "[bold]total", *([""] if ds.class_names else []), *(f"[bold]{v['n']:,}" for v in splits.values())
    )
    out.print(table)
    for note in ds.notes:
        out.print(f"note: {escape(note)}")
    for warning in rep["warnings"]:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    for s in ds.skipped[:20]:
        out.print(f"  skipped {escape(s['file'])}: {escape(s['reason'])}")


@data_app.command("show", context_settings={"allow_extra_args": True})
@friendly
def data_show(
    ctx: typer.Context,
    name: str,
    data_dir: DataDir = None,
    out_path: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("samples.png"),
    per_class: Annotated[int, typer.Option(help="Samples per class.")] = 8,
    max_classes: Annotated[int, typer.Option(help="Show at most this many classes.")] = 20,
    config: Annotated[Optional[list[Path]], typer.Option(help="YAML config whose aug.* to show.")] = None,
    seed: Annotated[int, typer.Option(help="Which random samples.")] = 0,
):
    """A PNG grid of random training samples per class, as stored and as the training loader
    augments them (aug.* from --config files or KEY=VALUE arguments)."""
    from .commands.data import sample_grid
    from .config import resolve_config

    cfg = resolve_config(config or [], ctx.args)
    with progress_to_stderr() as progress:
        res = sample_grid(name, data_dir, cfg.aug, out_path, per_class, max_classes, seed, **progress)
    out.print(
        f"wrote {escape(str(out_path))} ({res['samples']} samples, {res['classes']} classes"
        + (", stored | augmented)" if res["augmented"] else ")")
    )


@app.command()
@friendly
def demo(runs_dir: RunsDir = None, epochs: Annotated[Optional[int], typer.Option(help="Epochs.")] = None):
    """Train a small CNN on the embedded digits dataset (about 15 s on 2 CPU cores)."""
    from .commands.train import train as fit
    from .config import resolve_config

    cfg = resolve_config([], [f"train.epochs={epochs}"] if epochs else [], recipe="demo")
    run = fit(cfg, runs_dir)
    out.print(
        f"next: visionbench eval {run.id} --runs-dir {run.path.parent}   |   visionbench runs --runs-dir {run.path.parent}"
    )


def main() -> None:
    sys.exit(app())
