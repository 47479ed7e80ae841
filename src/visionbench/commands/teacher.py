"""The teacher of a distilled run (train.teacher): loaded and checked against the run's data,
its targets cached where the training images are the same every epoch, and its identity
recorded at the run's start so a resume cannot go on distilling from another teacher."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..analysis.predictor import Ensemble, open_predictor
from ..config import RunConfig
from ..data.prepare import Prepared
from ..engine.device import amp_dtype
from ..engine.distill import Teacher
from ..engine.features import augmentations
from ..errors import VisionbenchError
from ..runs import Run

TEACHER_FILE = "teacher.json"


def load_teacher(cfg: RunConfig, data: Prepared, root: Path, device, console: Console) -> Teacher | None:
    """train.teacher's networks on this run's device, refused unless trained and tested on the
    same data (their inputs are this run's batches, normalised as its loader does)."""
    ref = cfg.train.teacher
    if not ref:
        return None
    kind, name = ref.split(":", 1) if ref.startswith(("run:", "ensemble:")) else ("", ref)
    predictor = open_predictor(name, root, None, str(device))
    is_ensemble = isinstance(predictor, Ensemble)
    if kind and (kind == "ensemble") != is_ensemble:
        found = "a saved ensemble" if is_ensemble else "a run"
        raise VisionbenchError(
            f"train.teacher={ref} names {found}",
            fix=f"write train.teacher={'ensemble' if is_ensemble else 'run'}:{name}",
        )
    shape = tuple(predictor.spec.shape)
    if predictor.fingerprint != data.dataset.fingerprint or shape != tuple(data.dataset.shape):
        raise VisionbenchError(
            f"the teacher '{predictor.id}' was trained and tested on other data than this run's (its data "
            f"fingerprint or its {'x'.join(map(str, shape))} inputs differ): it would be shown images it "
            "never learned to read",
            fix="distil from a run (or ensemble) trained on this run's data and data settings",
        )
    held = {(m.cfg.data.val_fraction, m.cfg.data.split_seed) for m in predictor.members}
    if held != {(cfg.data.val_fraction, cfg.data.split_seed)}:
        console.print(
            f"warning: the teacher '{escape(predictor.id)}' held out another validation split "
            "(data.val_fraction, data.split_seed): it may have trained on this run's validation images, "
            "so validation figures (and what is chosen by them) read high",
            style="yellow",
        )
    members = predictor.members
    # the temperature each member's plain logits were calibrated with (the teacher sees one view)
    calibration = [m.temperature_for(False) for m in members]
    fitted = [f"{m.id} T={t:.3f}" for m, t in zip(members, calibration) if t is not None]
    console.print(
        f"distilling {escape(predictor.id)} ({len(members)} network{'s' * (len(members) > 1)}): "
        f"train.distill_weight={cfg.train.distill_weight}, train.distill_temperature={cfg.train.distill_temperature}"
        + (f"; calibrated as predict and soft votes use them ({escape(', '.join(fitted))})" if fitted else "")
    )
    weights = predictor.weights if is_ensemble else [1.0]
    teacher = Teacher(
        [m.model for m in members],
        weights,
        cfg.train.distill_weight,
        cfg.train.distill_temperature,
        calibration,
    )
    teacher.identity = {"teacher": ref, "id": predictor.id, "fingerprint": teacher.fingerprint()}
    return teacher


def cache_targets(cfg: RunConfig, data: Prepared, teacher: Teacher | None, console: Console) -> None:
    """The teacher's targets computed once per training image where the training images are the
    same every epoch (no train-time augmentation: the frozen-features cache's test), else
    computed every step; which, said in one line."""
    if teacher is None:
        return
    if aug := augmentations(cfg.aug):
        console.print(
            f"teacher: runs every step: train-time augmentation ({', '.join(aug)}) changes its inputs "
            "every epoch"
        )
        return
    t0 = time.perf_counter()
    loader = data.loader("train", data.keep)  # unaugmented, in image order
    # the micro-batch a step runs: the memory check counted the teacher's activations for it
    loader.batch_size = -(-cfg.train.batch_size // (data.shard[1] * cfg.train.accumulate))
    teacher.cache_targets(loader, amp_dtype(cfg.train.amp, data.device))
    console.print(
        f"teacher: its targets computed once for the {len(data.keep):,} training images in "
        f"{time.perf_counter() - t0:.1f} s, reused every epoch (no train-time augmentation)"
    )


def record_teacher(run: Run, teacher: Teacher | None) -> None:
    """The teacher's identity, written at the run's start (teacher.json)."""
    if teacher is not None:
        run.write_json(TEACHER_FILE, teacher.identity)


def check_teacher(run: Run, teacher: Teacher | None) -> None:
    """A resume goes on distilling from the teacher the run started with, or is refused."""
    recorded = run.read_json(TEACHER_FILE)
    if teacher is None or not recorded or not any(run.path.glob("checkpoint.pt*")):
        return  # no teacher, recorded before this check existed, or starting again from scratch
    if recorded.get("fingerprint") != teacher.identity["fingerprint"]:
        raise VisionbenchError(
            f"the teacher '{teacher.identity['id']}' is not the one run '{run.id}' started distilling "
            f"from: its weights (or vote weights, or calibration) changed since (fingerprint "
            f"{recorded.get('fingerprint', '')[:12]} then, {teacher.identity['fingerprint'][:12]} now); "
            "resuming would distil the rest of the run from another teacher",
            where=str(run.path / TEACHER_FILE),
            fix=f"train the run again from the start with the teacher as it is now "
            f"(visionbench train --config {run.path / 'config.yaml'}), or put back the teacher's weights",
        )
