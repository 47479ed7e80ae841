"""A run or a saved ensemble as one predictor: uint8 images in, class probabilities out.

A saved ensemble is a folder that `eval`, `predict` (and `report`) accept wherever a run is:

    NAME/
      ensemble.json   {"kind": "ensemble",
                       "vote": "hard" | "soft",
                       "tie_break": index of the member that decides hard-vote ties,
                       "members": [{"id": run id, "path": absolute run folder,
                                    "weights": "last" | "best" (which weights file),
                                    "weight": vote weight}, ...],
                       "classes": [class names, shared by every member],
                       "fingerprint": the test data's fingerprint, shared by every member}
      summary.json    what `ensemble` measured when saving: {"vote", "tie_break" (member id),
                       "weights", "top1", "n", "members": [{"id", "top1"}, ...],
                       "agreement": M x M share of test images two members label alike}
      eval[-tta]/     evaluation bundles, as for a run (see evaluation.py)

Members are found by "path", else by "id" under the runs folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .analysis.vote import hard_vote, member_weights, soft_vote, vote_shares
from .config import RunConfig
from .data import TensorLoader
from .engine.loop import pick_device, predict
from .engine.tta import tta_views
from .errors import VisionbenchError
from .fit import amp_dtype, build_model, prepare_data, read_config, run_data
from .runs import Run, runs_root

VOTES = ("hard", "soft")


@dataclass
class DataSpec:
    """What a model is built for: its classes and input shape (C, H, W)."""

    classes: list[str]
    shape: tuple[int, int, int]


@dataclass
class Outputs:
    """Predictions for N images: probabilities (N, C) and the predicted class (N,); `logits`
    are a run's logits, or for an ensemble log(probs); `members` holds members' logits."""

    probs: np.ndarray
    preds: np.ndarray
    logits: np.ndarray
    members: np.ndarray | None = None  # (M, N, C)
    second: np.ndarray | None = None  # (N, C) orders classes of equal probs (hard vote: mean probs)

    def top_classes(self, k: int) -> np.ndarray:
        """(N, k) class indices: the prediction first (a hard vote's need not have the most
        votes alone), then by probability, then by `second`."""
        first = self.probs.astype(np.float64).copy()
        first[np.arange(len(self.preds)), self.preds] = np.inf
        second = np.zeros_like(first) if self.second is None else self.second
        return np.lexsort((-second, -first), axis=-1)[:, : min(k, first.shape[1])]


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(-1).double().numpy()


@dataclass
class Member:
    """One run's model, with the preprocessing its data had (size policy, channel stats)."""

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

    @property
    def members(self) -> list[Member]:
        return [self]

    def logits(self, images: np.ndarray, tta: str | None = None) -> np.ndarray:
        """(N, C) logits for uint8 NCHW images, normalised as the run's loader did."""
        loader = TensorLoader(
            images,
            np.zeros(len(images), dtype=np.int64),
            self.cfg.train.eval_batch_size,
            device=self.device,
            mean=self.mean,
            std=self.std,
            channels_last=self.cfg.train.channels_last,
        )
        logits, _ = predict(self.model, loader, amp_dtype(self.cfg, self.device), tta_views(tta))
        return logits.numpy()

    def outputs(self, images: np.ndarray, tta: str | None = None) -> Outputs:
        logits = self.logits(images, tta)
        probs = softmax(logits)
        return Outputs(probs, probs.argmax(1), logits)


def load_member(ref: str | Path, root: Path, weights: str = "last", device: str = "auto") -> Member:
    if weights not in ("last", "best"):
        raise VisionbenchError(f"unknown weights '{weights}'", fix="use last or best")
    run = Run.open(ref, root)
    cfg = read_config(run)
    dev = pick_device(device)
    report = run.read_json("run.json").get("data_report", {})
    if "classes" in report:  # recorded at training time: no need for the training data
        spec = DataSpec(report["classes"], tuple(report["shape"]))
        mean, std = report["splits"]["mean"], report["splits"]["std"]
    else:  # runs recorded before classes and shape were: read them from the data
        data = prepare_data(cfg, dev)
        spec, mean, std = DataSpec(data.dataset.classes, data.dataset.shape), data.mean, data.std
    model = build_model(cfg, spec, dev)
    model.load_state_dict(run.load_weights(weights))
    return Member(run, cfg, model, spec, mean, std, report.get("fingerprint", ""), weights, dev)


@dataclass
class Ensemble:
    """Members combined by a hard (majority, with a tie-break member) or soft (mean
    probability) vote, each member's vote weighted by `weights`."""

    members: list[Member]
    vote: str = "hard"
    weights: list[float] = field(default_factory=list)
    tie_break: int = 0
    path: Path | None = None

    def __post_init__(self):
        if self.vote not in VOTES:
            raise VisionbenchError(f"unknown vote '{self.vote}'", fix="use --vote hard or --vote soft")
        self.weights = self.weights or [1.0] * len(self.members)
        try:
            member_weights(len(self.members), self.weights)
        except ValueError as e:
            raise VisionbenchError(str(e), fix="give one --weights value per member, e.g. 1,1,2") from None
        check_compatible(self.members)

    @property
    def id(self) -> str:
        return self.path.name if self.path else "ensemble"

    @property
    def classes(self) -> list[str]:
        return self.members[0].classes

    @property
    def spec(self) -> DataSpec:
        return self.members[0].spec

    @property
    def cfg(self) -> RunConfig:
        return self.members[0].cfg

    @property
    def fingerprint(self) -> str:
        return self.members[0].fingerprint

    def combine(self, member_logits: np.ndarray) -> Outputs:
        probs = np.stack([softmax(m) for m in member_logits])
        mean = soft_vote(probs, self.weights)
        if self.vote == "soft":
            return Outputs(mean, mean.argmax(1), np.log(np.clip(mean, 1e-12, None)), member_logits)
        # a hard vote's confidence is the winner's share of the (weighted) votes
        member_preds = probs.argmax(2)
        shares = vote_shares(member_preds, len(self.classes), self.weights)
        preds = hard_vote(
            member_preds, len(self.classes), self.weights, self.tie_break, probs[self.tie_break]
        )
        return Outputs(shares, preds, np.log(np.clip(shares, 1e-12, None)), member_logits, second=mean)

    def outputs(self, images: np.ndarray, tta: str | None = None) -> Outputs:
        return self.combine(np.stack([m.logits(images, tta) for m in self.members]))

    def to_json(self) -> dict:
        return {
            "kind": "ensemble",
            "vote": self.vote,
            "tie_break": self.tie_break,
            "members": [
                {"id": m.id, "path": str(m.run.path.resolve()), "weights": m.weights, "weight": w}
                for m, w in zip(self.members, self.weights)
            ],
            "classes": self.classes,
            "fingerprint": self.fingerprint,
        }


def check_compatible(members: list[Member]) -> None:
    """Members must predict the same classes, in the same order, from the same test data."""
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise VisionbenchError(
                f"runs '{first.id}' and '{m.id}' have different class lists "
                f"({len(first.classes)} vs {len(m.classes)} classes: {first.classes[:4]} ... vs {m.classes[:4]} ...)",
                fix="ensemble only runs trained on the same dataset",
            )
        if first.fingerprint and m.fingerprint and m.fingerprint != first.fingerprint:
            raise VisionbenchError(
                f"runs '{first.id}' and '{m.id}' were trained and tested on different data "
                "(the data fingerprints differ)",
                fix="ensemble only runs of the same dataset, read from the same files",
            )


Predictor = Member | Ensemble


def ensemble_json(ref: str | Path, root: Path) -> Path | None:
    for folder in (Path(ref), root / str(ref)):
        if (folder / "ensemble.json").is_file():
            return folder / "ensemble.json"
    return None


def load_ensemble(path: Path, root: Path, device: str = "auto") -> Ensemble:
    try:
        meta = json.loads(path.read_text())
        members = [
            load_member(
                m["path"] if Path(m["path"], "config.yaml").is_file() else m["id"], root, m["weights"], device
            )
            for m in meta["members"]
        ]
        return Ensemble(
            members, meta["vote"], [m["weight"] for m in meta["members"]], meta["tie_break"], path.parent
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise VisionbenchError(
            f"not a valid ensemble.json ({type(e).__name__}: {e})",
            where=str(path),
            fix="save it again with `visionbench ensemble ... --save NAME`",
        ) from None


def open_predictor(
    ref: str | Path, runs_dir: str | Path | None = None, weights: str | None = None, device: str = "auto"
) -> Predictor:
    """A run (id or folder) or a saved ensemble (name or folder)."""
    root = runs_root(runs_dir)
    found = ensemble_json(ref, root)
    if found is None:
        return load_member(ref, root, weights or "last", device)
    if weights is not None:
        raise VisionbenchError(
            "--weights applies to runs; an ensemble names each member's weights in its ensemble.json",
            where=str(found),
            fix="leave out --weights",
        )
    return load_ensemble(found, root, device)


def build_ensemble(
    refs: list[str],
    runs_dir: str | Path | None = None,
    vote: str = "hard",
    tie_break: str | None = None,
    weights: str | None = None,
    run_weights: str = "last",
    device: str = "auto",
) -> Ensemble:
    """An ensemble from CLI arguments: run refs, the tie-break run (one of them), "1,1,2" weights."""
    if len(refs) < 2:
        raise VisionbenchError("an ensemble needs at least two runs", fix="name two or more runs")
    root = runs_root(runs_dir)
    members = [load_member(r, root, run_weights, device) for r in refs]
    index = 0
    if tie_break is not None:
        matches = [i for i, (r, m) in enumerate(zip(refs, members)) if tie_break in (r, m.id)]
        if not matches:
            raise VisionbenchError(
                f"--tie-break '{tie_break}' is not one of the runs", fix=f"choose one of: {', '.join(refs)}"
            )
        index = matches[0]
    try:
        w = [float(v) for v in weights.split(",")] if weights else []
    except ValueError:
        raise VisionbenchError(
            f"cannot read --weights '{weights}'", fix="write numbers, e.g. 1,1,2"
        ) from None
    return Ensemble(members, vote, w, index)


def save_ensemble(ens: Ensemble, runs_dir: str | Path | None, name: str) -> Path:
    """The ensemble's folder NAME in the runs folder, with its ensemble.json."""
    root = runs_root(runs_dir)
    if (root / name).exists():
        raise VisionbenchError(
            f"'{name}' exists; it is never overwritten", where=str(root / name), fix="choose another name"
        )
    folder = Run.create(root, name).path  # the same naming rules as runs
    ens.path = folder
    Run(folder).write_json("ensemble.json", ens.to_json())
    return folder


def load_test_split(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    """The test images (uint8 NCHW) and labels the predictor's run(s) were tested on; an error
    when the data found now is not the data recorded at training time."""
    member = predictor.members[0]  # members share the test data (check_compatible)
    test = run_data(member.run, member.cfg, torch.device("cpu")).dataset.splits["test"]
    return np.asarray(test.images), np.asarray(test.labels)
