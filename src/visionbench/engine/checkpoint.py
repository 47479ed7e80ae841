"""Checkpoints that are whole or absent (temp file, fsync, rename, previous one kept, hash
checked), and the one training-state type they hold."""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import VisionbenchError, write_error


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, flushed to disk; the caller renames it.
    On any failure (a full disk, a signal) the temp file is removed and `path` is untouched."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    os.replace(write_synced(path, data), path)
    fsync_dir(path.parent)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write the new checkpoint to disk first; only then move the current one to <name>.prev
    and rename the new one in, and record its sha256 in <name>.sha256 (last: the commit
    marker). A crash at any point leaves a verifiable checkpoint, current or previous."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    tmp = write_synced(path, data)
    prev = path.with_name(path.name + ".prev")
    digest = path.with_name(path.name + ".sha256")
    if path.exists() and digest.exists():
        # the digest goes first: at every instant one of (current, prev) matches its digest
        atomic_write_bytes(prev.with_name(prev.name + ".sha256"), digest.read_bytes())
        os.replace(path, prev)
    os.replace(tmp, path)
    atomic_write_bytes(digest, hashlib.sha256(data).hexdigest().encode())


def _read_verified(path: Path) -> dict | str:
    """The checkpoint at `path`, or why it cannot be used. Its hash matching is not enough: a
    file we did not write can come with its own digest, so what loads must be a checkpoint."""
    digest = path.with_name(path.name + ".sha256")
    if not path.is_file() or not digest.is_file():
        return "missing"
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest.read_text().strip():
        return "cut short or changed (its sha256 differs)"
    import io

    try:  # weights_only: a checkpoint can never run code, whoever wrote it
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - its advice (weights_only=False) must never be followed
        return f"not a checkpoint torch can read safely ({type(e).__name__})"
    return state if isinstance(state, dict) else "not a checkpoint (no dict in it)"


def load_checkpoint(path: Path) -> dict:
    """The newest whole checkpoint; falls back to the previous one if the last is corrupt."""
    state = _read_verified(path)
    if isinstance(state, dict):
        return state
    prev = path.with_name(path.name + ".prev")
    older = _read_verified(prev)
    if isinstance(older, str):
        raise VisionbenchError(
            f"no intact checkpoint to resume from ({path.name}: {state}; {prev.name}: {older})",
            where=str(path),
            fix="start the run again under a new name (its config.yaml: --config), never by loading "
            "the file unsafely",
        )
    import warnings

    warnings.warn(
        f"{path} is corrupt or incomplete ({state}); resuming from the previous checkpoint {prev}",
        stacklevel=2,
    )
    return older


class CheckpointTimer:
    """Says when a periodic checkpoint is due: every `steps` training steps and/or every
    `minutes` of wall time, counted from the last checkpoint. As a flag it is true when a
    checkpoint is due or `stop` is set: the loop breaks at that batch boundary either way.
    `agree` makes distributed ranks break at the same step (any rank's reason counts)."""

    def __init__(self, stop, steps: int | None = None, minutes: float | None = None, agree=bool):
        self.stop, self.steps, self.seconds = stop, steps, minutes * 60 if minutes else None
        self.agree = agree
        self.reset()

    def reset(self) -> None:
        self.n, self.t0 = 0, time.monotonic()

    def counting(self, on_step):
        """`on_step`, which also counts the step."""

        def counted(batch: int, loss: torch.Tensor) -> None:
            on_step(batch, loss)
            self.n += 1

        return counted

    @property
    def due(self) -> bool:
        return bool(
            (self.steps and self.n >= self.steps)
            or (self.seconds and time.monotonic() - self.t0 >= self.seconds)
        )

    def __bool__(self) -> bool:
        return self.agree(bool(self.stop) or self.due)


@dataclass
class TrainingState:
    """Everything a resume needs: where training is (epoch, next batch, the sums of an epoch
    cut by a checkpoint, the best score) and the live objects whose state is saved with it.
    The data's fingerprint and the batch size guard a resume against other data."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    freezing: Any
    ema: Any = None
    scaler: Any = None  # fp16's loss scale (engine/loop.py optimizer_step)
    fingerprint: str = ""
    batch_size: int = 0
    epoch: int = 0
    batch: int = 0
    partial: dict | None = None
    best: float = -1.0

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": self.partial,
            "best": self.best,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "freezing": self.freezing.state_dict(),
            "fingerprint": self.fingerprint,
            "batch_size": self.batch_size,
        }

    def save(self, path: Path) -> None:
        try:
            save_checkpoint(path, self.state_dict())
        except OSError as e:
            then = "`visionbench train --resume` (the previous checkpoint is intact)"
            raise write_error(e, "the checkpoint", path, then) from None

    def restore(self, path: Path) -> None:
        """Load the newest intact checkpoint at `path` into the live objects, RNGs included."""
        ck = load_checkpoint(path)
        missing = set(self.state_dict()) - set(ck) - {"freezing", "ema", "scaler"}  # older ones lack them
        if missing:
            raise VisionbenchError(
                f"not a visionbench checkpoint: no {', '.join(sorted(missing))} in it",
                where=str(path),
                fix="start the run again under a new name (its config.yaml: --config)",
            )
        config = path.parent / "config.yaml"
        if ck["fingerprint"] != self.fingerprint:
            raise VisionbenchError(
                "the checkpoint was made with other data: the data found now has another fingerprint",
                where=str(path),
                fix=f"resume with the data the run was trained on (data.name and data.dir in {config}; "
                "restore its files if they changed), or train a new run on the data as it is now",
            )
        if ck["batch_size"] != self.batch_size:  # the epoch position and schedule count its batches
            raise VisionbenchError(
                f"the checkpoint was made with train.batch_size={ck['batch_size']}; its config now gives "
                f"{self.batch_size}",
                where=str(config),
                fix=f"train a new run with these settings (visionbench train --config {config}): a resume "
                "replays the checkpoint's batches, so it cannot change the batch",
            )
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"])
            self.freezing.load_state_dict(ck.get("freezing", {}))
            if self.ema is not None:
                self.ema.load_state_dict(ck["ema"])
            if self.scaler is not None and ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise VisionbenchError(
                f"the checkpoint does not fit this run's model or optimizer ({str(e).splitlines()[0]})",
                where=str(path),
                fix="resume with the run's own config.yaml, or start the run again under a new name",
            ) from None
        self.epoch, self.batch, self.partial, self.best = ck["epoch"], ck["batch"], ck["partial"], ck["best"]
