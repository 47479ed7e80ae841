"""`visionbench ensemble`: runs combined by vote, evaluated, and saved as a folder on request."""

from __future__ import annotations

from pathlib import Path

from ..analysis.evaluation import bundle_name, evaluate_predictor
from ..analysis.predictor import Ensemble, load_member
from ..errors import VisionbenchError
from ..runs import Run, runs_root


def build_ensemble(
    refs: list[str],
    runs_dir: str | Path | None = None,
    vote: str = "hard",
    tie_break: str | None = None,
    weights: str | None = None,
    run_weights: str = "last",
    device: str = "auto",
) -> Ensemble:
    """An ensemble from CLI arguments: run refs, the tie-break run (one of them), "1,1,2" weights."""
    if len(refs) < 2:
        raise VisionbenchError("an ensemble needs at least two runs", fix="name two or more runs")
    root = runs_root(runs_dir)
    members = [load_member(r, root, run_weights, device) for r in refs]
    index = 0
    if tie_break is not None:
        matches = [i for i, (r, m) in enumerate(zip(refs, members)) if tie_break in (r, m.id)]
        if not matches:
            raise VisionbenchError(
                f"--tie-break '{tie_break}' is not one of the runs", fix=f"choose one of: {', '.join(refs)}"
            )
        index = matches[0]
    try:
        w = [float(v) for v in weights.split(",")] if weights else []
    except ValueError:
        raise VisionbenchError(
            f"cannot read --weights '{weights}'", fix="write numbers, e.g. 1,1,2"
        ) from None
    return Ensemble(members, vote, w, index)


def save_ensemble(ens: Ensemble, runs_dir: str | Path | None, name: str) -> Path:
    """The ensemble's folder NAME in the runs folder, with its ensemble.json."""
    root = runs_root(runs_dir)
    if (root / name).exists():
        raise VisionbenchError(
            f"'{name}' exists; it is never overwritten", where=str(root / name), fix="choose another name"
        )
    folder = Run.create(root, name).path  # the same naming rules as runs
    ens.path = folder
    Run(folder).write_json("ensemble.json", ens.to_json())
    return folder


def evaluate_ensemble(ens: Ensemble, tta: str | None = None, runs_dir=None, save: str | None = None) -> dict:
    """`visionbench ensemble`: evaluate; with `save`, the ensemble's folder with its bundle
    and a summary.json of what was measured."""
    folder = save_ensemble(ens, runs_dir, save) if save else None
    rep = evaluate_predictor(ens, tta, folder / bundle_name(ens, tta) if folder else None)
    if folder:
        keys = ("vote", "top1", "map", "n", "members", "agreement", "tie_break", "weights")
        Run(folder).write_json("summary.json", {k: rep[k] for k in keys if k in rep})  # map: multi-label
    return rep
