"""A run's model from its config: the registry's network for the data's classes and shape,
resized inputs where asked, on the run's device and memory format; and the settings left
unset in the config, chosen from the data."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import BASE_LR, RunConfig, default_lr
from .registry import builder_options, create_model, get_builder, resize_inputs

DEFAULT_BATCH = 128
MIN_STEPS = 8  # fewer optimizer steps an epoch learn little: one step at lr 0.1 diverged on 196 photos
SMALL_STEM_MAX = 64  # a stride-1 stem keeps small inputs' resolution; above this it costs too much


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
    batch = cfg.train.batch_size
    if batch is None:
        batch = DEFAULT_BATCH
        while batch > 8 and n_train // batch < MIN_STEPS:
            batch //= 2
        batch = max(1, min(batch, n_train))  # fewer than 8 images: the one batch they make
        if batch != DEFAULT_BATCH:
            notes.append(
                f"train.batch_size={batch}: {n_train:,} training images make {n_train // batch} steps an epoch "
                f"({n_train // DEFAULT_BATCH} at {DEFAULT_BATCH}); set train.batch_size=N to choose"
            )
    elif batch > n_train:  # one partial batch an epoch: the batch, and the lr scaled by it, is n_train
        notes.append(
            f"warning: train.batch_size={n_train}, not {batch}: the {n_train:,} training images make one "
            f"batch (one optimizer step an epoch); set train.batch_size=N below {n_train} to choose"
        )
        batch = n_train
    elif n_train // batch < MIN_STEPS // 2:
        notes.append(
            f"warning: train.batch_size={batch} makes {max(1, n_train // batch)} optimizer step(s) an epoch "
            f"for {n_train:,} training images; a smaller batch (or leaving it unset) learns more per epoch"
        )
    lr = cfg.optim.lr
    if lr is None:
        lr, how = default_lr(cfg.optim.name, batch, DEFAULT_BATCH)
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
    if size != h:
        resize_inputs(model, size)
    model = model.to(device)
    if cfg.train.channels_last:  # measured 1.5x faster on 2 CPU cores for small_cnn, and on GPUs
        model = model.to(memory_format=torch.channels_last)
    return model
