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
      - lr_find: {run: RUN, repeats: 3, iters: 200}
      - ensemble: {name: NAME, runs: [RUN, ...], vote: hard, tie_break: RUN}
      - predict: {model: RUN or ensemble NAME, images: unlabelled | PATH, count: 50}
      - explain: {run: RUN, count: 8}
    findings:                         # the write-up's conclusions, checked (analysis/findings.py)
      - {claim: "A beats B", check: {better: [A, B]}, noise: 1.0, needs: imagenet}

The file is checked whole before the first run trains (study_file.py: every key, shape, name and
run config at every scale). `key=value` overrides set every run's config over the file's. A
re-run skips finished runs and resumes interrupted ones (the sweep's rules); an lr-find, explain
or ensemble step is kept when its options and the runs it reads (their summary.json) are
unchanged (steps in study_steps.py). A run asking for
pretrained weights that are neither on disk nor downloadable is given our own pretraining
instead - the same network trained from scratch on the first half of the classes of the same
training split - and the report says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig, resolve_config
from ..errors import VisionbenchError, unknown_name, write_error
from ..runs import Run, runs_root
from .search import check_results
from .study_file import SCALES, check_steps, read_study_file
from .study_steps import run_step, steps_done
from .sweep import Cell, cell_id, run_cell, run_grid


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
    overrides: list[str] = field(default_factory=list)  # key=value for every run (the command line's)
    steps: list[dict] = field(default_factory=list)  # at this scale, checked, options filled in

    @property
    def name(self) -> str:
        return f"{self.spec['name']}-{self.scale}"

    def scale_spec(self) -> dict:
        return (self.spec.get("scales") or {}).get(self.scale) or {}


def load_study(path: str | Path, scale: str, overrides: list[str] = ()) -> Study:
    """The study at `scale`, the whole file checked first - its keys and shapes, every run's
    config at every scale, every step's names - so a typo is said before any run trains."""
    path = Path(path)
    if scale not in SCALES:
        raise unknown_name("scale", scale, SCALES)
    check_overrides(list(overrides))
    spec = read_study_file(path)
    spec["reference"] = check_references(spec.get("reference"), path)  # a list from here on
    for other in SCALES:
        checked = Study(path, spec, other, list(overrides))
        checked.steps = check_scale(checked)
        if other == scale:
            study = checked
    return study


def check_overrides(overrides: list[str]) -> None:
    """A bad key=value (a key or a value out of range) is said as the command line's."""
    try:
        resolve_config([], overrides)
    except VisionbenchError as e:
        raise VisionbenchError(e.what, "the key=value arguments", e.fix) from None


def check_references(refs, path: Path) -> list[str]:
    from ..analysis.compare import reference

    refs = [refs] if isinstance(refs, str) else refs or []
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
    return refs


def check_scale(study: Study) -> list[dict]:
    """Every run's config at the study's scale (a bad value is said with the scale), and its
    steps checked against the runs made there; returns the steps."""
    try:
        runs = plan(study)
    except VisionbenchError as e:
        where = f"{study.path}, at scale {study.scale}"
        raise VisionbenchError(e.what, where if e.where in (None, "config") else e.where, e.fix) from None
    swept = {k for r in runs for k in r.values} & {o.split("=", 1)[0].strip() for o in study.overrides}
    if swept:  # every cell of the grid would be the same run under another id
        raise VisionbenchError(
            f"the override of '{sorted(swept)[0]}' sets a key a grid of the study sweeps",
            where=f"{study.path}, at scale {study.scale}",
            fix="leave that override out, or change the grid in the study file",
        )
    keys = {r.key: sum(o.key == r.key for o in runs) for r in runs}
    ids = {r.id for r in runs} | {f"{r.id}-ourpretrain" for r in runs if r.cfg.model.pretrained}
    skipped = set(study.spec["runs"]) - set(keys)
    return check_steps(study.spec, study.scale, study.path, keys, skipped, ids, study.name)


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
            overrides += study.overrides  # the command line's, as `train` takes them: last
            explicit |= {o.split("=", 1)[0].strip() for o in study.overrides}  # taken as they are
            full_overrides, _ = run_overrides(study.spec, "full", key, run, values)
            try:  # a bad value at full is said there, whichever scale is planned
                full = resolve(full_overrides + root)
            except VisionbenchError as e:
                raise VisionbenchError(e.what, where=f"{study.path}, at scale full", fix=e.fix) from None
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
    overrides: list[str] = (),
) -> dict:
    """Train what is not finished, run the steps, write the report; returns where it is.
    `overrides` (key=value) set every run's config over the file's, and are recorded."""
    study = load_study(path, scale, overrides)
    runs = plan(study, data_dir)
    folder = study_folder(runs_root(runs_dir) / study.name)
    said = f" with {' '.join(study.overrides)}" if study.overrides else ""
    say(f"study {study.name}: {len(runs)} runs, {len(study.steps)} steps{said}")
    fix = (
        f"the study file (or a key=value) changed since that run was made: remove the run folder to train it again "
        f"(or all of {runs_root(runs_dir) / study.name}-* to start the study afresh)"
    )
    check_before_pretraining(runs, runs_dir, fix)
    runs = [substitute_pretraining(r, runs_dir, say) for r in runs]
    results = run_grid([Cell(r.id, r.values, r.cfg) for r in runs], runs_dir, say=say, fix=fix)
    check_results(results)
    statuses = {r["id"]: r["status"] for r in results}
    before = steps_done(folder)
    outputs = [run_step(step, study, runs, folder, runs_dir, say, before) for step in study.steps]
    from ..analysis.study_report import write_study_report

    report = write_study_report(study, runs, outputs, folder / "report.html", runs_dir)
    record = {"study": study.spec["name"], "scale": scale, "overrides": study.overrides}
    (folder / "study.json").write_text(json.dumps({**record, "runs": [r.id for r in runs], "steps": outputs}))
    say(f"report: {report}")
    return {
        "study": study.name,
        "report": str(report),
        "overrides": study.overrides,
        "runs": statuses,
        "steps": outputs,
    }


def check_before_pretraining(runs: list[StudyRun], runs_dir, fix: str) -> None:
    """What run_grid checks, checked before any of our pretraining trains (minutes to hours):
    no run (or pretraining run) of the study is another process's, and no run already made
    (save one that starts from our pretraining, checked once that is decided) has other settings."""
    from .sweep import check_unchanged, check_unowned

    cells = [Cell(r.id, r.values, r.cfg) for r in runs]
    check_unowned(
        cells + [Cell(f"{r.id}-ourpretrain", {}, r.cfg) for r in runs if r.cfg.model.pretrained], runs_dir
    )

    def substituted(cell: Cell) -> bool:
        saved = runs_root(runs_dir) / cell.id / "config.yaml"
        return saved.is_file() and Run(saved.parent).config().model.weights == f"run:{cell.id}-ourpretrain"

    check_unchanged([c for c in cells if not substituted(c)], runs_dir, fix)


def study_folder(folder: Path) -> Path:
    """The study's folder (report, study.json, step outputs), made before any run trains."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the runs folder, or a folder above, is a file
        raise VisionbenchError(
            "the runs folder is not a folder",
            where=str(folder.parent),
            fix="give --runs-dir a folder (or a path that does not exist yet)",
        ) from None
    except OSError as e:
        raise write_error(e, "the study's folder", folder, "run the study again") from None
    return folder


# --- the plan, shown before any training (--plan) -------------------------------------------

# (classes, channels, side) of the built-in datasets: --plan counts a model's parameters for the
# run's classes without reading the data (a folder: or csv: dataset's are said as unknown)
KNOWN_DATA = {
    "digits": (10, 1, 8), "mnist": (10, 1, 28), "fashion-mnist": (10, 1, 28), "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32), "cifar100-coarse": (20, 3, 32), "svhn": (10, 3, 32), "tiny-imagenet": (200, 3, 64),
}  # fmt: skip


def plan_rows(study: Study, data_dir: str | Path | None = None) -> list[dict]:
    """`study --plan --json`: one object per run - key, id, config (nested as in config.yaml),
    params (for the run's classes) and differences. Nothing is trained or read."""
    return [
        {
            "key": r.key,
            "id": r.id,
            "config": r.cfg.model_dump(mode="json"),
            "params": param_count(r.cfg),
            "differences": list(getattr(r, "differences", [])),
        }
        for r in plan(study, data_dir)
    ]


def param_count(cfg: RunConfig) -> int | None:
    """The run's model's parameters, built on the meta device (no memory, no weights read)."""
    import torch

    from ..models import create_model
    from ..models.build import SMALL_STEM_MAX
    from ..models.registry import count_params

    if cfg.data.name not in KNOWN_DATA:
        return None
    classes, channels, side = KNOWN_DATA[cfg.data.name]
    size = cfg.model.input_size or side
    small_stem = cfg.model.small_stem if cfg.model.small_stem is not None else size <= SMALL_STEM_MAX
    try:
        with torch.device("meta"):
            model = create_model(
                cfg.model.name,
                num_classes=len(cfg.data.classes) if cfg.data.classes else classes,
                in_chans=cfg.data.channels or channels,
                img_size=size,
                defaults={"small_stem": small_stem, "dropout": cfg.model.dropout},
                **cfg.model.kwargs,
            )
    except Exception:  # a model that cannot be built on the meta device: said as unknown
        return None
    return count_params(model)


def changed_settings(config: dict) -> list[str]:
    """A run's config (as --plan --json gives it) as the key=value settings that are not the
    defaults: --plan's text view."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            is_section = isinstance(v, dict) and k != "kwargs"
            out.update(flat(v, f"{prefix}{k}.") if is_section else {prefix + k: v})
        return out

    default = flat(RunConfig().model_dump(mode="json"))
    mine = flat(config)
    return [f"{k}={json.dumps(v)}" for k, v in mine.items() if v != default.get(k) and k != "name"]


# --- pretrained weights, or our own pretraining ----------------------------------------------


def pretrained_available(cfg: RunConfig) -> bool:
    """Whether model.pretrained can be honoured here: the weights are on disk or download.
    Only weights that cannot be had (offline, no network, no such file) are False; a damaged
    file or a download that timed out is an error saying so and how to fix it."""
    import torch

    from ..data.download import Unavailable
    from ..models import create_model

    try:  # on the meta device: no memory, no init; the weights still download or are refused
        with torch.device("meta"):
            create_model(cfg.model.name, num_classes=2, pretrained=True)
    except Unavailable:
        return False
    return True


PRETRAIN_PRECISE_BN = 4096  # images, as pycls's PreciseBN takes 8,192 of ImageNet


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
            # a short run from scratch: BatchNorm's running averages lag its weights, and the
            # frozen features a fine-tune starts from are eval-mode ones (engine/precise_bn.py)
            "train": r.cfg.train.model_copy(update={"precise_bn": PRETRAIN_PRECISE_BN}),
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
