"""`visionbench runs`: one row per run folder and per saved ensemble, read from their files."""

from __future__ import annotations

from pathlib import Path

from ..errors import VisionbenchError
from .record import Run

RUN_FILES = ("config.yaml", "run.json", "summary.json", "metrics.jsonl", "checkpoint.pt", "last.safetensors")


def list_runs(root: Path) -> list[dict]:
    """One row per run folder and per saved ensemble (`kind` says which), newest first:
    unfinished and damaged ones included (one with a damaged or missing file says so; one bad
    file never hides the others). A folder holding no run file is not a run: sweeps/, a
    study's folder (empty while its runs train), an empty folder (a run made by an older
    version stopped in its first seconds: its name is reused); nor are hidden ones."""
    rows = []
    if not root.is_dir():
        return rows
    for path in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if path.name.startswith(".") or not path.is_dir():
            continue
        if (path / "ensemble.json").is_file():
            rows.append(ensemble_row(Run(path)))
            continue
        if not any((path / f).is_file() for f in RUN_FILES):
            continue
        run = Run(path)
        status, summary, meta = run.record()
        last = (run.metrics() or [{}])[-1]
        rows.append(
            {
                "id": run.id,
                "kind": "run",
                "status": status,
                "data": meta.get("data"),
                "model": meta.get("model"),
                "epochs": f"{last.get('epoch', 0)}/{meta.get('epochs', '?')}",
                "val_acc": number(last.get("val_acc")),
                "test_acc": number(summary.get("test_acc")),
                "seconds": number(summary.get("train_seconds")),
            }
        )
    return rows


def number(value) -> float | None:
    """A number read from a run's files, or None (a damaged file may hold anything)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ensemble_row(folder: Run) -> dict:
    """A saved ensemble (`visionbench ensemble --save`) as a row of the runs list: its vote and
    members in place of the model, the vote's test accuracy as measured when it was saved."""
    try:
        meta, summary = folder.read_json("ensemble.json"), folder.read_json("summary.json")
        members = [m.get("id", "?") if isinstance(m, dict) else "?" for m in meta.get("members", [])]
        status = "finished" if summary else "saved"
    except (VisionbenchError, TypeError):
        meta, summary, members, status = {}, {}, [], "damaged: ensemble.json or summary.json"
    return {
        "id": folder.id,
        "kind": "ensemble",
        "status": status,
        "data": None,
        "model": f"{meta.get('vote', '?')} vote: {', '.join(members)}",
        "epochs": "-",
        "val_acc": None,
        "test_acc": number(summary.get("top1")),
        "seconds": None,
    }
