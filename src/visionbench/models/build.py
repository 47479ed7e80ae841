"""A run's model from its config: the registry's network for the data's classes and shape,
resized inputs where asked, on the run's device and memory format; and the settings left
unset in the config, chosen from the data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import torch
import torch.nn as nn

from ..config import BASE_LR, RunConfig, default_lr
from ..data.split import stratified_sample
from ..errors import VisionbenchError
from .registry import builder_options, create_model, get_builder, resize_inputs, resized

DEFAULT_BATCH = 128
# PyTorch's words for a pooling or convolution window larger than the map it slides over: the
# input is too small for the network (small_cnn at 2 px), not a bug to show as a traceback
TOO_SMALL = ("Output size is too small", "Kernel size can't be greater", "Padding size should be less than")
MIN_STEPS = 8  # fewer optimizer steps an epoch learn little: one step at lr 0.1 diverged on 196 photos
MIN_BATCH = 2  # BatchNorm normalises over the batch: one image has no spread to normalise by
SMALL_STEM_MAX = 64  # a stride-1 stem keeps small inputs' resolution; above this it costs too much
WHITEN_IMAGES = 5000  # airbench94 whitens from 5,000 CIFAR-10 training images (stored shuffled there)


def auto_settings(
    cfg: RunConfig, n_train: int, shape, originals: dict | None = None
) -> tuple[RunConfig, list[str]]:
    """Fill what the config leaves unset (None) from the data - batch size, learning rate, the
    ResNet stem - and return one line per choice saying what was chosen and the key that
    overrides it (the folder image size, chosen when the data was read, is reported too)."""
    notes = []
    originals = originals or {}
    if cfg.data.img_size is None and originals.get("size_chosen_for") not in (None, "data.img_size"):
        notes.append(
            f"data.img_size: images brought to {shape[1]}x{shape[2]} px, from {originals['size_chosen_for']}; "
            "set data.img_size=N to choose"
        )
    if originals.get("upscaled"):
        notes.append(f"warning: {originals['upscaled']}")
    batch = cfg.train.batch_size
    if batch is None:
        batch = DEFAULT_BATCH
        while batch > MIN_BATCH and n_train // batch < MIN_STEPS:
            batch //= 2
        batch = max(1, min(batch, n_train))  # fewer than 8 images: the one batch they make
        if batch != DEFAULT_BATCH:
            fewer = (
                f", fewer than {MIN_STEPS} even at the smallest batch" if n_train // batch < MIN_STEPS else ""
            )
            notes.append(
                f"train.batch_size={batch}: {n_train:,} training images make {n_train // batch} steps an epoch "
                f"({n_train // DEFAULT_BATCH} at {DEFAULT_BATCH}{fewer}); set train.batch_size=N to choose"
            )
    elif batch > n_train:  # one partial batch an epoch, of n_train images: what the lr scales with
        notes.append(
            f"warning: train.batch_size={batch} is more than the {n_train:,} training images: one batch "
            f"of {n_train:,} (one optimizer step) an epoch; set train.batch_size=N below {n_train} to choose"
        )
    elif n_train // batch < MIN_STEPS // 2:
        notes.append(
            f"warning: train.batch_size={batch} makes {max(1, n_train // batch)} optimizer step(s) an epoch "
            f"for {n_train:,} training images; a smaller batch (or leaving it unset) learns more per epoch"
        )
    lr = cfg.optim.lr
    if lr is None:
        lr, how = default_lr(cfg.optim.name, min(batch, n_train), DEFAULT_BATCH)  # the batch there is
        if batch != DEFAULT_BATCH or lr != BASE_LR:
            notes.append(f"optim.lr={lr:.3g}: {how}; set optim.lr=X to choose")
    small_stem = cfg.model.small_stem
    if small_stem is None:
        size = cfg.model.input_size or shape[1]
        small_stem = size <= SMALL_STEM_MAX
        if "small_stem" in builder_options(get_builder(cfg.model.name)):
            notes.append(
                f"model.small_stem={str(small_stem).lower()}: inputs are {size} px "
                f"({'<=' if small_stem else '>'} {SMALL_STEM_MAX}); set model.small_stem=true|false to choose"
            )
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"batch_size": batch}),
            "optim": cfg.optim.model_copy(update={"lr": lr}),
            "model": cfg.model.model_copy(update={"small_stem": small_stem}),
        }
    )
    return cfg, notes


def build_model(cfg: RunConfig, ds, device: torch.device, init_weights: bool = True) -> nn.Module:
    """The run's model for `ds` (a Dataset, or anything with its .classes and .shape);
    init_weights=False skips the pretrained file when a run's own weights are loaded next."""
    c, h, _ = ds.shape
    size = cfg.model.input_size or h
    model = create_model(
        cfg.model.name,
        num_classes=len(ds.classes),
        in_chans=c,
        img_size=size,
        pretrained=cfg.model.pretrained and init_weights,
        defaults={"small_stem": cfg.model.small_stem, "dropout": cfg.model.dropout},
        **cfg.model.kwargs,
    )
    if size != h or cfg.train.progressive.scale < 1:  # progressive: resized while an epoch is smaller
        resize_inputs(model, size)
    model = model.to(device)
    if cfg.train.channels_last:  # measured 1.5x faster on 2 CPU cores for small_cnn, and on GPUs
        model = model.to(memory_format=torch.channels_last)
    return model


def init_from_training_images(model: nn.Module, cfg: RunConfig, data) -> None:
    """Set the layers a model takes from the training images (fastnet's whitening) from a seeded
    sample of about WHITEN_IMAGES of them (`data`: a Prepared), drawn from every class in
    proportion, normalised as the loader serves them and resized as the network sees them.
    Not the first N in stored order: in a class-sorted dataset (the CIFAR-10 JPEG copy, a folder)
    those are one class, and whitening from one class left the others' patches far from unit
    variance; nor at the stored size when model.input_size resizes (8 px digits at 16 px: the
    whitened variances came out [1.06, 0.18, 0.17, 0.03] instead of ~1)."""
    labels = data.dataset.splits["train"].labels[data.keep]
    idx = data.keep[stratified_sample(labels, WHITEN_IMAGES, cfg.seed)]
    batches = (x for x, _ in data.loader("train", idx).epoch(0))
    if size := cfg.model.input_size:
        batches = (resized(x, size) for x in batches)
    model.init_from_data(batches)


@contextmanager
def input_size_errors(cfg: RunConfig, ds) -> Iterator[None]:
    """A forward pass inside that fails because the inputs are smaller than the network's
    pooling and kernels span becomes an error naming the smallest size that runs and the key
    that sets it; every other error passes as it is."""
    try:
        yield
    except RuntimeError as e:
        if not too_small(e):
            raise
        side = cfg.model.input_size or ds.shape[1]
        smallest = smallest_input(cfg, ds)
        if smallest is None:
            fix = "choose another model (`visionbench models` lists them)"
        elif cfg.model.input_size or not cfg.data.name.startswith(("folder:", "csv:")):
            fix = f"set model.input_size={smallest} or more (inputs are resized on the device)"
        else:
            fix = f"set data.img_size={smallest} or more, or model.input_size={smallest} (resized on the device)"
        need = f"at least {smallest} px" if smallest else "larger inputs"
        raise VisionbenchError(
            f"{cfg.model.name} needs {need}, got {side}x{side} ({str(e).splitlines()[0]})", fix=fix
        ) from None


def too_small(e: RuntimeError) -> bool:
    """Whether PyTorch's error says a window was larger than the map it slides over."""
    return any(words in str(e) for words in TOO_SMALL)


def smallest_input(cfg: RunConfig, ds, limit: int = 1024) -> int | None:
    """The smallest square side `cfg`'s model runs a training forward pass on (a fresh model on
    the CPU per size tried: doubling, then halving the gap), or None up to `limit` px."""
    c = ds.shape[0]
    model_cfg = cfg.model.model_copy(update={"input_size": None, "pretrained": False, "weights": None})
    trial = cfg.model_copy(
        update={"model": model_cfg, "train": cfg.train.model_copy(update={"channels_last": False})}
    )

    def runs(side: int) -> bool:
        try:
            shape = SimpleNamespace(classes=ds.classes, shape=(c, side, side))
            model = build_model(trial, shape, torch.device("cpu"), init_weights=False).train()
            with torch.no_grad():
                model(torch.rand(2, c, side, side))
        except VisionbenchError:  # the model's own size check
            return False
        except RuntimeError as e:
            if too_small(e):
                return False
            raise
        return True

    high = 1
    while not runs(high):
        if high >= limit:
            return None
        high *= 2
    low = high // 2  # fails (or 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if runs(mid) else (mid, high)
    return high
