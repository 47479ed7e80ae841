"""The typed run config: defaults live here; YAML files and key=value overrides feed it."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import VisionbenchError, did_you_mean, unknown_name


def registry(kind: str) -> Collection[str]:
    """The names a registry lists, each once, where it is built. Imported when a config is
    checked, not with this module: the registries import torch."""
    if kind == "optimizer":
        from .engine.optimizers import OPTIMIZERS as names
    elif kind == "schedule":
        from .engine.schedules import SCHEDULES as names
    elif kind == "loss":
        from .engine.losses import LOSSES as names
    elif kind == "tta":
        from .engine.tta import TTA_VIEWS as names
    else:
        raise ValueError(f"no registry of {kind}s")
    return names


def registered(kind: str) -> AfterValidator:
    """A field holding a name from `kind`'s registry; any other gets the nearest valid name."""

    def check(name: str) -> str:
        if name not in registry(kind):
            raise unknown_name(kind, name, registry(kind))
        return name

    return AfterValidator(check)


# Ranges, checked where each value is declared: a value out of range is the config's usual
# error naming the key, before any data is read or run folder made (never a traceback mid-run,
# never a "finished" run at chance: epochs=0, val_fraction=1.5, batch_size=0, lr=-1).
def not_a_bool(value: Any) -> Any:
    """pydantic reads true as 1: `epochs: true` or vb.train(epochs=True) would train one epoch."""
    if isinstance(value, bool):
        raise ValueError(f"a number is needed, not {str(value).lower()}")
    return value


Number = BeforeValidator(not_a_bool)
Count = Annotated[int, Number, Field(ge=1)]  # epochs, sizes, batch sizes, steps
NonNegative = Annotated[int, Number, Field(ge=0)]  # 0 means off
Positive = Annotated[float, Number, Field(gt=0)]
Amount = Annotated[float, Number, Field(ge=0)]  # strengths, alphas, degrees: 0 means off
Probability = Annotated[float, Number, Field(ge=0, le=1)]
Fraction = Annotated[float, Number, Field(ge=0, lt=1)]  # of something that must keep a part: val split, decay
Seed = Annotated[int, Number, Field(ge=0, lt=2**32)]  # numpy's range

# never a leading '.': a hidden folder (`visionbench runs` skips them, as temp folders are)
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,119}")


def check_run_name(name: str | None) -> str | None:
    """A run id is a folder name: letters, digits, '.', '_', '-', at most 120 (never a path,
    never hidden)."""
    if name is not None and not RUN_NAME.fullmatch(name):
        raise VisionbenchError(
            f"bad run name '{name}'",
            fix="use letters, digits, '.', '_', '-' (at most 120), not starting with '.'",
        )
    return name


class Section(BaseModel):
    # allow_inf_nan off: lr=nan or epochs=.inf are typos, not settings
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def source_path(name: str) -> str:
    """`folder:PATH` / `csv:PATH` with PATH absolute (a run's config then works from any
    folder: eval, --resume); an empty PATH is an error, never the current folder. Other
    dataset names are returned as they are."""
    prefix = next((p for p in ("folder:", "csv:") if name.startswith(p)), None)
    if prefix is None:
        return name
    path = name[len(prefix) :]
    if not path.strip():
        raise VisionbenchError(
            f"'{name}' names no path", fix=f"write {prefix}PATH, e.g. {prefix}./photos ({prefix}. for here)"
        )
    return prefix + os.path.abspath(os.path.expanduser(path))


def absolute(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def weights_ref(ref: str | None) -> str | None:
    """model.weights: run:RUN_ID as it is, a file path absolute."""
    return ref if not ref or ref.startswith("run:") else absolute(ref)


class DataConfig(Section):
    # a registered name, or folder:PATH / csv:PATH (stored absolute: eval works from anywhere)
    name: Annotated[str, AfterValidator(source_path)] = "digits"
    # data root (stored absolute); else $VISIONBENCH_DATA, else the user cache dir
    dir: Annotated[str | None, AfterValidator(absolute)] = None
    val_fraction: Fraction = 0.1  # carved from train, stratified, with data.split_seed
    split_seed: Seed = 0
    img_size: Count | None = None  # folders: every image to this square size (default: chosen from a sample)
    resize: Literal["crop", "stretch"] = "crop"  # folders: shorter side + centre crop, or stretch
    channels: Literal[1, 3] | None = None  # grey <-> RGB conversion, e.g. 3 for RGB-pretrained models
    stream: bool = False  # folders too large to cache: decode each batch from the files (DataLoader)
    workers: NonNegative | None = None  # data.stream: decoding processes (default: the cores, at most 8)
    strict: bool = False  # any unreadable image is an error (else skipped and listed)
    max_bad_fraction: Probability = 0.01  # more unreadable files than this is an error anyway
    classes: list[int | str] | None = None  # keep these classes (indices or names), relabelled in order
    per_class: Count | None = None  # at most this many train images per class (seeded by split_seed)
    test_per_class: Count | None = None  # at most this many test images per class (quick experiments)
    # balanced: each training epoch draws its images with probability 1/count of their class (with
    # replacement; as many draws as images), seeded by (seed, epoch) as the shuffle is: resumable
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    # multilabel: each image has a set of labels (sigmoid per class, BCE); auto: multilabel when a
    # csv: label column holds `a;b` sets or a folder holds one file under several class folders
    task: Literal["auto", "single", "multilabel"] = "auto"


class AugConfig(Section):
    crop_padding: NonNegative = 0  # random crop after reflect-padding by this many pixels (0: off)
    # random horizontal flip (off for digits: a flipped 2 is not a 2); alternate: each image's
    # random flip is drawn once and every other epoch shows it mirrored (airbench: more variety)
    flip: bool | Literal["alternate"] = False
    # per-sample augmentations on the device (data/augment.py); every default is "off"
    resized_crop: Probability = 0.0  # RandomResizedCrop: smallest area fraction kept (0: off; timm 0.08)
    rotate: Annotated[float, Field(ge=0, le=180)] = 0.0  # random rotation, degrees either way
    jitter: Amount = 0.0  # colour jitter strength: brightness, contrast, saturation +-this
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0  # colour jitter: hue shift, turns either way
    policy: Literal["none", "randaugment", "trivialaugment"] = "none"
    ops: NonNegative = 2  # randaugment: ops per image
    magnitude: Amount = 9.0  # randaugment: magnitude out of 10 (timm's rand-m9)
    magnitude_std: Amount = 0.5  # randaugment: per-image noise on the magnitude
    erase: Probability = 0.0  # Random Erasing: probability per image (0: off)
    cutout: NonNegative = 0  # Cutout: side of a square zeroed at a random place, pixels (0: off)
    mixup: Amount = 0.0  # Mixup alpha (0: off)
    cutmix: Amount = 0.0  # CutMix alpha (0: off); with both, one is picked per batch
    mix_prob: Probability = 1.0  # probability a batch is mixed at all
    repeats: Count = 1  # repeated augmentation: each image this many times per epoch (Hoffer et al.)


class ModelConfig(Section):
    name: str = "small_cnn"  # trains on every built-in dataset as it is (8 px digits too): the demo's model
    pretrained: bool = False
    small_stem: bool | None = None  # ResNets: 3x3 stride-1 stem, no max-pool; None: on for inputs <= 64 px
    dropout: Fraction = 0.0
    kwargs: dict[str, Any] = {}  # builder-specific, e.g. {width: 24} for small_cnn
    # start from a .safetensors/.pth file (stored absolute), or run:RUN_ID (its last weights)
    weights: Annotated[str | None, AfterValidator(weights_ref)] = None
    reset_head: bool = False  # with weights: keep the new head even where the file's has the same shape
    input_size: Count | None = None  # resize inputs on the device first (224 for ImageNet weights)


BASE_LR = 0.1  # SGD's peak lr at batch 128: optim.lr left unset scales it with the batch (Goyal et al. 2017)
# The adaptive optimizers' own: Adam's 1e-3 (Kingma & Ba) for its family, a tenth of it for Lion
# (Chen et al. 2023: 3-10x smaller than AdamW's). SGD's rule gave Adam 0.025 at batch 32: write-up
# 002's CNN reached 19% test with it, 44% at 1e-3.
ADAPTIVE_LR = {"adam": 1e-3, "adamw": 1e-3, "yogi": 1e-3, "lamb": 1e-3, "rmsprop": 1e-3, "lion": 1e-4}


def default_lr(optimizer: str, batch: int, base_batch: int = 128) -> tuple[float, str]:
    """optim.lr left unset: SGD's (and LARS's) 0.1 at batch 128 scaled linearly with the batch
    (Goyal et al. 2017); an adaptive optimizer's own lr scaled by the square root (Malladi et
    al. 2022). Returns the lr and how it was reached, for the line that says so."""
    if optimizer in ADAPTIVE_LR:
        base = ADAPTIVE_LR[optimizer]
        how = f"{optimizer}'s {base:g} at batch {base_batch}, x sqrt({batch}/{base_batch})"
        return base * (batch / base_batch) ** 0.5, how
    return BASE_LR * batch / base_batch, f"{BASE_LR} scaled to batch {batch}"


class OptimConfig(Section):
    name: Annotated[str, registered("optimizer")] = "sgd"  # engine/optimizers.py OPTIMIZERS
    lr: Positive | None = None  # None: default_lr(name, batch): 0.1 at batch 128 for SGD, 1e-3 for Adam ...
    momentum: Fraction = 0.9  # sgd, rmsprop, lars
    nesterov: bool = True
    weight_decay: Amount = 5e-4
    # None: each optimizer's own default, its paper's (adam 0.9, 0.999 and 1e-8; yogi eps 1e-3;
    # lamb eps 1e-6; lion 0.9, 0.99 and no eps)
    betas: tuple[Fraction, Fraction] | None = None  # adam, adamw, yogi, lamb, lion
    eps: Positive | None = None  # adam, adamw, rmsprop, yogi, lamb
    trust_coefficient: Positive = 0.001  # lars
    bias_decay: bool = False  # also decay biases and norm parameters (airbench does)
    norm_lr_mult: Positive = 1.0  # norm layers' lr x this, their decay / this (airbench: 64)


class SchedConfig(Section):
    name: Annotated[str, registered("schedule")] = "onecycle"  # engine/schedules.py SCHEDULES
    warmup_epochs: Amount = 0.0  # all but onecycle: linear warmup length
    warmup_start: Fraction = 0.0  # ... from this fraction of the peak lr
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.25  # onecycle: fraction of steps spent rising
    step_epochs: Count = 10  # step: decay every this many epochs ...
    gamma: Positive = 0.1  # ... by this factor (plateau: on each plateau)
    min_lr_ratio: Probability = 0.0  # cosine/linear: end at this fraction of the peak lr
    patience: NonNegative = 2  # plateau: epochs without a better val loss before decaying


def class_weight_setting(value: str | list[float]) -> str | list[float]:
    """train.class_weights: none, balanced, or one positive weight a class (their number is
    checked against the data's classes when a run starts)."""
    if isinstance(value, list) and (not value or min(value) <= 0):
        raise ValueError("class weights must be positive numbers, one a class")
    if isinstance(value, str) and value not in ("none", "balanced"):
        raise ValueError("write none, balanced, or one weight a class, e.g. [1, 5]")
    return value


class ProgressiveConfig(Section):
    """Progressive resizing, on MosaicML Composer's schedule but per epoch (engine/schedules.py
    progressive_sides): the first `hold` of the epochs train on images at `scale` x the network's
    input side, which then grows linearly to the full side, reached for the last `finetune` of
    them (and always for the last epoch); sides are multiples of `step` px. Validation, the test
    and all after training run at the full side."""

    scale: Annotated[float, Number, Field(gt=0, le=1)] = 1.0  # 1: off; e.g. 0.5 (16 of 32 px)
    hold: Probability = 0.5
    finetune: Probability = 0.2
    step: Count = 4

    @model_validator(mode="after")
    def _fits(self) -> ProgressiveConfig:
        if self.hold + self.finetune > 1:
            raise ValueError(
                f"hold + finetune is {self.hold + self.finetune:g}, more than the whole run: "
                "lower either, so that they sum to 1 or less"
            )
        return self


class TrainConfig(Section):
    epochs: Count = 10
    batch_size: Count | None = None  # None: 128, or less when the train split is small (>= 8 steps an epoch)
    eval_batch_size: Count = 1024
    # micro-batches per optimizer step: each batch is split in N, their gradients summed, then one
    # step (engine/loop.py): the update equals the whole batch's except in BatchNorm's statistics.
    # Chosen when a set batch does not fit in memory (engine/memory.py)
    accumulate: Count = 1
    label_smoothing: Fraction = 0.0
    loss: Annotated[str, registered("loss")] = "ce"  # engine/losses.py LOSSES; bce: as in RSB
    # weighted loss: balanced = n / (classes x count_c) over the images trained on, or one weight a class
    class_weights: Annotated[str | list[Annotated[float, Number]], AfterValidator(class_weight_setting)] = (
        "none"
    )
    # distillation (engine/distill.py): a finished run or saved ensemble (run:ID | ensemble:NAME, or
    # its id or folder) whose soft targets at distill_temperature make distill_weight of the loss
    teacher: str | None = None
    distill_weight: Probability = 0.5
    distill_temperature: Positive = 4.0
    ema: Fraction = 0.0  # decay of an EMA of the weights, evaluated and saved instead (0: off)
    lookahead: NonNegative = 0  # every N steps pull the weights to a slow average (engine/ema.py; 0: off)
    # after each epoch, BatchNorm statistics recomputed over this many training images through the
    # epoch's final weights (engine/precise_bn.py): short runs' eval-mode figures then match their
    # weights (0: off, BatchNorm's own running averages)
    precise_bn: NonNegative = 0
    progressive: ProgressiveConfig = ProgressiveConfig()  # lower resolution in the early epochs
    tta: Annotated[str, registered("tta")] = "none"  # engine/tta.py: views averaged in the final test
    # temperature scaling fitted on the validation split after training (analysis/calibration.py):
    # eval, predict and soft votes report calibrated probabilities; the argmax never changes
    calibrate: bool = True
    early_stop: NonNegative = 0  # stop after this many epochs without a better val accuracy (0: off)
    grad_clip: Positive | None = None  # max global grad norm
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # true: the device's native autocast, recorded as bf16|fp16|false when a run starts (engine/
    # device.py): bf16 on CUDA from Ampere and on CPUs with native bf16 (AVX512-BF16 or AMX), fp16
    # + a gradient scaler on older GPUs; never bf16 where it is emulated (0.3 GFLOP/s against 117
    # in fp32 on an AVX2 EPYC)
    amp: bool | Literal["bf16", "fp16"] = True
    channels_last: bool = (
        True  # NHWC memory layout, on every device (faster on GPUs and for small CNNs on CPU)
    )
    compile: bool = False  # torch.compile the training step's model (CPU: a C++ compiler); RESULTS.md
    deterministic: bool = True  # deterministic kernels: a resumed run equals an uninterrupted one
    threads: Count | None = None  # CPU threads; default: all cores
    checkpoint_minutes: Positive | None = None  # also checkpoint mid-epoch every N minutes
    checkpoint_steps: Count | None = None  # also checkpoint mid-epoch every N steps
    sync_bn: bool = False  # distributed runs: BatchNorm statistics over the global batch
    track: Literal["none", "tensorboard", "mlflow"] = "none"  # also log to a tracker (runs/trackers.py)


def on_off(value: Any) -> Any:
    """YAML reads a bare on/off as true/false: the words were meant."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class FreezeStage(Section):
    epochs: Count | None = None  # None: until the run ends
    freeze: str = "none"  # head-only | until:<layer> (layers before it frozen) | none
    backbone_lr_mult: Amount = 1.0  # learning rate of every layer but the head, times this


class FinetuneConfig(Section):
    freeze: str = "none"  # for the whole run, when there are no stages
    backbone_lr_mult: Amount = 1.0  # for the whole run, when there are no stages
    stages: list[FreezeStage] = []  # e.g. [{epochs: 3, freeze: head-only}, {backbone_lr_mult: 0.1}]
    bn_eval: bool = True  # BatchNorm layers that are frozen stay in eval mode (running stats kept)
    # a stage's frozen layers computed once per split and cached on disk (engine/features.py):
    # auto when they are deterministic and the model splits there; on: an error otherwise
    cache_features: Annotated[Literal["auto", "on", "off"], BeforeValidator(on_off)] = "auto"
    # with train-time augmentation: K augmented views of each image cached, epoch e trains on e % K
    feature_views: Count | None = None


class RunConfig(Section):
    # run id; default: <time>-<data>-<model>
    name: Annotated[str | None, AfterValidator(check_run_name)] = None
    recipe: str | None = None  # the preset this run started from, as name@version (see recipes/)
    seed: Seed = 0
    data: DataConfig = DataConfig()
    aug: AugConfig = AugConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts, e.g. 'optim.lr'."""
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += config_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


# keys short enough to give bare on the command line: `task=multilabel` is data.task
SHORT_KEYS = {"task": "data.task"}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['optim.lr=0.05', 'aug.flip=true'] -> nested dict; values parsed as YAML scalars."""
    valid = config_keys()
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise VisionbenchError(
                f"cannot read '{item}': expected key=value", fix="write e.g. optim.lr=0.05"
            )
        key, raw = item.split("=", 1)
        key = SHORT_KEYS.get(key.strip(), key.strip())
        if key not in valid:
            raise VisionbenchError(
                f"unknown config key '{key}'.{did_you_mean(key, valid)}",
                fix="`visionbench train --help-config` lists every key",
            )
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:  # e.g. name=@run: not YAML, so the text itself
            node[leaf] = raw
        if isinstance(node[leaf], dict) and not raw.lstrip().startswith("{"):
            node[leaf] = raw  # data.name=folder: is text, not the mapping {folder: null}
    return tree


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_keys(tree: dict, source: str, model: type[BaseModel] = RunConfig, prefix: str = ""):
    """Unknown keys get the nearest valid name, before pydantic's generic message; inside
    lists of sections too (finetune.stages[0].freez)."""
    for key, value in tree.items():
        fields = model.model_fields
        if key not in fields:
            valid = [prefix + k for k in fields]
            raise VisionbenchError(
                f"unknown config key '{prefix}{key}'.{did_you_mean(prefix + key, valid)}",
                where=source,
                fix=f"the keys of {prefix[:-1]}: {', '.join(fields)}"
                if "[" in prefix  # an entry of a list: its few keys
                else "`visionbench train --help-config` lists every key",
            )
        sub = fields[key].annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_keys(value, source, sub, f"{prefix}{key}.")
        item = (get_args(sub) or [None])[0] if get_origin(sub) is list else None
        if isinstance(value, list) and isinstance(item, type) and issubclass(item, BaseModel):
            for i, entry in enumerate(value):
                if isinstance(entry, dict):
                    _check_keys(entry, source, item, f"{prefix}{key}[{i}].")


def setting_path(loc: tuple) -> tuple:
    """A validation error's location as the setting's key: pydantic adds the branch of a union
    it tried ('train.amp.bool', 'train.class_weights.str'), which is no key of ours."""
    keep = []
    for part in loc:
        if (
            isinstance(part, str)
            and not re.fullmatch(r"[a-z_][a-z0-9_]*", part)
            or part in ("bool", "str", "int", "float")
        ):
            break
        keep.append(part)
    return tuple(keep)


def build_config(tree: dict, source: str = "config") -> RunConfig:
    _check_keys(tree, source)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        path = setting_path(errors[0]["loc"])
        said = dict.fromkeys(x["msg"] for x in errors if setting_path(x["loc"]) == path)  # a union: each way
        key = ".".join(map(str, path))
        raise VisionbenchError(
            f"bad value for '{key}': {'; or '.join(said)} (got {errors[0].get('input')!r})",
            where=source,
            fix="`visionbench train --help-config` lists every key with its default",
        ) from None
    except VisionbenchError as e:  # a name its registry does not list
        e.where = e.where or source
        raise


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key written twice in one mapping is an error: PyYAML keeps the last
    silently, so a copied run or setting would drop the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key '{key}' twice (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VisionbenchError(f"config file not found: {path}", fix="check the path")
    try:
        with path.open(encoding="utf-8") as f:  # the file's name in a parse error's marks
            tree = yaml.load(f, Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError as e:
        raise VisionbenchError(
            f"cannot read the file as UTF-8 text (byte {e.start}: {e.reason})",
            where=str(path),
            fix="save it as UTF-8 text (a YAML file), e.g. `iconv -f latin1 -t utf-8`",
        ) from None
    except yaml.YAMLError as e:
        raise VisionbenchError(f"cannot parse YAML: {e}", where=str(path)) from None
    if not isinstance(tree, dict):
        raise VisionbenchError("a config file must hold a mapping of keys", where=str(path))
    return tree


def resolve_config(
    files: list[str | Path] = (),
    overrides: list[str] = (),
    cli: dict | None = None,
    recipe: str | None = None,
) -> RunConfig:
    """Defaults <- recipe <- YAML files (in order) <- CLI options <- key=value overrides. A
    recipe named by `recipe: NAME` in a file or an override is applied as if given with --recipe
    (a saved config's `recipe: NAME@VERSION` changes nothing: its values are all there)."""
    tree: dict = {}
    for f in files:
        tree = deep_merge(tree, load_yaml(f))
        build_config(tree, str(f))  # a bad key or value is reported with the file it came from
    tree = deep_merge(tree, cli or {})
    tree = deep_merge(tree, parse_overrides(list(overrides)))
    named = recipe or tree.get("recipe")
    if named:
        from .recipes import recipe_config

        base = recipe_config(str(named).split("@")[0])
        tree = deep_merge(
            base, {**tree, "recipe": tree.get("recipe") if "@" in str(named) else base["recipe"]}
        )
    return build_config(tree)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
