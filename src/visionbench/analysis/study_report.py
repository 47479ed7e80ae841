"""A study's report: the write-up's findings with a verdict on each; its own figures beside
ours, row by row, with every difference from the full plan and the write-up computed; then the
usual report of the study's runs and ensembles, and the outputs of its steps (lr-find plots,
predictions)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from .compare import dict_or_empty, read_runs, reference_block
from .findings import Cell, evaluate
from .report import Figure, render_html, report_context, split_refs


def beside_rows(runs, records) -> tuple[list[str], list[list[str]]]:
    """One row per run of the study: the write-up's setting and figure, ours, the difference."""
    by_id = {r.id: r for r in records}
    header = [
        "run",
        "write-up's setting",
        "write-up top-1 %",
        "ours: test top-1 %",
        "gap",
        "differences",
        "notes",
    ]
    body = []
    for r in runs:
        rec = by_id.get(r.id)
        ours = rec.summary.get("test_acc") if rec else None
        theirs = r.writeup.get("top1")  # this cell's (commands/study.py writeup_for)
        values = ", ".join(f"{k}={v}" for k, v in r.values.items())
        notes = "; ".join(
            n
            for n in (
                r.note,
                f"{rec.summary.get('epochs', '?')} epochs, {rec.config.get('data.name')}"
                if rec
                else "not run",
                *(rec.summary.get("warnings") or [] if rec else []),  # e.g. training diverged
                # what the data read is (data/official.py copy_note): e.g. a lossy JPEG copy
                *(dict_or_empty(rec.meta.get("data_report")).get("notes") or [] if rec else []),
            )
            if n
        )
        body.append(
            [
                r.key + (f" ({values})" if values else ""),
                str(r.writeup.get("setting", "-")),
                f"{theirs:.2f}" if theirs is not None else "-",
                f"{100 * ours:.2f}" if ours is not None else "-",
                f"{100 * ours - theirs:+.2f} points" if ours is not None and theirs is not None else "-",
                "; ".join(r.differences) or "none",  # computed by the plan (commands/study_plan.py)
                notes,
            ]
        )
    return header, body


def run_cell(r, rec) -> Cell:
    """What a claim reads of one run: its test top-1, its validation top-1 at the end of its
    first freeze stage and at the end, and whether it can speak for the write-up here."""
    cell = Cell(r.key, dict(r.values))
    full = r.full or r.cfg
    if r.cfg.data.name != full.data.name:
        cell.untestable = f"trained on {r.cfg.data.name} here, the write-up's data is {full.data.name}"
    if r.cfg.model.weights != full.model.weights:  # our pretraining in place of ImageNet's
        cell.weights = f"{r.key} started from our pretraining, not ImageNet's weights"
    elif full.model.pretrained and not r.cfg.model.pretrained:  # e.g. model.pretrained=false given
        cell.weights = f"{r.key} trained from scratch here, not from ImageNet's weights"
    if rec is None:
        return cell
    cell.top1 = 100 * rec.summary["test_acc"] if rec.summary.get("test_acc") is not None else None
    val = {row["epoch"]: 100 * row["val_acc"] for row in rec.metrics if row.get("val_acc") is not None}
    stages = r.cfg.finetune.stages
    if val:
        cell.final_val = val[max(val)]
        cell.stage_top1 = val.get(stages[0].epochs) if stages and stages[0].epochs else None
    return cell


def findings_rows(study, runs, records, outputs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The findings table: each claim of the study file, its verdict, why, and the numbers."""
    by_id = {r.id: r for r in records}
    cells = [run_cell(r, by_id.get(r.id)) for r in runs]
    by_run_id = {r.id: c for r, c in zip(runs, cells)}
    for out in outputs:
        if out["kind"] == "ensemble":  # an ensemble speaks for the write-up as far as its members do
            ids = [m["id"] if isinstance(m, dict) else m for m in out["members"]]  # summary.json: {id, top1}
            members = [by_run_id[m] for m in ids if m in by_run_id]
            cells.append(
                Cell(
                    out["name"].removeprefix(f"{study.name}-"),
                    top1=100 * out["top1"],
                    untestable=next((m.untestable for m in members if m.untestable), ""),
                    weights=next((m.weights for m in members if m.weights), ""),
                )
            )
    rows = [
        [f["claim"], f["verdict"], f["why"], f["numbers"]]
        for f in evaluate(study.spec.get("findings") or [], cells, outputs)
    ]
    return ["the write-up's finding", "verdict", "why", "the numbers"], rows


def step_sections(outputs: list[dict]) -> list[dict]:
    """Each step's output as a titled block: a table and/or a figure."""
    sections = []
    for out in outputs:
        if out["kind"] == "lr_find":
            rows = [
                [
                    k,
                    f"{v['median']:.2e}" if v["median"] else "-",
                    f"x{v['spread']:.2f}" if v["spread"] else "-",
                ]
                for k, v in out["suggestions"].items()
            ]
            sections.append(
                {
                    "title": f"Learning-rate range test: {out['run']}",
                    "table": (["suggestion", "median lr", "spread over repeats"], rows),
                    "text": "",
                    "figure": Figure("loss against learning rate, each repeat", Path(out["png"])),
                }
            )
        elif out["kind"] == "predict":
            with open(out["csv"], newline="") as f:
                rows = list(csv.reader(f))
            sections.append(
                {
                    "title": f"Unlabelled images labelled by {out['model']} ({out['predicted']} images)",
                    "table": (rows[0], rows[1:11]),
                    "text": f"the first 10 rows of {out['csv']}",
                    "figure": None,
                }
            )
    return sections


def write_study_report(study, runs, outputs: list[dict], html: Path, runs_dir) -> Path:
    ids = [r.id for r in runs]
    ensembles = [o["name"] for o in outputs if o["kind"] == "ensemble"]
    _, ensemble_folders = split_refs(ensembles, runs_dir) if ensembles else (None, [])
    records = read_runs(ids, runs_dir)
    grid = [k for r in runs for k in r.values]
    scale = study.scale_spec()
    refs = study.spec.get("reference") or []  # a list (load_study): the write-up's first, then e.g. a paper's
    with tempfile.TemporaryDirectory() as tmp:
        ctx = report_context(
            records,
            ensemble_folders,
            Path(tmp) / "curves.png",
            "model.name",
            grid[0] if grid and grid[0] != "model.name" else None,
        )
        ctx["title"] = f"{study.spec.get('title', study.spec['name'])} ({study.scale} scale)"
        ctx["study"] = {
            "writeup": study.spec.get("writeup", ""),
            "about": study.spec.get("about", ""),
            "scale": study.scale,
            "scale_note": scale.get("note", ""),
            "file": str(study.path),
            "findings": findings_rows(study, runs, records, outputs),
            "beside": beside_rows(runs, records),
            "references": [
                (reference_block(ref, records), "the write-up" if i == 0 else "the reference")
                for i, ref in enumerate(refs)
            ],
            "steps": step_sections(outputs),
        }
        page = render_html(ctx)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page)
    return html
