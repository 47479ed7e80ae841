"""A run's data, ready to train on: the dataset loaded and checked, the channel conversion and
class selection applied, the validation split carved, the channel statistics measured, and the
loaders built on first use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, partial

import numpy as np
import torch

from ..config import RunConfig
from ..errors import VisionbenchError
from .augment import build_augment
from .balance import class_weights, weights_line
from .cache import Dataset, Split, memo
from .loader import TensorLoader
from .multilabel import DETECTED
from .report import check_skipped, dataset_report
from .sources import load_dataset
from .split import channel_stats, is_multilabel, stratified_split, to_channels
from .stream import FileImages, StreamLoader
from .subset import select_classes


@dataclass
class Prepared:
    """What a run trains and evaluates on. Loaders and the report are built on first use, so
    re-evaluating a run never copies its training set to the device or hashes its images."""

    cfg: RunConfig
    dataset: Dataset
    device: torch.device
    keep: np.ndarray  # train indices trained on
    held: np.ndarray  # train indices held out for validation
    mean: list[float]
    std: list[float]
    shard: tuple[int, int] = (0, 1)  # (rank, world): a distributed rank trains on its slice
    choices: list[str] = field(default_factory=list)  # settings chosen from the data, one line each

    def loader(self, split: str, idx=None, train: bool = False) -> TensorLoader:
        s = self.dataset.splits[split]
        images, labels = (s.images, s.labels) if idx is None else (s.images[idx], s.labels[idx])
        aug = self.cfg.aug if train else None
        streamed = isinstance(images, FileImages)
        return (partial(StreamLoader, workers=self.cfg.data.workers) if streamed else TensorLoader)(
            images,
            labels,
            self.cfg.train.batch_size if train else self.cfg.train.eval_batch_size,
            device=self.device,
            mean=self.mean,
            std=self.std,
            channels_last=self.cfg.train.channels_last,
            train=train,
            crop_padding=aug.crop_padding if aug else 0,
            flip=aug.flip if aug else False,
            seed=self.cfg.seed,
            augment=build_augment(self.cfg.aug, len(self.dataset.classes)) if train else None,
            repeats=self.cfg.aug.repeats,
            shard=self.shard if train else (0, 1),
            sampler=self.cfg.data.sampler,
        )

    @cached_property
    def train(self) -> TensorLoader:
        return self.loader("train", self.keep, train=True)

    @cached_property
    def val(self) -> TensorLoader | None:
        if "val" in self.dataset.splits:  # the dataset's own val/ split wins over a carved one
            return self.loader("val")
        return self.loader("train", self.held) if len(self.held) else None

    @cached_property
    def test(self) -> TensorLoader:
        return self.loader("test")

    @property
    def multilabel(self) -> bool:
        """Each image has a set of labels: multi-hot (N, C) targets, a sigmoid per class."""
        return is_multilabel(self.dataset.splits["train"].labels)

    def task_notes(self) -> list[str]:
        """The line that says the data was found multi-label and the key that says otherwise
        (none when data.task names the task, or for single-label data)."""
        if not self.multilabel or self.cfg.data.task != "auto":
            return []
        how = (
            "a;b label sets" if self.cfg.data.name.startswith("csv:") else "files under several class folders"
        )
        labels = [s.labels for s in self.dataset.splits.values()]
        several = sum(int((y.sum(1) > 1).sum()) for y in labels)
        why = f"{several:,} of {sum(map(len, labels)):,} images have several labels: {how}"
        return [DETECTED.format(why=why)]

    @cached_property
    def class_weights(self) -> np.ndarray | None:
        """train.class_weights over the images trained on (after the validation carve-out), or
        None; a list of the wrong length is an error naming the classes."""
        labels = self.dataset.splits["train"].labels[self.keep]
        return class_weights(self.cfg.train.class_weights, labels, self.dataset.classes)

    @property
    def loss_weights(self) -> torch.Tensor | None:
        """The class weights as the loss takes them, on the run's device."""
        w = self.class_weights
        return None if w is None else torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def weights_notes(self) -> list[str]:
        """The line that says the class weights, for the run's choices (none when unweighted)."""
        w, cfg = self.class_weights, self.cfg.train.class_weights
        return [] if w is None else [weights_line(cfg, w, self.dataset.classes, len(self.keep))]

    @cached_property
    def report(self) -> dict:  # counts per class (val apart), warnings (imbalance, gaps, leaks, skips)
        key = f"report-{len(self.held)}-{self.cfg.data.val_fraction}-{self.cfg.data.split_seed}"
        return memo(self.dataset, key, lambda: dataset_report(self.dataset, (self.keep, self.held)))

    @property
    def stats(self) -> dict:
        return {
            "train": len(self.keep),
            "val": len(self.dataset.splits["val"]) if "val" in self.dataset.splits else len(self.held),
            "test": len(self.dataset.splits["test"]),
            "mean": self.mean,
            "std": self.std,
            "val_split": "the dataset's own val split"
            if "val" in self.dataset.splits
            else f"stratified {self.cfg.data.val_fraction:.0%} of train, seed {self.cfg.data.split_seed}",
        }


def prepare_data(
    cfg: RunConfig,
    device: torch.device,
    say: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Prepared:
    # folder-only options, passed only when set: other sources refuse options they do not take
    options = {
        "img_size": cfg.data.img_size,
        "resize": cfg.data.resize if cfg.data.resize != "crop" else None,
        "stream": cfg.data.stream or None,
        # only `single` changes what is read (a;b as one class name); auto and multilabel read
        # alike -- one array cache -- and data.task=multilabel makes single labels sets below
        "task": "single" if cfg.data.task == "single" else None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    ds = load_dataset(cfg.data.name, cfg.data.dir, say, on_progress, **options)
    check_skipped(ds, cfg.data.strict, cfg.data.max_bad_fraction)
    if cfg.data.channels and cfg.data.stream:
        raise VisionbenchError(
            "data.channels cannot convert streamed images", fix="drop data.stream or data.channels"
        )
    if cfg.data.channels:
        ds = replace(
            ds,
            splits={
                k: Split(to_channels(s.images, cfg.data.channels), s.labels) for k, s in ds.splits.items()
            },
        )
    if cfg.data.task == "multilabel":
        ds = replace(
            ds,
            splits={
                k: Split(s.images, as_multi_hot(s.labels, len(ds.classes))) for k, s in ds.splits.items()
            },
        )
    if is_multilabel(ds.splits["train"].labels):
        check_multilabel_settings(cfg)
    if cfg.data.stream and (cfg.data.classes or cfg.data.per_class or cfg.data.test_per_class):
        raise VisionbenchError(
            "data.classes and data.per_class select from cached images, not streamed ones",
            fix="drop data.stream, or make a folder of the classes wanted",
        )
    ds = select_classes(
        ds, cfg.data.classes, cfg.data.per_class, cfg.data.split_seed, cfg.data.test_per_class
    )
    train = ds.splits["train"]
    # a dataset with its own val split (folder: train/ val/ test/) keeps all of train for training
    fraction = 0.0 if "val" in ds.splits else cfg.data.val_fraction
    keep, held = stratified_split(train.labels, fraction, cfg.data.split_seed)
    # streamed images are decoded to be measured: a sample of about 1,000 is enough
    sample = keep[:: max(1, len(keep) // 1000)] if cfg.data.stream else keep
    key = f"stats-{fraction}-{cfg.data.split_seed}"
    mean, std = memo(ds, key, lambda: channel_stats(train.images, sample))
    return Prepared(cfg, ds, device, keep, held, mean, std, shard)


def as_multi_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as one-hot rows (data.task=multilabel on single-label data); multi-hot as is."""
    labels = np.asarray(labels)
    return labels if is_multilabel(labels) else np.eye(num_classes, dtype=np.int64)[labels]


# settings that read one class per image: refused for multi-label data unless left at default
SINGLE_LABEL_ONLY = (
    "data.sampler",
    "data.classes",
    "data.per_class",
    "data.test_per_class",
    "train.class_weights",
)


def check_multilabel_settings(cfg: RunConfig) -> None:
    """Refuse, for multi-label data, the settings that assume one class per image."""
    for key in SINGLE_LABEL_ONLY:
        section, name = key.split(".")
        part = getattr(cfg, section)
        value, default = getattr(part, name), type(part).model_fields[name].default
        if value != default:
            raise VisionbenchError(
                f"{key}={value} reads one class per image; this data is multi-label",
                fix=f"leave out {key} (default {default}), or set data.task=single",
            )
