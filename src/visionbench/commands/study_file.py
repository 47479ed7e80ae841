"""A study file's schema: every key, shape and name checked, the whole file at once, before the
first run trains - a typo is an error naming the nearest valid key and where it is in the file.

To accept a new key, add it to its tuple below (FILE_KEYS, SCALE_KEYS, RUN_KEYS, WRITEUP_KEYS or
STEP_OPTIONS): a key listed there and not typed in a model below is accepted as it is; give it
a field in the model to check its value too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..config import RUN_NAME, config_keys, load_yaml
from ..errors import VisionbenchError, did_you_mean
from .options import LR_FIND_ITERS

SCALES = ("smoke", "cpu", "full")
FILE_KEYS = ("name", "title", "writeup", "about", "reference", "set", "scales", "runs", "steps", "findings")
SCALE_KEYS = ("note", "set", "runs", "steps")
RUN_KEYS = ("set", "grid", "writeup", "note")
WRITEUP_KEYS = ("top1", "setting", "for", "states")
STEP_OPTIONS = {
    "lr_find": ("run", "repeats", "iters"),
    "ensemble": ("name", "runs", "vote", "tie_break"),
    "predict": ("model", "images", "count"),
    "explain": ("run", "count"),
}
STEPS = tuple(STEP_OPTIONS)
SKIP = "skip"  # a scale's `runs: {RUN: skip}`: the run is not made at that scale


def hint(name, choices) -> str:
    """did_you_mean, also across case (`SMOKE` is `smoke`)."""
    return did_you_mean(str(name), choices) or did_you_mean(str(name).lower(), choices)


def unknown(what: str, key, choices) -> PydanticCustomError:
    return PydanticCustomError(
        "unknown_key",
        "unknown {what} '{key}'.{hint}",
        {
            "what": what,
            "key": str(key),
            "hint": hint(key, choices),
            "fix": f"write one of: {', '.join(choices)}",
        },
    )


def keys_in(choices: tuple[str, ...], what: str):
    """A before-validator: a mapping whose keys are `choices`."""

    def check(tree):
        for key in tree if isinstance(tree, dict) else ():
            if key not in choices:
                raise unknown(what, key, choices)
        return tree

    return BeforeValidator(check)


def name_part(text: str) -> str:
    """A study, run or ensemble name becomes part of a folder name: never a path."""
    if not RUN_NAME.fullmatch(text) or text in (".", ".."):
        raise PydanticCustomError(
            "bad_name", "bad name '{name}': use letters, digits, '.', '_', '-'", {"name": text}
        )
    return text


Name = Annotated[str, AfterValidator(name_part)]
Count = Annotated[int, Field(ge=1)]


def settings(tree: dict) -> dict:
    """`set:` - dotted config keys (optim.lr), each one `visionbench train` takes."""
    valid = config_keys()
    for key in tree:
        if key not in valid:
            raise PydanticCustomError(
                "unknown_key", "unknown config key '{key}'.{hint}",
                {"key": str(key), "hint": hint(key, valid), "fix": "`visionbench train --help-config` lists every key"},
            )  # fmt: skip
    return tree


def grid(tree: dict) -> dict:
    """`grid:` - a config key to a list of its values, each once (as `sweep` takes them)."""
    settings(tree)
    for key, values in tree.items():
        if not isinstance(values, list):
            raise PydanticCustomError(
                "grid_list", "grid '{key}' needs a list of values, got {got}: write {key}: [{got}]",
                {"key": key, "got": json.dumps(values, default=str)},
            )  # fmt: skip
        if not values:
            raise PydanticCustomError("grid_empty", "grid '{key}' has no values", {"key": key})
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(seen)) < len(seen):
            twice = next(v for v in seen if seen.count(v) > 1)
            raise PydanticCustomError(
                "grid_twice", "grid '{key}' lists {value} twice (one run, counted as two)",
                {"key": key, "value": twice},
            )  # fmt: skip
    return tree


Settings = Annotated[dict[str, Any], AfterValidator(settings)]
Grid = Annotated[dict[str, Any], AfterValidator(grid)]


class Strict(BaseModel):
    """A mapping whose keys are KEYS; any other is named with the nearest."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, populate_by_name=True)
    KEYS: ClassVar[tuple[str, ...]] = ()
    WHAT: ClassVar[str] = "key"

    @model_validator(mode="before")
    @classmethod
    def known_keys(cls, data):
        return keys_in(cls.KEYS, cls.WHAT).func(data)


class WriteupEntry(Strict):
    KEYS = WRITEUP_KEYS
    top1: Annotated[float, Field(strict=True)] | None = None  # a number: 86.4, not "86.4%"
    setting: str = ""
    for_: dict[str, Any] = Field({}, alias="for")
    states: dict[str, Any] = {}  # what the write-up states (study_plan.writeup_differences checks them)


def as_list(value):
    return [value] if isinstance(value, dict) else value


class RunSpec(Strict):
    KEYS = RUN_KEYS
    set: Settings = {}
    grid: Grid = {}
    writeup: Annotated[list[WriteupEntry], BeforeValidator(as_list)] | None = None
    note: str = ""


def scale_run(entry):
    """A scale's entry for one run: `skip`, or settings (and a `grid`) for it at that scale."""
    if entry == SKIP or entry is None:
        return entry
    if not isinstance(entry, dict):
        raise PydanticCustomError(
            "scale_run", "a run at a scale is `skip` or {key: value, grid: {...}}, got {got}",
            {"got": json.dumps(entry, default=str)},
        )  # fmt: skip
    if "grid" in entry:
        if not isinstance(entry["grid"], dict):
            raise PydanticCustomError("scale_grid", "a grid is a mapping {key: [values]}", {})
        grid(entry["grid"])
    settings({k: v for k, v in entry.items() if k != "grid"})
    return entry


# a scale's `steps:` - options for every step of a kind at that scale (e.g. fewer lr-find steps)
ScaleSteps = Annotated[
    dict[str, Annotated[dict[str, Any], BeforeValidator(lambda v: v or {})]], keys_in(STEPS, "step")
]


class ScaleSpec(Strict):
    KEYS = SCALE_KEYS
    note: str = ""
    set: Settings = {}
    runs: dict[Name, Annotated[Any, AfterValidator(scale_run)]] = {}
    steps: ScaleSteps = {}

    @model_validator(mode="after")
    def step_options(self):
        for kind, opts in self.steps.items():
            keys_in(STEP_OPTIONS[kind], f"{kind} option").func(opts)
        return self


class StudyFile(Strict):
    KEYS = FILE_KEYS
    WHAT = "study key"
    name: Name
    title: str = ""
    writeup: str = ""
    about: str = ""
    reference: Any = None  # a name or a list of names: checked against references.yaml (study.py)
    set: Settings = {}
    scales: Annotated[dict[str, ScaleSpec | None], keys_in(SCALES, "scale")] = {}
    runs: Annotated[dict[Name, RunSpec | None], Field(min_length=1)]
    steps: list[Annotated[dict, BeforeValidator(lambda s: one_step(s))]] | None = None
    findings: list[dict] = []  # the write-up's claims: their contents are checked by the report


def one_step(step):
    """A step is written `- KIND: {option: value}`."""
    if not isinstance(step, dict) or len(step) != 1:
        raise PydanticCustomError(
            "step_shape", "a step is one mapping KIND: {option: value}, e.g. `- lr_find: {run: RUN}`, "
            "got {got}", {"got": json.dumps(step, default=str)},
        )  # fmt: skip
    kind, opts = next(iter(step.items()))
    if kind not in STEPS:
        raise unknown("step", kind, STEPS)
    if opts is not None and not isinstance(opts, dict):
        raise PydanticCustomError("step_options", "{kind}'s options are a mapping", {"kind": kind})
    keys_in(STEP_OPTIONS[kind], f"{kind} option").func(opts)
    return step


# --- each step's options, once a scale's are merged in ------------------------------------------


class LrFindStep(Strict):
    KEYS, WHAT = STEP_OPTIONS["lr_find"], "lr_find option"
    run: str
    repeats: Count = 3
    iters: Annotated[int, Field(ge=5)] = LR_FIND_ITERS


class EnsembleStep(Strict):
    KEYS, WHAT = STEP_OPTIONS["ensemble"], "ensemble option"
    name: Name
    runs: Annotated[list[str], Field(min_length=2)]
    vote: Literal["hard", "soft"] = "hard"
    tie_break: str | None = None


class PredictStep(Strict):
    KEYS, WHAT = STEP_OPTIONS["predict"], "predict option"
    model: str
    images: str = "unlabelled"
    count: Count = 50


class ExplainStep(Strict):
    KEYS, WHAT = STEP_OPTIONS["explain"], "explain option"
    run: str
    count: Count = 8


STEP_MODELS = {
    "lr_find": LrFindStep,
    "ensemble": EnsembleStep,
    "predict": PredictStep,
    "explain": ExplainStep,
}


# --- reading and checking -----------------------------------------------------------------------


def where_in(path: Path, loc) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return f"{path}, at {text}" if text else str(path)


# pydantic's words for a wrong shape, said as the file's
PLAIN = {
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "list_type": "expected a list",
    "float_type": "expected a number",
    "int_type": "expected a whole number",
    "string_type": "expected text",
}


def schema_error(e: ValidationError, path: Path, prefix: tuple = ()) -> VisionbenchError:
    err = e.errors()[0]
    loc = prefix + tuple(p for p in err["loc"] if p != "[key]")
    if err["type"] == "missing":
        return VisionbenchError(f"'{loc[-1]}' is missing", where=where_in(path, loc[:-1]), fix="add it")
    said = (
        err["type"] not in PLAIN
        and "ctx" in err
        and err["type"] not in ("literal_error", "greater_than_equal")
    )
    what = (
        err["msg"]
        if said
        else f"{PLAIN.get(err['type'], err['msg'])}, got {json.dumps(err.get('input'), default=str)}"
    )
    fix = (err.get("ctx") or {}).get("fix", "see the study file's keys in examples/writeups/*.yaml")
    return VisionbenchError(what, where=where_in(path, loc), fix=fix)


def read_study_file(path: Path) -> dict:
    """The file's mapping, its shape and every key checked (settings against the run config)."""
    spec = load_yaml(path)
    try:
        StudyFile.model_validate(spec)
    except ValidationError as e:
        raise schema_error(e, path) from None
    for scale, sspec in (spec.get("scales") or {}).items():
        for key in (sspec or {}).get("runs") or {}:
            if key not in spec["runs"]:
                raise VisionbenchError(
                    f"unknown run '{key}'.{hint(key, list(spec['runs']))}",
                    where=where_in(path, ("scales", scale, "runs", key)),
                    fix=f"the study's runs: {', '.join(spec['runs'])}",
                )
    return spec


def scale_steps(spec: dict, scale: str) -> list[dict]:
    """The study's steps at `scale`, each {kind: options} with the scale's options for its kind."""
    scaled = ((spec.get("scales") or {}).get(scale) or {}).get("steps") or {}
    return [
        {k: {**(v or {}), **(scaled.get(k) or {})}}
        for step in spec.get("steps") or []
        for k, v in step.items()
    ]


def check_steps(
    spec: dict,
    scale: str,
    path: Path,
    keys: dict[str, int],
    skipped: set[str],
    run_ids: set[str],
    prefix: str,
) -> list[dict]:
    """The steps at `scale`, options typed and defaults filled, each name checked: `keys` are
    the runs made at this scale (key -> its number of cells), `run_ids` every run folder the
    study makes, `prefix` what an ensemble's folder name starts with (<study>-<scale>).
    Nothing a step writes may be another step's or a run's."""
    steps, ensembles, outputs = [], [], set()
    for i, step in enumerate(scale_steps(spec, scale)):
        kind, opts = next(iter(step.items()))
        at = ("steps", i, kind)
        try:
            opts = STEP_MODELS[kind].model_validate(opts).model_dump(exclude_none=True)
        except ValidationError as e:
            raise schema_error(e, path, at) from None
        where = where_in(path, at)
        for ref in filter(None, step_refs(kind, opts, ensembles)):
            check_run_ref(ref, keys, skipped, scale, where, ensembles)
        if kind == "ensemble":
            check_ensemble_name(opts, spec, run_ids, f"{prefix}-{opts['name']}", ensembles, where)
            ensembles.append(opts["name"])
        output = (kind, opts.get("run") or opts.get("model") or opts.get("name"))
        if output in outputs:
            raise VisionbenchError(
                f"two {kind} steps of '{output[1]}': the second would replace the first's output",
                where=where_in(path, at),
                fix=f"keep one {kind} step for '{output[1]}'",
            )
        outputs.add(output)
        steps.append({kind: opts})
    return steps


def step_refs(kind: str, opts: dict, ensembles: list[str]) -> list:
    """The runs a step reads (a predict step may read an ensemble made by an earlier step)."""
    if kind == "ensemble":
        return [*opts["runs"], opts.get("tie_break")]
    if kind == "predict":
        return [] if opts["model"] in ensembles else [opts["model"]]
    return [opts["run"]]


def check_run_ref(
    ref: str, keys: dict[str, int], skipped: set[str], scale: str, where: str, ensembles=()
) -> None:
    if keys.get(ref, 0) == 1:
        return
    if ref not in keys:
        said = " (skipped at this scale)" if ref in skipped else ""
        choices = [*keys, *ensembles]
        raise VisionbenchError(
            f"unknown run '{ref}' at scale {scale}{said}.{hint(ref, choices)}",
            where=where,
            fix=f"name one of: {', '.join(choices)}",
        )
    raise VisionbenchError(
        f"run '{ref}' is a grid of {keys[ref]} runs at scale {scale}: a step reads one run",
        where=where,
        fix="give that cell its own run key in `runs:` and name it here",
    )


def check_ensemble_name(
    opts: dict, spec: dict, run_ids: set[str], folder: str, before: list[str], where: str
) -> None:
    """An ensemble's folder is <study>-<scale>-<name>: never a run's (a finished or an unfinished
    one: the ensemble would replace its checkpoint), never another ensemble's."""
    name = opts["name"]
    if name in spec["runs"] or name in before or folder in run_ids:
        raise VisionbenchError(
            f"the ensemble '{name}' is named like a run or another ensemble of this study",
            where=where,
            fix=f"give it a name of its own, e.g. {name}_vote",
        )
    if len(set(opts["runs"])) < len(opts["runs"]):
        raise VisionbenchError(
            f"the ensemble '{name}' lists a run twice", where=where, fix="list each run once"
        )
    if opts.get("tie_break") and opts["tie_break"] not in opts["runs"]:
        raise VisionbenchError(
            f"tie_break '{opts['tie_break']}' is not one of the ensemble's runs",
            where=where,
            fix=f"choose one of: {', '.join(opts['runs'])}",
        )
