"""Frozen layers computed once: while a stage freezes a prefix of the network and that prefix is
deterministic, its output for every image is computed once per split, cached on disk beside the
array cache, and the rest of the network trains on it - head-only training for the price of one
forward pass (write-up 002's frozen VGG16, write-up 004's MobileNet and ResNet-50 heads)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from ..config import AugConfig, RunConfig
from ..data.cache import MEMORY_SHARE, cache_root, load_checked, memory_total, size_text, write_arrays
from ..data.loader import TensorLoader
from ..data.prepare import Prepared
from ..errors import VisionbenchError
from .device import amp_dtype
from .freeze import StagedFreezing
from .frozen import Split, capture, mismatch, random_frozen, split_model

FEATURES_VERSION = 1  # bump when what is cached for the same key would change
AUGMENTATIONS = ("crop_padding", "flip", "resized_crop", "rotate", "jitter", "hue", "policy")
AUGMENTATIONS += ("erase", "cutout")
MIXES = ("mixup", "cutmix")
CHECK_IMAGES = 4  # images the split is checked on: the rest must compute what the model does


class FeatureLoader:
    """Batches of cached features in the order, and at the batch positions, that `images` (the
    run's own loader) serves the images: resume and the epoch's plan stay exact. Epoch e reads
    view e % K: K augmented views, each epoch k's augmentation of every image."""

    def __init__(self, images: TensorLoader, views: list[torch.Tensor]):
        self.images, self.views = images, views
        self.device, self.batch_size = images.device, images.batch_size

    def __len__(self) -> int:
        return len(self.images)

    def indices(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """Each batch's image indices (a distillation teacher's cached targets are read by them)."""
        return self.images.indices(epoch, start_batch)

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        features = self.views[epoch % len(self.views)]
        for idx in self.images.indices(epoch, start_batch):
            x = features[idx]  # a gather: a copy, so in-place layers never touch the cache
            if x.ndim == 4 and self.images.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.images.labels[idx]

    def __iter__(self):
        return self.epoch(0)


class Inputs(NamedTuple):
    """What an epoch trains and validates: the whole model on images, or the rest on features."""

    model: nn.Module
    train: TensorLoader | FeatureLoader
    val_model: nn.Module
    val: TensorLoader | FeatureLoader | None


def augmentations(aug: AugConfig) -> list[str]:
    """The train-time augmentations a config turns on, as keys (aug.flip, ...)."""
    return [f"aug.{k}" for k in AUGMENTATIONS + MIXES if getattr(aug, k) != AugConfig.model_fields[k].default]


def run_reason(cfg: RunConfig, world: int, model: nn.Module) -> str | None:
    """Why no stage of this run can train on cached features, or None."""
    aug = augmentations(cfg.aug)
    mixed = [a for a in aug if a.split(".")[1] in MIXES]
    if world > 1:
        return "distributed training (torchrun) runs the whole model on every rank"
    if cfg.data.stream:
        return "data.stream decodes the images from their files every epoch"
    if cfg.train.teacher and aug:  # unaugmented, its targets are cached by image (commands/teacher.py)
        return "train.teacher's networks read the augmented images of every batch"
    if cfg.train.ema or cfg.train.lookahead:
        return f"train.{'ema' if cfg.train.ema else 'lookahead'} averages the whole model's weights"
    if cfg.train.progressive.scale < 1:
        return "train.progressive trains the early epochs on smaller images"
    if hasattr(model, "start_epoch"):
        return f"{cfg.model.name} changes which of its layers train from epoch to epoch"
    if mixed:
        return f"{' and '.join(mixed)} mix images within a batch, not one image at a time"
    if cfg.aug.repeats > 1:
        return "aug.repeats augments one image several ways within an epoch"
    if cfg.data.sampler == "balanced" and aug:  # unaugmented, a drawn image reads its cached features
        return "data.sampler=balanced with train-time augmentation draws one image several times an epoch"
    if aug and not cfg.finetune.feature_views:
        return f"train-time augmentation ({', '.join(aug)}); finetune.feature_views=K caches K views"
    return None


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def state_digest(model: nn.Module, skip: Callable[[str], bool] = lambda name: False) -> str:
    """sha256 of every tensor of the model's state (weights and buffers) but those `skip` names."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not skip(name):
            h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def frozen_fingerprint(model: nn.Module, split: Split) -> str:
    """sha256 of every tensor the frozen layers compute with: their weights and buffers."""
    return state_digest(model, split.rest.owns)


def read_features(folder: Path, meta: dict) -> dict[str, np.ndarray]:
    """The cached arrays, memory-mapped (copied once, to the device, by the caller)."""
    return {Path(name).stem: np.load(folder / name, mmap_mode="r") for name in meta["files"]}


class FrozenFeatures:
    """Per finetune stage: the whole model on images, or - when the stage's frozen layers are
    deterministic, the model splits where they end and finetune.cache_features allows - the rest
    on their cached output. Each stage that freezes says which in one line, and why."""

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        data: Prepared,
        freezing: StagedFreezing,
        world: int = 1,
        say: Callable[[str], None] = print,
    ):
        self.cfg, self.model, self.data, self.freezing, self.say = cfg, model, data, freezing, say
        self.amp = amp_dtype(cfg.train.amp, data.device)
        self.views = (cfg.finetune.feature_views or 1) if augmentations(cfg.aug) else 1
        self.plans = [self.plan(i, world) for i in range(len(freezing.stages))]  # "on" errors: here, early
        self.stage: int | None = None
        self.cached: tuple[nn.Module, FeatureLoader, FeatureLoader | None] | None = None

    def plan(self, i: int, world: int) -> Split | str | None:
        """Stage `i`'s split to train after, why its frozen layers run every step, or None when
        it freezes nothing. cache_features=on makes a reason an error."""
        mode = self.cfg.finetune.cache_features
        if not self.freezing.frozen[i]:
            return None
        frozen = self.freezing.frozen[i] | self.freezing.fixed  # fixed: by the model itself
        why = "finetune.cache_features=off" if mode == "off" else run_reason(self.cfg, world, self.model)
        split = None
        if why is None:
            split = split_model(self.model, frozen)
            if isinstance(split, str):
                why = f"cannot split {self.cfg.model.name} where its frozen layers end: {split}"
            else:
                why = self.split_reason(split, frozen)
        if why and mode == "on":
            raise VisionbenchError(
                f"finetune.cache_features=on, but stage {i + 1}'s frozen layers cannot be cached: {why}",
                fix="set finetune.cache_features=auto to run them every step where they cannot be cached",
            )
        return why or split

    def split_reason(self, split: Split, frozen: set[str]) -> str | None:
        """Why the frozen layers before `split` cannot be cached (random, not a chain, too
        large for the memory), checked on a few training images; or None."""
        bn_eval = self.cfg.finetune.bn_eval
        x, _ = next(self.data.loader("train", self.data.keep[:CHECK_IMAGES]).epoch(0))
        why = random_frozen(self.model, split, frozen, bn_eval)
        if why := why or mismatch(self.model, split, x, frozen, bn_eval):
            return why
        with torch.no_grad(), self.autocast():
            sample = capture(self.model.eval(), split.module, x)
        val = self.data.val
        images = len(self.data.keep) * self.views + (len(val.labels) if val is not None else 0)
        need = images * sample[0].numel() * sample.element_size()
        if need > (budget := self.budget()):
            return f"their output would take {size_text(need)}, more than the {size_text(budget)} it may use"
        return None

    def autocast(self):
        return torch.autocast(self.data.device.type, dtype=self.amp, enabled=self.amp is not None)

    def inputs(self, epoch: int, trained: nn.Module, scored: nn.Module) -> Inputs:
        """What epoch `epoch` trains: the rest on cached features in a stage that caches them
        (computed or read at the stage's start), else `trained` on the images."""
        i = self.freezing.stage_at(epoch)
        if i != self.stage:
            self.stage, self.cached = i, None  # the last stage's features go
            plan = self.plans[i]
            if isinstance(plan, Split):
                self.cached = self.enter(plan)
            elif plan:
                self.say(f"frozen layers: run every step, their output not cached: {plan}")
        if self.cached is None:
            return Inputs(trained, self.data.train, scored, self.data.val)
        rest, train, val = self.cached
        return Inputs(rest, train, rest if val else scored, val or self.data.val)

    def enter(self, split: Split) -> tuple[nn.Module, FeatureLoader, FeatureLoader | None]:
        """The rest and its loaders over the frozen layers' output, read from the cache or
        computed (and cached) now; the stage's one line said."""
        arrays, done = self.cached_arrays(split, self.key(split), lambda: self.compute(split))
        tensors = {k: self.tensor(a) for k, a in arrays.items()}
        views = [tensors[f"train-{k}"] for k in range(self.views)]
        val = FeatureLoader(self.data.val, [tensors["val"]]) if "val" in tensors else None
        views_note = f", {self.views} augmented views" if self.views > 1 else ""
        self.say(
            f"frozen layers: their output, {views[0][0].numel():,} values an image{views_note}, {done}; "
            f"the rest ({', '.join(split.rest.names)}) trains on it"
        )
        return split.rest, FeatureLoader(self.data.train, views), val

    def evaluated(
        self, name: str, scored: nn.Module, tta: bool, epoch: int
    ) -> tuple[nn.Module, TensorLoader | FeatureLoader]:
        """What the pass over split `name` ("test": the test evaluation; "val": the validation
        pass a temperature is fitted on) runs: when epoch `epoch` (the last trained) was in a
        stage that caches, the rest on those images' frozen-layer output (cached too: a sweep
        over head settings computes it once), else `scored` on the images. Test-time
        augmentation transforms images, so under it the whole model runs."""
        split = self.plans[self.freezing.stage_at(max(epoch, 0))]
        loader = self.data.test if name == "test" else self.data.val
        if not isinstance(split, Split) or tta:
            return scored, loader
        x, _ = next(self.data.loader("test", np.arange(1)).epoch(0))  # any image: the output's size
        with torch.no_grad(), self.autocast():
            need = len(loader.labels) * capture(self.model.eval(), split.module, x).numel() * 4
        held = sum(t.numel() * t.element_size() for t in self.held())
        words = {"test": "test", "val": "validation"}[name]
        if need + held > self.budget():
            self.say(f"frozen layers: the {words} images run through them (their output: {size_text(need)})")
            return scored, loader
        key = self.base_key(split) | {"split": name, "images": len(loader.labels)}
        if name == "val":  # which images validate: the base key names the dataset only
            key["val"] = self.val_key()
        arrays, done = self.cached_arrays(split, key, lambda: {name: self.view(split, loader, 0)})
        self.say(f"frozen layers: the {words} images' output {done}")
        return split.rest, FeatureLoader(loader, [self.tensor(arrays[name])])

    def held(self) -> list[torch.Tensor]:
        """The cached features the run holds now (the current stage's)."""
        if self.cached is None:
            return []
        _, train, val = self.cached
        return train.views + (val.views if val else [])

    def budget(self) -> float:
        """Bytes the cached features may take: a share of the memory, and on a GPU at most half
        of what is free on it."""
        budget = MEMORY_SHARE * (memory_total() or float("inf"))
        if self.data.device.type == "cuda":
            budget = min(budget, torch.cuda.mem_get_info(self.data.device)[0] / 2)
        return budget

    def cached_arrays(self, split: Split, key: dict, compute: Callable[[], dict]) -> tuple[dict, str]:
        """The arrays cached under `key`, or `compute()`d and cached now; where from, in words."""
        root = Path(self.data.dataset.cache or cache_root()) / "features"
        folder = root / f"{split.cut.replace('.', '_')[:40]}-{digest(key)[:20]}"
        say = lambda msg: self.say(f"frozen layers: {msg}")
        arrays = load_checked(folder, read_features, "cached features", "computing them again", say)
        if arrays is not None:
            return arrays, f"read from {folder}"
        t0 = time.perf_counter()
        arrays = compute()
        where = self.store(folder, arrays, key)
        return arrays, f"computed in {time.perf_counter() - t0:.1f} s ({where})"

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A cached array on the run's device, in the precision the rest computes in (stored as
        float32: bfloat16 comes back exactly)."""
        return torch.from_numpy(np.array(array)).to(self.data.device, self.amp or torch.float32)

    @torch.no_grad()
    def compute(self, split: Split) -> dict[str, np.ndarray]:
        """The frozen layers' output for every training image (one view per augmented epoch
        0..K-1, as the run's loader serves it) and validation image, in image order."""
        out = {f"train-{k}": self.view(split, self.data.train, k) for k in range(self.views)}
        if self.data.val is not None:
            out["val"] = self.view(split, self.data.val, 0)
        return out

    def view(self, split: Split, loader: TensorLoader, epoch: int) -> np.ndarray:
        self.model.eval()
        with self.autocast():
            parts = [capture(self.model, split.module, x) for x, _ in loader.epoch(epoch, whole=True)]
        parts = torch.cat(parts)
        ordered = torch.empty_like(parts)
        ordered[loader.order(epoch, whole=True)] = parts  # batch order back to image order
        return ordered.float().cpu().numpy()

    def store(self, folder: Path, arrays: dict[str, np.ndarray], key: dict) -> str:
        """Write the features into `folder`, whole or absent; where they are, in words."""
        try:
            write_arrays(folder, arrays, {"key": key})
        except OSError as e:  # a read-only or full disk: this run still has them
            return f"not cached: {e.strerror or e}"
        return f"cached in {folder}"

    def base_key(self, split: Split) -> dict:
        """What the frozen layers' output for any image depends on: their weights, the cut, the
        dataset, and how a loader serves its images (statistics, size, device, precision)."""
        cfg, data = self.cfg, self.data
        return {
            "version": FEATURES_VERSION,
            "frozen": frozen_fingerprint(self.model, split),
            "model": cfg.model.name,
            "cut": split.cut,
            "input_size": cfg.model.input_size,
            "data": data.dataset.fingerprint,
            "channels": cfg.data.channels,
            "mean": data.mean,
            "std": data.std,
            "device": data.device.type,
            "amp": str(self.amp),
            "channels_last": cfg.train.channels_last,
        }

    def val_key(self) -> str:
        """Which images validate: the dataset's own split, or the digest of those held out."""
        data = self.data
        return "own split" if "val" in data.dataset.splits else digest(data.held.tolist())

    def key(self, split: Split) -> dict:
        """What the training and validation features depend on: the base key, which images
        train and validate, and the augmentation plan of the views."""
        cfg, data = self.cfg, self.data
        augmented = self.views > 1 or bool(augmentations(cfg.aug))
        plan = dict(views=self.views, seed=cfg.seed, batch=cfg.train.batch_size, aug=cfg.aug.model_dump())
        return self.base_key(split) | {
            "train": digest(data.keep.tolist()),
            "val": self.val_key(),
            "augmentation": plan if augmented else None,
        }
