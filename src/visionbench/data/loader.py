"""The tensor-resident loader: uint8 images live on the run's device and are batched and
augmented there, per sample and vectorised (the airbench approach) -- no per-image Python."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugConfig
from .augment import Augment, batch_generators, build_augment
from .balance import balanced_order
from .split import channel_stats, stratified_split  # noqa: F401  (re-exported)


class TensorLoader:
    """Batches from a uint8 (N, C, H, W) array held on `device`.

    Each epoch's order and augmentation parameters are drawn up front from a generator
    seeded by (seed, epoch): any batch of any epoch can be reproduced, so a run resumed
    at a batch boundary sees exactly the batches an uninterrupted one would. With
    `sampler="balanced"` the order is drawn class-balanced (data/balance.py) from that same
    generator. With `shard=(rank, world)` each of `world` processes yields its own equal slice
    of every batch of that one plan: together they train on the global batch of a single process.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        mean=None,
        std=None,
        train: bool = False,
        crop_padding: int = 0,
        flip: bool | str = False,
        seed: int = 0,
        channels_last: bool = False,
        augment: Augment | None = None,
        repeats: int = 1,
        shard: tuple[int, int] = (0, 1),
        sampler: str = "shuffle",
    ):
        self.device = torch.device(device)
        self.images = self._place(images)
        # class indices, or multi-hot rows (multi-label) as the float targets BCE takes
        dtype = np.float32 if np.ndim(labels) == 2 else np.int64
        self.labels = torch.from_numpy(np.asarray(labels, dtype=dtype)).to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_padding, self.flip = (crop_padding, flip) if train else (0, False)
        self.channels_last = channels_last
        self.augment = augment if train else None
        self.repeats = repeats if train else 1
        self.rank, self.world = shard
        # drawn on the CPU from the plan's generator: the same order on every device and rank
        self.balanced = self.labels.cpu() if train and sampler == "balanced" else None
        c = self.images.shape[1]
        mean = torch.tensor(mean if mean is not None else [0.5] * c, dtype=torch.float32)
        std = torch.tensor(std if std is not None else [0.5] * c, dtype=torch.float32)
        # (x/255 - mean)/std folded into one multiply-add on the uint8 values
        self.scale = (1 / (255 * std)).view(1, c, 1, 1).to(self.device)
        self.shift = (-mean / std).view(1, c, 1, 1).to(self.device)

    def _place(self, images: np.ndarray) -> torch.Tensor:
        # in memory and writable: the cache's memory map is read-only and must stay untouched
        # (a fancy-indexed array already is a private copy: no second copy then)
        private = isinstance(images, np.ndarray) and not isinstance(images, np.memmap)
        images = np.asarray(images, dtype=np.uint8)
        if not (private and images.flags.writeable and images.flags.c_contiguous):
            images = np.array(images, order="C")
        return torch.from_numpy(images).to(self.device)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx].float()

    def _slices(self, start_batch: int = 0, whole: bool = False):
        """(batch index, slice of the epoch's order) for each batch from `start_batch`: this
        rank's share of the global batch (all of it in a single process). `whole`: the last
        partial batch too, which training drops."""
        per = self.batch_size // self.world
        for b in range(start_batch, math.ceil(len(self.labels) / self.batch_size) if whole else len(self)):
            start = b * self.batch_size + self.rank * per
            yield b, slice(start, start + per)

    def __len__(self) -> int:
        n = len(self.labels)
        # training drops the last partial batch: every step sees a full batch (BatchNorm)
        return n // self.batch_size if self.train and n >= self.batch_size else math.ceil(n / self.batch_size)

    def _epoch_plan(self, epoch: int, whole: bool = False) -> dict[str, torch.Tensor]:
        """Order, flips and crops of `epoch`; `whole`: every image once (never sampled)."""
        n = len(self.labels)
        if not self.train:
            return {"order": torch.arange(n, device=self.device)}
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        sampled = self.balanced is not None and not whole
        plan = {"order": balanced_order(self.balanced, g) if sampled else torch.randperm(n, generator=g)}
        if self.repeats > 1:  # repeated augmentation (Hoffer et al., 2020): n/r images, r copies each
            plan["order"] = plan["order"][: math.ceil(n / self.repeats)].repeat_interleave(self.repeats)[:n]
        if self.flip == "alternate":  # each image's flip drawn once; every other epoch mirrored
            fixed = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
            plan["flip"] = (torch.rand(n, generator=fixed) < 0.5)[plan["order"]] ^ bool(epoch % 2)
        elif self.flip:
            plan["flip"] = torch.rand(n, generator=g) < 0.5
        if self.crop_padding:
            p = self.crop_padding
            plan["shift"] = torch.randint(-p, p + 1, (n, 2), generator=g)
        return {k: v.to(self.device) for k, v in plan.items()}

    def order(self, epoch: int, whole: bool = False) -> torch.Tensor:
        """The image indices in the order `epoch` serves them (`whole`: as epoch(whole=True))."""
        return self._epoch_plan(epoch, whole)["order"]

    def indices(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """Each batch's image indices, as `epoch` serves them from `start_batch`."""
        order = self.order(epoch)
        return (order[sel] for _, sel in self._slices(start_batch))

    def epoch(
        self, epoch: int = 0, start_batch: int = 0, whole: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` from `start_batch`; `whole`: every image of the epoch's order,
        augmented as training sees it, the last partial batch included (cached feature views)."""
        plan = self._epoch_plan(epoch, whole)
        order = plan["order"]
        for b, sel in self._slices(start_batch, whole):
            idx = order[sel]
            x = self._gather(idx)
            if "shift" in plan:
                x = translate(x, plan["shift"][sel], self.crop_padding)
            if "flip" in plan:
                x = torch.where(plan["flip"][sel].view(-1, 1, 1, 1), x.flip(3), x)
            y = self.labels[idx]
            if self.augment is not None:  # per-sample draws from a generator seeded by (batch, rank)
                g, rng = batch_generators(self.seed, epoch, b * self.world + self.rank, self.device)
                x = self.augment.pixels(x, g) * self.scale + self.shift
                x, y = self.augment.batch(x, y, g, rng)
            else:
                x = x * self.scale + self.shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __iter__(self):
        return self.epoch(0)


def translate(x: torch.Tensor, shift: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample random crop: reflect-pad by `pad`, then read each image at its own (dy, dx),
    as one gather for the whole batch."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = torch.arange(h, device=x.device) + pad + shift[:, :1]  # (B, H)
    cols = torch.arange(w, device=x.device) + pad + shift[:, 1:]  # (B, W)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def augmented_view(
    images: np.ndarray, labels: np.ndarray, aug: AugConfig, num_classes: int, mean, std, seed: int = 0
) -> np.ndarray:
    """The given uint8 images as one training epoch augments them - crop, flip and every
    per-sample augmentation `aug` asks for (data/augment.py), normalised by `mean` and `std` as
    in training (erased pixels are the channel mean), Mixup/CutMix partners from among them -
    back in 0..255 as uint8, in the caller's order: the training loader itself, for `data show`."""
    loader = TensorLoader(
        images,
        labels,
        len(images),
        train=True,
        crop_padding=aug.crop_padding,
        flip=aug.flip,
        seed=seed,
        mean=mean,
        std=std,
        augment=build_augment(aug, num_classes),
    )
    inverse = torch.argsort(loader.order(0))  # back to the caller's order
    x, _ = next(loader.epoch(0))
    pixels = (x[inverse] - loader.shift) / loader.scale
    return pixels.round().clamp(0, 255).to(torch.uint8).numpy()
