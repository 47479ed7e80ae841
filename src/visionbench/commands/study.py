"""`visionbench study FILE --scale smoke|cpu|full`: a write-up as one command - the runs of a
grid, the steps after them (lr-find, ensemble, predict, explain, compare) and one HTML report
with the write-up's own figures beside ours.

A study file (YAML; examples/writeups/ holds one per write-up):

    name: writeup-002                 # run ids: <name>-<scale>-<run key>
    title: ...                        # the report's heading
    writeup: "002"                    # which write-up, and `about`: one paragraph for the report
    reference: writeup-002-cifar10    # analysis/references.yaml entries beside ours: one, or a list
                                      # (the write-up's first, then e.g. a paper's table)
    set: {key: value}                 # every run, every scale
    scales:                           # smoke (<= 2 min, the tests), cpu (<= 45 min, 2 cores), full
      smoke: {set: {...}, runs: {RUN: {key: value, grid: {...}} | skip}, steps: {KIND: {option: value}},
              note: "what differs at this scale"}
                                      # the scale's `set`: defaults a run's own `set` beats; a scale
                                      # changes a run only through its `runs:` entry
    runs:
      RUN: {set: {key: value}, grid: {key: [values]}, note: "our choices where the write-up is silent",
            writeup: {top1: 66.71, setting: "...", states: {optim.lr: 0.001, params: 62006}}}
                                      # writeup: one, or a list of {top1, setting, states, for: {key: value}}
                                      # (`for`: the grid cell its figure is of; `states`: what the
                                      # write-up states, checked against the full plan)
    steps:                            # in order, after the runs
      - lr_find: {run: RUN, repeats: 3}
      - ensemble: {name: NAME, runs: [RUN, ...], vote: hard, tie_break: RUN}
      - predict: {model: RUN or ensemble NAME, images: unlabelled | PATH, count: 50}
      - explain: {run: RUN, count: 8}
    findings:                         # the write-up's conclusions, checked (analysis/findings.py)
      - {claim: "A beats B", check: {better: [A, B]}, noise: 1.0, needs: imagenet}

A re-run skips finished runs and resumes interrupted ones (the sweep's rules); an lr-find or
explain step is kept when its options and the run it reads (its summary.json) are unchanged and
its figure is still in the study folder; an ensemble when its summary exists. A run asking for
pretrained weights that are neither on disk nor downloadable is given our own pretraining
instead - the same network trained from scratch on the first half of the classes of the same
training split - and the report says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RunConfig, load_yaml
from ..errors import VisionbenchError, did_you_mean, unknown_name
from ..runs import Run, runs_root
from .search import check_results
from .sweep import Cell, cell_id, run_cell, run_grid

SCALES = ("smoke", "cpu", "full")
FILE_KEYS = ("name", "title", "writeup", "about", "reference", "set", "scales", "runs", "steps", "findings")
RUN_KEYS = ("set", "grid", "writeup", "note")
STEPS = ("lr_find", "ensemble", "predict", "explain")


@dataclass
class StudyRun:
    """One run of the study: its key in the file, its run id, config and the write-up's figure."""

    key: str
    id: str
    cfg: RunConfig
    values: dict = field(default_factory=dict)  # the grid values of this cell
    writeup: dict = field(default_factory=dict)  # {top1, setting}: what the write-up reported
    note: str = ""  # the study file's note on the run; our pretraining in place of unavailable weights
    # computed (commands/study_plan.py): this scale's plan against the full plan, then the full
    # plan against the write-up's stated settings (`writeup: {states: {...}}`)
    differences: list[str] = field(default_factory=list)
    full: RunConfig | None = None  # the same run's plan at full scale: what its findings are about


@dataclass
class Study:
    path: Path
    spec: dict
    scale: str

    @property
    def name(self) -> str:
        return f"{self.spec['name']}-{self.scale}"

    def scale_spec(self) -> dict:
        return (self.spec.get("scales") or {}).get(self.scale) or {}


def load_study(path: str | Path, scale: str) -> Study:
    path = Path(path)
    if scale not in SCALES:
        raise unknown_name("scale", scale, SCALES)
    spec = load_yaml(path)
    for key in spec:
        if key not in FILE_KEYS:
            raise VisionbenchError(
                f"unknown study key '{key}'.{did_you_mean(key, FILE_KEYS)}", where=str(path)
            )
    if not spec.get("name") or not spec.get("runs"):
        raise VisionbenchError("a study needs a name and runs", where=str(path), fix="see examples/writeups/")
    for key, run in spec["runs"].items():
        bad = [k for k in (run or {}) if k not in RUN_KEYS]
        if bad:
            raise VisionbenchError(
                f"run '{key}': unknown key '{bad[0]}'.{did_you_mean(bad[0], RUN_KEYS)}", where=str(path)
            )
    from ..analysis.compare import reference

    refs = spec.get("reference") or []
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise VisionbenchError(
            f"reference: {refs!r} is not a name or a list of names",
            where=str(path),
            fix="e.g. reference: [writeup-003-mnist-resnet50, rsb-resnet50] (analysis/references.yaml)",
        )
    for name in refs:  # a typo is said now, not after the runs
        try:
            reference(name)
        except VisionbenchError as e:
            raise VisionbenchError(e.what, where=str(path), fix=e.fix) from None
    spec["reference"] = refs  # a list from here on
    for step in spec.get("steps") or []:
        kind = next(iter(step))
        if kind not in STEPS:
            raise VisionbenchError(f"unknown step '{kind}'.{did_you_mean(kind, STEPS)}", where=str(path))
    return Study(path, spec, scale)


def writeup_for(writeup, values: dict) -> dict:
    """The write-up's figure for one cell: `writeup` is one {top1, setting, for} or a list of
    them, each `for` naming the grid values its figure belongs to (none: every cell)."""
    entries = writeup if isinstance(writeup, list) else [writeup or {}]
    for entry in entries:
        if all(values.get(k) == v for k, v in (entry.get("for") or {}).items()):
            return entry
    return {}


def plan(study: Study, data_dir: str | Path | None = None) -> list[StudyRun]:
    """Every run of the study at its scale, configs resolved up front (a bad key fails first);
    `data_dir` (--data-dir) is every run's data root, as `visionbench train --data-dir` sets it.
    Precedence (commands/study_plan.py): the study's `set` < the scale's `set` < the run's own
    `set` < the scale's entry for the run < the grid cell. Each run is also resolved at `full`
    scale: a shortened run keeps its schedule's shape, and its differences from the full plan
    and from the write-up's stated settings are computed."""
    from ..analysis.findings import check_findings
    from .study_plan import keep_shape, resolve, run_overrides, scale_differences, writeup_differences

    ensembles = [s["ensemble"]["name"] for s in study.spec.get("steps") or [] if "ensemble" in s]
    check_findings(study.spec.get("findings"), [*study.spec["runs"], *ensembles], str(study.path))
    root = [f"data.dir={json.dumps(str(data_dir))}"] if data_dir else []
    per_run = study.scale_spec().get("runs") or {}
    runs = []
    for key, run in study.spec["runs"].items():
        run = run or {}
        if per_run.get(key) == "skip":
            continue
        grid = (per_run.get(key) or {}).get("grid") or run.get("grid") or {}  # a scale may sweep fewer values
        combos = [dict(zip(grid, c)) for c in itertools.product(*grid.values())] or [{}]
        for values in combos:
            run_id = cell_id(f"{study.name}-{key}", values) if values else f"{study.name}-{key}"
            overrides, explicit = run_overrides(study.spec, study.scale, key, run, values)
            full_overrides, _ = run_overrides(study.spec, "full", key, run, values)
            full = resolve(full_overrides + root)
            cfg = keep_shape(resolve(overrides + root + [f"name={run_id}"]), full, explicit)
            writeup = writeup_for(run.get("writeup"), values)
            differences = scale_differences(cfg, full) + writeup_differences(full, writeup.get("states"))
            runs.append(StudyRun(key, run_id, cfg, values, writeup, run.get("note", ""), differences, full))
    return runs


def run_study(
    path: str | Path,
    scale: str,
    runs_dir: str | Path | None = None,
    say: Callable[[str], None] = print,
    data_dir: str | Path | None = None,
) -> dict:
    """Train what is not finished, run the steps, write the report; returns where it is."""
    study = load_study(path, scale)
    runs = plan(study, data_dir)
    folder = runs_root(runs_dir) / study.name
    folder.mkdir(parents=True, exist_ok=True)
    say(f"study {study.name}: {len(runs)} runs, {len(study.spec.get('steps') or [])} steps")
    runs = [substitute_pretraining(r, runs_dir, say) for r in runs]
    results = run_grid(
        [Cell(r.id, r.values, r.cfg) for r in runs],
        runs_dir,
        say=say,
        fix=f"the study file changed since that run was made: remove the run folder to train it again "
        f"(or all of {runs_root(runs_dir) / study.name}-* to start the study afresh)",
    )
    check_results(results)
    statuses = {r["id"]: r["status"] for r in results}
    step_opts = study.scale_spec().get("steps") or {}  # per kind, e.g. {lr_find: {iters: 20}}
    steps = [
        {k: {**(v or {}), **(step_opts.get(k) or {})}}
        for step in study.spec.get("steps") or []
        for k, v in step.items()
    ]
    before = steps_done(folder)
    outputs = [run_step(step, study, runs, folder, runs_dir, say, before) for step in steps]
    from ..analysis.study_report import write_study_report

    report = write_study_report(study, runs, outputs, folder / "report.html", runs_dir)
    (folder / "study.json").write_text(
        json.dumps(
            {"study": study.spec["name"], "scale": scale, "runs": [r.id for r in runs], "steps": outputs}
        )
    )
    say(f"report: {report}")
    return {"study": study.name, "report": str(report), "runs": statuses, "steps": outputs}


# --- pretrained weights, or our own pretraining ----------------------------------------------


def pretrained_available(cfg: RunConfig) -> bool:
    """Whether model.pretrained can be honoured here: the weights are on disk or download."""
    import torch

    from ..models import create_model

    try:  # on the meta device: no memory, no init; the weights still download or are refused
        with torch.device("meta"):
            create_model(cfg.model.name, num_classes=2, pretrained=True)
    except VisionbenchError:
        return False
    return True


def substitute_pretraining(r: StudyRun, runs_dir, say) -> StudyRun:
    """A run that wants pretrained weights that cannot be had starts instead from our own
    pretraining run (trained first): the same network, from scratch, on the first half of
    the classes of the same training split, labelled as such in the report."""
    if not r.cfg.model.pretrained:
        return r
    pre_id = f"{r.id}-ourpretrain"
    saved = Run(runs_root(runs_dir) / r.id)
    if (saved.path / "config.yaml").is_file():  # decided when it started: keep that decision
        if saved.config().model.weights != f"run:{pre_id}":
            return r
    elif pretrained_available(r.cfg):
        return r
    from ..data import load_dataset

    n = len(load_dataset(r.cfg.data.name, r.cfg.data.dir).classes)
    half = list(range(max(1, n // 2)))
    pre_cfg = r.cfg.model_copy(
        update={
            "name": pre_id,
            "model": r.cfg.model.model_copy(update={"pretrained": False}),
            "data": r.cfg.data.model_copy(update={"classes": half}),
            "finetune": type(r.cfg.finetune)(),
        }
    )
    note = f"our pretraining ({pre_id}: classes {half[0]}-{half[-1]} of the same train split), not ImageNet's"
    say(
        f"note: pretrained weights for {r.cfg.model.name} are neither on disk nor downloadable: {r.id} uses {note}"
    )
    res = run_cell(Cell(pre_id, {}, pre_cfg), runs_dir)
    if res["status"] not in ("trained", "resumed", "skipped"):
        raise VisionbenchError(
            f"our pretraining run {pre_id} did not finish: {res.get('error', res['status'])}",
            fix="run the study again: finished runs are skipped, interrupted ones resumed",
        )
    model = r.cfg.model.model_copy(update={"pretrained": False, "weights": f"run:{pre_id}"})
    note = "; ".join(n for n in (r.note, note) if n)
    return dataclasses.replace(r, cfg=r.cfg.model_copy(update={"model": model}), note=note)


# --- the steps after the runs -------------------------------------------------------------------


def find_run(runs: list[StudyRun], key: str, where: str) -> StudyRun:
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


def step_key(step: dict, run_id: str, runs_dir) -> str:
    """The step's options and the run it reads, as it finished: a run trained again (or other
    options) makes another key, so the step is done again."""
    summary = (runs_root(runs_dir) / run_id / "summary.json").read_bytes()
    return hashlib.sha256(json.dumps(step, sort_keys=True).encode() + summary).hexdigest()[:16]


def run_step(
    step: dict, study: Study, runs: list[StudyRun], folder: Path, runs_dir, say, before: dict[str, dict]
) -> dict:
    kind, opts = next(iter(step.items()))
    opts = opts or {}
    if kind in ("lr_find", "explain"):  # minutes on a large network: kept when done before
        r = find_run(runs, opts["run"], kind)
        key = step_key(step, r.id, runs_dir)
        png = folder / f"{kind}-{r.key}-{key}.png"  # the figure of these options and this run only
        if (old := before.get(key)) and png.is_file():
            say(f"{kind} {r.key}: done before, kept ({png})")
            return {**old, "png": str(png)}
        for stale in folder.glob(f"{kind}-{r.key}-*.png"):
            stale.unlink()
    if kind == "lr_find":
        from .lr_find import find_lr

        res = find_lr(r.cfg, repeats=opts.get("repeats", 3), iters=opts.get("iters", 100), plot=png)
        summary = {k: {"median": v["median"], "spread": v["spread"]} for k, v in res["suggestions"].items()}
        say(f"lr-find {r.key}: valley {summary['valley']['median']}")
        return {"kind": kind, "run": r.id, "png": str(png), "suggestions": summary, "key": key}
    if kind == "explain":
        from .explain import explain_run

        res = explain_run(r.id, runs_dir, None, opts.get("count", 8))
        shutil.copyfile(res["png"], png)  # RUN/explain/ is rewritten by any later `explain` of the run
        return {"kind": kind, "run": r.id, "png": str(png), "key": key}
    if kind == "ensemble":
        return ensemble_step(opts, study, runs, runs_dir, say)
    return predict_step(opts, study, runs, folder, runs_dir, say)


def ensemble_step(opts: dict, study: Study, runs: list[StudyRun], runs_dir, say) -> dict:
    from ..analysis.predictor import open_predictor
    from .ensemble import build_ensemble, evaluate_ensemble

    name = f"{study.name}-{opts['name']}"
    members = [find_run(runs, k, "ensemble").id for k in opts["runs"]]
    tie = find_run(runs, opts["tie_break"], "ensemble").id if opts.get("tie_break") else None
    saved = runs_root(runs_dir) / name / "summary.json"
    if not saved.is_file():
        shutil.rmtree(saved.parent, ignore_errors=True)  # cut before its summary: made again
        ens = build_ensemble(members, runs_dir, opts.get("vote", "hard"), tie)
        evaluate_ensemble(ens, None, runs_dir, name)
    rep = json.loads(saved.read_text())
    say(f"ensemble {name}: {rep['vote']} vote {rep['top1']:.2%}")
    open_predictor(name, runs_dir)  # it opens: members intact
    return {"kind": "ensemble", "name": name, "top1": rep["top1"], "members": rep["members"]}


def predict_step(opts: dict, study: Study, runs: list[StudyRun], folder: Path, runs_dir, say) -> dict:
    from ..analysis.predictor import open_predictor
    from .predict import predict_folder

    ref = opts["model"]
    ensemble = runs_root(runs_dir) / f"{study.name}-{ref}"
    ref = ensemble.name if (ensemble / "ensemble.json").is_file() else find_run(runs, ref, "predict").id
    predictor = open_predictor(ref, runs_dir)
    images = opts.get("images", "unlabelled")
    if images == "unlabelled":
        images = unlabelled_folder(predictor, folder / "unlabelled", opts.get("count", 50))
    out = folder / "predictions.csv"
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
