"""Runs side by side: test accuracy as a rows x columns table of any two config keys (mean ± std
over seeds), with parameters, training time and images/s, and published references beside it."""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import yaml

from ..errors import VisionbenchError, unknown_name
from ..runs import Run, runs_root


@dataclass
class RunRecord:
    """What a comparison reads from one finished run folder."""

    id: str
    path: Path
    config: dict  # flat: {"model.name": "resnet18", ...}
    summary: dict
    meta: dict  # run.json
    metrics: list[dict]

    @classmethod
    def read(cls, run: Run) -> RunRecord:
        config = run.config_tree()  # damaged: an error naming the file
        return cls(
            run.id,
            run.path,
            flatten(config),
            run.read_json("summary.json"),
            run.read_json("run.json"),
            run.metrics(),
        )

    @property
    def images_per_s(self) -> float | None:
        """Training images over training seconds, all epochs together."""
        seconds = sum(r.get("seconds", 0) for r in self.metrics)
        seen = sum(r.get("images_per_s", 0) * r.get("seconds", 0) for r in self.metrics)
        return seen / seconds if seconds else None


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            flat |= flatten(v, f"{prefix}{k}.")
        else:
            flat[prefix + k] = v
    return flat


def read_runs(refs: list[str] | None = None, runs_dir: str | Path | None = None) -> list[RunRecord]:
    """The named runs, or every finished run under the runs root; a named unfinished run is an
    error, and a named damaged one; of every run, a damaged one is left out, with a warning.
    Saved ensembles are not runs: they are skipped here (a report shows them on their own)."""
    root = runs_root(runs_dir)
    if refs:
        runs = [Run.open(r, root) for r in refs]
        unfinished = [r.id for r in runs if not r.finished]
        if unfinished:
            raise VisionbenchError(
                f"run '{unfinished[0]}' has not finished: it has no test accuracy to compare",
                fix="finish it with `visionbench train --resume`, or leave it out",
            )
        return [RunRecord.read(r) for r in runs]
    records = []
    for p in sorted(root.glob("*/summary.json")):
        if (p.parent / "ensemble.json").is_file():
            continue
        try:
            record = RunRecord.read(Run(p.parent))
            if not isinstance(record.summary.get("test_acc"), (int, float)):
                raise VisionbenchError("no test accuracy in its summary.json")
            records.append(record)
        except VisionbenchError as e:  # never the reason nothing is compared
            warnings.warn(f"run {p.parent.name} left out: {e.what}", stacklevel=2)
    if not records:
        raise VisionbenchError(
            f"no finished runs to compare in {root}", fix="train some, or name run folders"
        )
    return records


def label(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "-" if value is None else str(value)


def default_cols(records: list[RunRecord]) -> str:
    """Recipe when runs carry one (write-up 001's table: model x recipe), else the dataset."""
    return "recipe" if any(r.config.get("recipe") for r in records) else "data.name"


def compare_table(runs: list[RunRecord], rows: str = "model.name", cols: str | None = None) -> dict:
    """Group runs by the values of two config keys; per group: seeds, test accuracy mean ± std
    (sample std, over the group's runs), parameters, training seconds and images/s (means)."""
    cols = cols or default_cols(runs)
    keys = sorted({k for r in runs for k in r.config})
    for key in (rows, cols):
        if key not in keys:
            raise unknown_name("config key", key, keys)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((label(r.config.get(rows)), label(r.config.get(cols))), []).append(r)
    cells = []
    for (row, col), members in groups.items():
        acc = np.array([m.summary["test_acc"] for m in members], dtype=float) * 100
        cells.append(
            {
                "row": row,
                "col": col,
                "n": len(members),
                "runs": [m.id for m in members],
                "seeds": [m.config.get("seed") for m in members],
                "acc_mean": float(acc.mean()),
                "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
                # beside top-1: a class the runs never predict shows in these (None: older runs)
                "balanced_acc_mean": percent(mean_of([m.summary.get("balanced_acc") for m in members])),
                "macro_f1_mean": percent(mean_of([m.summary.get("macro_f1") for m in members])),
                "params": mean_of([m.summary.get("params") for m in members]),
                "train_seconds": mean_of([m.summary.get("train_seconds") for m in members]),
                "images_per_s": mean_of([m.images_per_s for m in members]),
            }
        )
    return {
        "rows": rows,
        "cols": cols,
        "row_values": sorted({c["row"] for c in cells}, key=natural),
        "col_values": sorted({c["col"] for c in cells}, key=natural),
        "cells": sorted(cells, key=lambda c: (natural(c["row"]), natural(c["col"]))),
    }


def mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def natural(text: str) -> list:
    """resnet18 before resnet101: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def accuracy_text(cell: dict | None) -> str:
    if cell is None:
        return ""
    std = f" ± {cell['acc_std']:.2f}" if cell["acc_std"] is not None else ""
    return f"{cell['acc_mean']:.2f}{std} (n={cell['n']})"


def pivot(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the accuracy grid: one row per rows-value, one column per cols-value."""
    at = {(c["row"], c["col"]): c for c in table["cells"]}
    header = [f"{table['rows']} \\ {table['cols']}", *table["col_values"]]
    body = [[r, *(accuracy_text(at.get((r, c))) for c in table["col_values"])] for r in table["row_values"]]
    return header, body


DETAIL = ["test acc % (mean ± std)", "balanced %", "macro-F1 %", "seeds", "params", "train s", "images/s"]


def details(table: dict) -> tuple[list[str], list[list[str]]]:
    """One row per group with the costs beside the accuracy."""
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"
    body = [
        [
            c["row"],
            c["col"],
            accuracy_text(c),
            fmt(c.get("balanced_acc_mean"), ".2f"),
            fmt(c.get("macro_f1_mean"), ".2f"),
            ",".join(label(s) for s in c["seeds"]),
            fmt(c["params"], ",.0f"),
            fmt(c["train_seconds"], ".1f"),
            fmt(c["images_per_s"], ",.0f"),
        ]
        for c in table["cells"]
    ]
    return [table["rows"], table["cols"], *DETAIL], body


def to_csv(table: dict) -> str:
    """Tidy CSV, one row per group, numbers unformatted (for scripts and spreadsheets)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = [
        *("acc_mean", "acc_std", "balanced_acc_mean", "macro_f1_mean"),
        *("n", "params", "train_seconds", "images_per_s"),
    ]
    w.writerow([table["rows"], table["cols"], *fields, "seeds", "runs"])
    for c in table["cells"]:
        w.writerow(
            [
                c["row"],
                c["col"],
                *(c[f] for f in fields),
                " ".join(map(label, c["seeds"])),
                " ".join(c["runs"]),
            ]
        )
    return buf.getvalue()


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(map(esc, row)) + " |" for row in body])


# --- published references -------------------------------------------------------------------


def load_references() -> dict:
    return yaml.safe_load(files("visionbench.analysis").joinpath("references.yaml").read_text())


def reference(name: str) -> dict:
    refs = load_references()
    if name not in refs:
        raise unknown_name("reference", name, refs)
    return refs[name]


def our_setting(runs: list[RunRecord]) -> dict:
    """Data, epochs and resolution of our runs, in the words the references use."""
    data, epochs, res = set(), set(), set()
    for r in runs:
        report = dict_or_empty(r.meta.get("data_report"))  # run.json may lack it, or be damaged
        train = dict_or_empty(report.get("splits")).get("train")
        data.add(
            f"{r.config.get('data.name')} ({train:,} train images)"
            if isinstance(train, int)
            else str(r.config.get("data.name"))
        )
        epochs.add(str(r.summary.get("epochs", r.config.get("train.epochs"))))
        shape, side = report.get("shape"), r.config.get("model.input_size")
        if side and shape and side != shape[-1]:  # resized on the device: the network sees `side`
            res.add(f"{side} px (from {shape[-1]} px)")
        else:
            res.add(f"{shape[-1]} px" if shape else "?")
    return {
        "data": ", ".join(sorted(data)),
        "epochs": ", ".join(sorted(epochs, key=natural)),
        "resolution": ", ".join(sorted(res, key=natural)),
    }


def dict_or_empty(value) -> dict:
    return value if isinstance(value, dict) else {}


def reference_block(name: str, runs: list[RunRecord]) -> dict:
    """The reference's rows and, side by side with ours, its data, epochs and resolution."""
    ref = reference(name)
    ours = our_setting(runs)
    return {
        "name": name,
        "title": ref["title"],
        "source": ref["source"],
        "notes": ref.get("notes", ""),
        "differences": [
            {"aspect": k, "ours": ours[k], "reference": str(ref[k])} for k in ("data", "epochs", "resolution")
        ],
        "header": ["model", "recipe", "top-1 %", "epochs"],
        "rows": [[r["model"], r["recipe"], f"{r['top1']:.2f}", label(r.get("epochs"))] for r in ref["rows"]],
    }


def to_markdown(table: dict, refs: list[dict] = ()) -> str:
    parts = [
        f"Test accuracy (%), mean ± std over seeds: rows {table['rows']}, columns {table['cols']}.",
        markdown_table(*pivot(table)),
        markdown_table(*details(table)),
    ]
    for ref in refs:
        parts += reference_markdown(ref)
    return "\n\n".join(parts) + "\n"


def reference_markdown(ref: dict) -> list[str]:
    """A reference_block as markdown paragraphs: what it is, its rows, how its setting differs."""
    return [
        f"Reference **{ref['name']}**: {ref['title']}. Source: {ref['source']}.",
        markdown_table(ref["header"], ref["rows"]),
        markdown_table(
            ["", "ours", "reference"],
            [[d["aspect"], d["ours"], d["reference"]] for d in ref["differences"]],
        ),
    ]
