"""The steps of a study after its runs: lr-find, explain, ensemble and predict, each kept on a
re-run while its options and the runs it reads (their summary.json) are unchanged. A step writes
only in the study's folder and its own ensemble folder, and removes nothing it did not make."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import VisionbenchError, unknown_name
from ..runs import runs_root


def find_run(runs: list, key: str, where: str):
    found = [r for r in runs if r.key == key or r.id == key]
    if not found:
        raise unknown_name(f"run ({where})", key, sorted({r.key for r in runs}))
    return found[0]


def steps_done(folder: Path) -> dict[str, dict]:
    """The outputs of the study's last finished pass (study.json), by their step key."""
    try:
        return {o["key"]: o for o in json.loads((folder / "study.json").read_text())["steps"] if "key" in o}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or cut while written
        return {}


def step_key(step: dict, run_ids: list[str], runs_dir) -> str:
    """The step's options and the runs it reads, as they finished: a run trained again (or other
    options) makes another key, so the step is done again."""
    digest = hashlib.sha256(json.dumps(step, sort_keys=True).encode())
    for run_id in run_ids:
        digest.update((runs_root(runs_dir) / run_id / "summary.json").read_bytes())
    return digest.hexdigest()[:16]


def run_step(step: dict, study, runs: list, folder: Path, runs_dir, say, before: dict[str, dict]) -> dict:
    kind, opts = next(iter(step.items()))
    if kind == "ensemble":
        return ensemble_step(step, study, runs, runs_dir, say, before)
    if kind == "predict":
        return predict_step(opts, study, runs, folder, runs_dir, say)
    # lr_find and explain: minutes on a large network, kept when done before
    r = find_run(runs, opts["run"], kind)
    key = step_key(step, [r.id], runs_dir)
    png = folder / f"{kind}-{r.key}-{key}.png"  # the figure of these options and this run only
    if (old := before.get(key)) and png.is_file():
        say(f"{kind} {r.key}: done before, kept ({png})")
        return {**old, "png": str(png)}
    for stale in folder.glob(f"{kind}-{r.key}-*.png"):  # one step per kind and run (study_file)
        stale.unlink()
    if kind == "lr_find":
        from .lr_find import find_lr

        res = find_lr(r.cfg, repeats=opts["repeats"], iters=opts["iters"], plot=png)
        summary = {k: {"median": v["median"], "spread": v["spread"]} for k, v in res["suggestions"].items()}
        say(f"lr-find {r.key}: valley {summary['valley']['median']}")
        return {"kind": kind, "run": r.id, "png": str(png), "suggestions": summary, "key": key}
    from .explain import explain_run

    res = explain_run(r.id, runs_dir, None, opts["count"])
    shutil.copyfile(res["png"], png)  # RUN/explain/ is rewritten by any later `explain` of the run
    return {"kind": kind, "run": r.id, "png": str(png), "key": key}


def ours(folder: Path, study_ids: set[str]) -> bool:
    """Whether `folder` is an ensemble of this study's runs (so this study's to vote again)."""
    try:
        saved = json.loads((folder / "ensemble.json").read_text())
        return saved["kind"] == "ensemble" and {m["id"] for m in saved["members"]} <= study_ids
    except (OSError, ValueError, KeyError, TypeError):
        return False


def clear_ensemble(folder: Path, study_ids: set[str]) -> None:
    """Remove this study's old ensemble folder before it votes again; any other folder of that
    name (a run, a finished or unfinished one; someone else's ensemble) is refused, untouched."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        ok = False
    elif not folder.exists():
        return
    else:
        ok = ours(folder, study_ids) or not any(folder.iterdir())  # empty: cut as it was made
    if not ok:
        raise VisionbenchError(
            f"'{folder.name}' exists and is not this study's ensemble; it is never replaced",
            where=str(folder),
            fix="give the ensemble another name in the study file (steps: - ensemble: {name: ...})",
        )
    shutil.rmtree(folder)


def ensemble_step(step: dict, study, runs: list, runs_dir, say, before: dict[str, dict]) -> dict:
    from ..analysis.predictor import open_predictor
    from .ensemble import build_ensemble, evaluate_ensemble

    opts = step["ensemble"]
    name = f"{study.name}-{opts['name']}"
    members = [find_run(runs, k, "ensemble").id for k in opts["runs"]]
    tie = find_run(runs, opts["tie_break"], "ensemble").id if opts.get("tie_break") else None
    key = step_key(step, members, runs_dir)  # a member trained again: the vote is taken again
    folder = runs_root(runs_dir) / name
    if not (before.get(key) and (folder / "summary.json").is_file() and ours(folder, {r.id for r in runs})):
        clear_ensemble(folder, {r.id for r in runs})
        ens = build_ensemble(members, runs_dir, opts["vote"], tie)
        evaluate_ensemble(ens, None, runs_dir, name)
    rep = json.loads((folder / "summary.json").read_text())
    say(f"ensemble {name}: {rep['vote']} vote {rep['top1']:.2%}")
    open_predictor(name, runs_dir)  # it opens: members intact
    return {"kind": "ensemble", "name": name, "top1": rep["top1"], "members": rep["members"], "key": key}


def predict_step(opts: dict, study, runs: list, folder: Path, runs_dir, say) -> dict:
    from ..analysis.predictor import open_predictor
    from .predict import predict_folder

    ensembles = [s["ensemble"]["name"] for s in study.steps if "ensemble" in s]
    model = opts["model"]
    ref = f"{study.name}-{model}" if model in ensembles else find_run(runs, model, "predict").id
    predictor = open_predictor(ref, runs_dir)
    images = opts["images"]
    if images == "unlabelled":
        images = unlabelled_folder(predictor, folder / f"unlabelled-{opts['count']}", opts["count"])
    out = folder / f"predictions-{model}.csv"  # one file per model (study_file refuses two steps of one)
    res = predict_folder(predictor, Path(images), out)
    say(f"predict {ref}: {res['predicted']} images -> {out}")
    return {"kind": "predict", "model": ref, "csv": str(out), "predicted": res["predicted"]}


def unlabelled_folder(predictor, folder: Path, count: int) -> Path:
    """A folder of `count` test images as PNG files named by number, their labels hidden: the
    write-ups' 'folder of unlabelled images' made from data no run trained on."""
    from PIL import Image

    from ..analysis.predictor import load_test_split

    if folder.is_dir() and any(folder.iterdir()):
        return folder
    images, _ = load_test_split(predictor)
    pick = np.random.default_rng(0).permutation(len(images))[:count]
    folder.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(sorted(pick)):
        arr = np.asarray(images[i]).transpose(1, 2, 0)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(folder / f"{n:04d}.png")
    return folder
