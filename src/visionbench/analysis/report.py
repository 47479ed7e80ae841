"""One report for a set of runs: a self-contained HTML file (CSS inline, figures base64-inlined,
no scripts, no network) and a markdown version for a README."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, StrictUndefined

from .. import __version__
from ..errors import VisionbenchError
from ..runs import runs_root
from .compare import (
    RunRecord,
    compare_table,
    details,
    markdown_table,
    pivot,
    read_runs,
    reference_block,
    reference_markdown,
)
from .plots import plot_overlaid_curves

# the figures a run (or saved ensemble) folder may hold, in the order the report shows them;
# eval*/ are evaluation bundles (`visionbench eval`, one folder per weights / TTA choice)
FIGURES = [
    ("curves.png", "learning curves"),
    ("confusion.png", "confusion matrix (test)"),
    ("eval*/confusion.png", "confusion matrix"),
    ("eval*/confusion_normalized.png", "confusion matrix, normalised per true class"),
    ("eval*/reliability.png", "calibration: reliability diagram"),
    ("eval*/pr_curves.png", "precision-recall per class (multi-label)"),
    ("eval*/mistakes.png", "most confident mistakes"),
    ("explain/explain.png", "explanations: saliency, SmoothGrad, Integrated Gradients, Grad-CAM"),
]


@dataclass
class Figure:
    caption: str
    path: Path

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode()


@dataclass
class RunSection:
    id: str
    figures: list[Figure] = field(default_factory=list)
    explained: list[dict] = field(default_factory=list)  # explain.json's rows: index, true, pred, ...


def leaderboard(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """One row per run, best test accuracy first."""
    pct = lambda v: f"{100 * v:.2f}" if v is not None else "-"
    num = lambda v, spec: format(v, spec) if v is not None else "-"
    header = [
        "run",
        "data",
        "model",
        "seed",
        "epochs",
        "test top-1 %",
        "top-5 %",
        "balanced %",
        "macro-F1 %",
        "params",
        "train s",
        "images/s",
    ]
    body = [
        [
            r.id,
            str(r.config.get("data.name", "-")),
            str(r.config.get("model.name", "-")),
            str(r.config.get("seed", "-")),
            str(r.summary.get("epochs", "-")),
            pct(r.summary.get("test_acc")),
            pct(r.summary.get("test_top5")),
            pct(r.summary.get("balanced_acc")),  # None for runs finished before it existed
            pct(r.summary.get("macro_f1")),
            num(r.summary.get("params"), ","),
            num(r.summary.get("train_seconds"), ".1f"),
            num(r.images_per_s, ",.0f"),
        ]
        for r in sorted(records, key=lambda r: -r.summary.get("test_acc", 0))
    ]
    return header, body


def figures_in(folder: Path) -> list[Figure]:
    found = []
    for pattern, caption in FIGURES:
        for path in sorted(folder.glob(pattern)):
            where = path.parent.name if path.parent != folder and path.parent.name != "explain" else ""
            found.append(Figure(f"{caption} ({where})" if where else caption, path))
    return found


def run_section(record: RunRecord) -> RunSection:
    section = RunSection(record.id, figures_in(record.path))
    explained = record.path / "explain" / "explain.json"
    if explained.is_file():
        section.explained = json.loads(explained.read_text()).get("images", [])
    return section


def ensemble_section(folder: Path) -> dict:
    """A saved ensemble (`visionbench ensemble --save`): vote, accuracy beside its members',
    the members' agreement, and the figures of its evaluation bundles. A damaged ensemble.json
    or summary.json (not JSON, or fields of other types) is a clear error naming the folder."""
    try:
        meta, summary = read_ensemble(folder)
        pct = lambda v: f"{100 * v:.2f}" if v is not None else "-"
        members = summary.get("members", [{"id": m["id"]} for m in meta["members"]])
        ids = [m["id"] for m in members]
        agreement = summary.get("agreement")
        return {
            "id": folder.name,
            "vote": meta.get("vote", "?"),
            "accuracy": (
                ["model", "test top-1 %"],
                [[f"ensemble ({meta.get('vote', '?')} vote)", pct(summary.get("top1"))]]
                + [[m["id"], pct(m.get("top1"))] for m in members],
            ),
            "agreement": (
                ["agreement", *ids],
                [[a, *(f"{v:.3f}" for v in row)] for a, row in zip(ids, agreement)],
            )
            if agreement
            else None,
            "figures": figures_in(folder),
        }
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise damaged_ensemble(folder, f"{type(e).__name__}: {e}") from None


def read_ensemble(folder: Path) -> tuple[dict, dict]:
    """A saved ensemble's ensemble.json (with its list of members) and summary.json ({} when
    absent); a damaged one is a clear error."""
    files = {}
    for name in ("ensemble.json", "summary.json"):
        try:
            files[name] = json.loads((folder / name).read_text()) if (folder / name).is_file() else {}
        except (ValueError, OSError) as e:
            raise damaged_ensemble(folder, f"{name} is not JSON: {e}") from None
        if not isinstance(files[name], dict):
            raise damaged_ensemble(folder, f"{name} is not a JSON object")
    meta = files["ensemble.json"]
    members = meta.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) and "id" in m for m in members):
        raise damaged_ensemble(folder, "ensemble.json has no list of members")
    return meta, files["summary.json"]


def damaged_ensemble(folder: Path, why: str) -> VisionbenchError:
    return VisionbenchError(
        f"saved ensemble '{folder.name}' is damaged ({why})",
        where=str(folder),
        fix=f"save it again (`visionbench ensemble RUN RUN ... --save {folder.name}`), or remove that folder",
    )


def split_refs(refs: list[str] | None, runs_dir) -> tuple[list[str] | None, list[Path]]:
    """Run refs and saved-ensemble folders (an ensemble goes wherever a run does); with no refs,
    every ensemble folder under the runs root but a damaged one, left out with a warning (as a
    damaged run is)."""
    root = runs_root(runs_dir)
    if not refs:
        ensembles = []
        for folder in sorted(p.parent for p in root.glob("*/ensemble.json")):
            try:
                ensemble_section(folder)
            except VisionbenchError as e:  # never the reason nothing is reported
                warnings.warn(f"ensemble {folder.name} left out: {e.what}", stacklevel=2)
            else:
                ensembles.append(folder)
        return None, ensembles
    runs, ensembles = [], []
    for ref in refs:
        found = next((f for f in (Path(ref), root / ref) if (f / "ensemble.json").is_file()), None)
        if found:
            ensembles.append(found)
        else:
            runs.append(ref)
    return runs, ensembles


def report_context(
    records: list[RunRecord],
    ensembles: list[Path],
    overlay: Path,
    rows: str,
    cols: str | None,
    references: list[str] = (),
) -> dict:
    """Everything both renderings show; the overlaid curves are drawn to `overlay`; each named
    published reference is shown beside ours, as `compare --reference` does."""
    table = compare_table(records, rows, cols)
    plot_overlaid_curves({r.id: r.metrics for r in records}, overlay, title="learning curves, all runs")
    return {
        "title": f"visionbench report: {len(records)} run{'s' if len(records) != 1 else ''}",
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "version": __version__,
        "leaderboard": leaderboard(records),
        "grid_caption": f"test top-1 %, mean ± std over seeds; rows {table['rows']}, columns {table['cols']}",
        "grid": pivot(table),
        "details": details(table),
        "overlay": Figure("learning curves, all runs", overlay),
        "runs": [run_section(r) for r in records],
        "ensembles": [ensemble_section(e) for e in ensembles],
        "references": [reference_block(name, records) for name in references],
        "study": None,  # a study's report adds the write-up beside ours (analysis/study_report.py)
    }


def render_html(ctx: dict) -> str:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(files("visionbench.analysis").joinpath("templates/report.html.j2").read_text())
    return template.render(**ctx)


def render_markdown(ctx: dict, base: Path) -> str:
    """Tables as markdown; figures as links relative to `base` (the markdown file's folder)."""
    link = lambda fig: f"![{fig.caption}]({Path(os.path.relpath(fig.path, base)).as_posix()})"
    parts = [
        f"# {ctx['title']}",
        f"Generated {ctx['generated']} by visionbench {ctx['version']}.",
        "## Leaderboard",
        markdown_table(*ctx["leaderboard"]),
        f"## By group\n\n{ctx['grid_caption']}",
        markdown_table(*ctx["grid"]),
        markdown_table(*ctx["details"]),
        "## Learning curves",
        link(ctx["overlay"]),
    ]
    if ctx["references"]:
        parts.append("## Published references")
    for ref in ctx["references"]:
        parts += reference_markdown(ref)
    for ens in ctx["ensembles"]:
        parts += [f"## Ensemble {ens['id']}", markdown_table(*ens["accuracy"])]
        parts += [markdown_table(*ens["agreement"])] if ens["agreement"] else []
        parts += [link(fig) for fig in ens["figures"]]
    for run in ctx["runs"]:
        parts.append(f"## {run.id}")
        parts += [link(fig) for fig in run.figures]
    return "\n\n".join(parts) + "\n"


def write_report(
    refs: list[str] | None,
    runs_dir: str | Path | None = None,
    html: Path | None = None,
    markdown: Path | None = None,
    rows: str = "model.name",
    cols: str | None = None,
    references: list[str] = (),
) -> list[Path]:
    """Write the HTML and/or markdown report for `refs` (default: every finished run), with the
    published `references` (analysis/references.yaml) beside ours."""
    run_refs, ensembles = split_refs(refs, runs_dir)
    if refs and not run_refs:  # only ensembles: report their members
        run_refs = [m.get("path", m["id"]) for e in ensembles for m in read_ensemble(e)[0]["members"]]
    records = read_runs(run_refs, runs_dir)
    written = []
    if markdown:  # its figures must outlive this call: the overlay goes beside the markdown file
        markdown.parent.mkdir(parents=True, exist_ok=True)
        overlay = markdown.with_name(f"{markdown.stem}-curves.png")
        ctx = report_context(records, ensembles, overlay, rows, cols, references)
        markdown.write_text(render_markdown(ctx, markdown.parent))
        written.append(markdown)
    if html:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = report_context(records, ensembles, Path(tmp) / "curves.png", rows, cols, references)
            page = render_html(ctx)
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(page)
        written.append(html)
    return written
