"""The one way back into a finished run: its config, its model with the saved weights, and the
preprocessing its data had; the data itself only when asked for, refused if it changed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..config import RunConfig
from ..data.loader import TensorLoader
from ..data.prepare import Prepared, prepare_data
from ..engine.device import amp_dtype, pick_device
from ..engine.loop import predict
from ..engine.tta import tta_views
from ..errors import VisionbenchError
from ..models.build import build_model
from .record import Run, runs_root

WEIGHTS = ("last", "best")


@dataclass
class DataSpec:
    """What a model is built for: its classes and input shape (C, H, W)."""

    classes: list[str]
    shape: tuple[int, int, int]


@dataclass
class LoadedRun:
    """A run back in memory: config, model (eval mode), the data's classes, shape and channel
    statistics as recorded at training time, and which weights file was loaded."""

    run: Run
    cfg: RunConfig
    model: nn.Module
    spec: DataSpec
    mean: list[float]
    std: list[float]
    fingerprint: str
    weights: str
    device: torch.device

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    @cached_property
    def data(self) -> Prepared:
        """The run's own data, refused if it changed since the run was trained and tested on it."""
        return verified_data(self.run, self.cfg, self.device)

    def views(self, tta: str | bool | None = None) -> str:
        """The test-time augmentation `tta` names: unset, the run's own (train.tta), as its test
        pass used; true is flip, false none (engine/tta.py)."""
        name = self.cfg.train.tta if tta is None else {True: "flip", False: "none"}.get(tta, tta)
        tta_views(name)  # an unknown name: the error naming the views there are
        return name

    def logits(self, images: np.ndarray, tta: str | bool | None = None) -> np.ndarray:
        """(N, C) logits for uint8 NCHW images, normalised as the run's loader did, averaged
        over the views `tta` names (unset: the run's own)."""
        loader = TensorLoader(
            images,
            np.zeros(len(images), dtype=np.int64),
            self.cfg.train.eval_batch_size,
            device=self.device,
            mean=self.mean,
            std=self.std,
            channels_last=self.cfg.train.channels_last,
        )
        views = tta_views(self.views(tta))
        logits, _ = predict(self.model, loader, amp_dtype(self.cfg.train.amp, self.device), views)
        return logits.numpy()


def verified_data(run: Run, cfg: RunConfig, device: torch.device) -> Prepared:
    data = prepare_data(cfg, device)
    trained_on = (run.read_json("run.json").get("data_report") or {}).get("fingerprint")
    if trained_on and trained_on != data.dataset.fingerprint:
        raise VisionbenchError(
            "the data found now differs from the data this run was trained and tested on",
            where=data.dataset.source,
            fix="evaluate with the run's own data (data.dir in its config.yaml, or --data-dir)",
        )
    return data


def open_run(
    ref: str | Path,
    runs_dir: str | Path | None = None,
    weights: str = "last",
    device: str = "auto",
    kind: type[LoadedRun] = LoadedRun,
    done: str = "used here",
) -> LoadedRun:
    """Open a run (id or folder) with its weights; `kind` is the class returned (a subclass
    adds behaviour, e.g. an ensemble member); `done` says what a saved ensemble cannot be."""
    if weights not in WEIGHTS:
        raise VisionbenchError(f"unknown weights '{weights}'", fix="use last or best")
    run = Run.open(ref, runs_root(runs_dir), done)
    cfg = run.config()
    dev = pick_device(device)
    report = run.read_json("run.json").get("data_report") or {}
    if "classes" in report:  # recorded at training time: no need for the training data
        try:
            spec = DataSpec(list(report["classes"]), tuple(int(n) for n in report["shape"]))
            mean, std = list(report["splits"]["mean"]), list(report["splits"]["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise VisionbenchError(
                f"run '{run.id}': run.json's data_report is incomplete or changed ({type(e).__name__}: {e})",
                where=str(run.path / "run.json"),
                fix="restore the run's run.json, or train it again",
            ) from None
    else:  # runs recorded before classes and shape were: read them from the data
        data = prepare_data(cfg, dev)
        spec, mean, std = DataSpec(data.dataset.classes, data.dataset.shape), data.mean, data.std
    model = build_model(cfg, spec, dev, init_weights=False)
    try:
        model.load_state_dict(run.load_weights(weights))
    except RuntimeError as e:  # tensors of other names or shapes: the record was changed
        raise VisionbenchError(
            f"run '{run.id}': its {weights} weights do not fit the model its config.yaml and run.json "
            f"describe ({str(e).splitlines()[0]})",
            where=str(run.path),
            fix="restore the run's config.yaml and run.json, or train it again",
        ) from None
    return kind(run, cfg, model.eval(), spec, mean, std, report.get("fingerprint", ""), weights, dev)
