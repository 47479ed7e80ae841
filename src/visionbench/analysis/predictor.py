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
      eval[-tta]/     evaluation bundles, as for a run (see analysis/evaluation.py)

Members are found by "path", else by "id" under the runs folder.

A run with a calibration.json (analysis/calibration.py) reports its probabilities as
softmax(logits / T) for the weights T was fitted on; a soft vote averages the members'
calibrated probabilities. The logits, and so every argmax and hard vote, are never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..errors import VisionbenchError
from ..runs import runs_root
from ..runs.reopen import DataSpec, LoadedRun, open_run, verified_data
from .calibration import read_temperature, softmax
from .multilabel import read_thresholds, sigmoid
from .vote import hard_vote, member_weights, soft_vote, vote_shares

VOTES = ("hard", "soft")


@dataclass
class Outputs:
    """Predictions for N images: probabilities (N, C) and the predicted class (N,); `logits`
    are a run's logits (raw: never divided by a temperature), or for an ensemble log(probs);
    `members` holds members' logits; `uncalibrated`, the same predictions before temperature
    scaling when one was applied."""

    probs: np.ndarray
    preds: np.ndarray
    logits: np.ndarray
    members: np.ndarray | None = None  # (M, N, C)
    second: np.ndarray | None = None  # (N, C) orders classes of equal probs (hard vote: mean probs)
    uncalibrated: Outputs | None = None
    thresholds: np.ndarray | None = None  # multi-label: (C,) per class; preds are then (N, C) 0/1

    @classmethod
    def from_sigmoid(cls, logits: np.ndarray, thresholds: np.ndarray) -> Outputs:
        """Multi-label outputs: a sigmoid per class, each class predicted at its threshold."""
        probs = sigmoid(logits)
        return cls(probs, (probs >= thresholds).astype(np.int64), logits, thresholds=thresholds)

    @classmethod
    def from_logits(cls, logits: np.ndarray, temperature: float | None = None) -> Outputs:
        """A single model's outputs: softmax probabilities (of logits / `temperature`, when the
        run was calibrated) and the argmax class, which the temperature never changes."""
        if temperature is None:
            probs = softmax(logits)
            return cls(probs, probs.argmax(1), logits)
        raw = cls.from_logits(logits)
        return cls(softmax(logits, temperature), raw.preds, logits, uncalibrated=raw)

    def top_classes(self, k: int) -> np.ndarray:
        """(N, k) class indices: the prediction first (a hard vote's need not have the most
        votes alone), then by probability, then by `second`."""
        first = self.probs.astype(np.float64).copy()
        first[np.arange(len(self.preds)), self.preds] = np.inf
        second = np.zeros_like(first) if self.second is None else self.second
        return np.lexsort((-second, -first), axis=-1)[:, : min(k, first.shape[1])]


class Member(LoadedRun):
    """One run as a predictor (an ensemble of one)."""

    @property
    def members(self) -> list[Member]:
        return [self]

    @cached_property
    def temperature(self) -> float | None:
        """The temperature fitted for these weights under the run's own views, or None."""
        return self.temperature_for(None)

    def temperature_for(self, tta: str | bool | None = None) -> float | None:
        """The temperature fitted for these weights under the views `tta` names (calibration.json),
        or None: a temperature fitted under other views is not used."""
        return read_temperature(self.run, self.weights, self.views(tta))

    @property
    def multilabel(self) -> bool:
        return self.cfg.data.task == "multilabel"  # recorded by training once the data said so

    @cached_property
    def thresholds(self) -> np.ndarray:
        """Multi-label: each class's threshold tuned on the validation split (0.5 untuned)."""
        return read_thresholds(self.run, self.classes)

    def outputs(self, images: np.ndarray, tta: str | bool | None = None) -> Outputs:
        if self.multilabel:
            return Outputs.from_sigmoid(self.logits(images, tta), self.thresholds)
        return Outputs.from_logits(self.logits(images, tta), self.temperature_for(tta))

    def confidence(self) -> str:
        """How this predictor's confidence is computed, in one line."""
        if self.multilabel:
            return f"confidence: a sigmoid per label, each label kept at its threshold ({self.id}/thresholds.json)"
        if self.temperature is None:
            return (
                f"confidence: the softmax, uncalibrated (run '{self.id}' has no temperature for its "
                f"{self.weights} weights)"
            )
        return (
            f"confidence: calibrated, softmax(logits / {self.temperature:.3f}) (temperature scaling "
            f"fitted on the validation split: {self.id}/calibration.json)"
        )


def load_member(ref: str | Path, root: Path, weights: str = "last", device: str = "auto") -> Member:
    return open_run(ref, root, weights, device, kind=Member)


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
        if self.multilabel and self.vote == "hard":
            raise VisionbenchError(
                "a hard vote picks one class per image; these runs are multi-label",
                fix="use --vote soft: the members' probabilities are averaged per label",
            )
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

    @property
    def multilabel(self) -> bool:
        return self.members[0].multilabel

    def temperatures(self, tta: str | bool | None = None) -> list[float | None]:
        return [m.temperature_for(tta) for m in self.members]

    def combine(
        self, member_logits: np.ndarray, calibrated: bool = True, tta: str | bool | None = None
    ) -> Outputs:
        """The vote over the members' logits (M, N, C), each member's probabilities calibrated
        by its own temperature for the views `tta` names (unless `calibrated` is false)."""
        if self.multilabel:
            return self.combine_labels(member_logits)
        temperatures = self.temperatures(tta) if calibrated else [None] * len(self.members)
        probs = np.stack([softmax(m, t) for m, t in zip(member_logits, temperatures)])
        mean = soft_vote(probs, self.weights)
        raw = self.combine(member_logits, False) if any(t is not None for t in temperatures) else None
        if self.vote == "soft":
            log_mean = np.log(np.clip(mean, 1e-12, None))
            return Outputs(mean, mean.argmax(1), log_mean, member_logits, uncalibrated=raw)
        # a hard vote's confidence is the winner's share of the (weighted) votes; a temperature
        # changes no member's vote, only `second`, the order of the classes after the winner
        member_preds = probs.argmax(2)
        shares = vote_shares(member_preds, len(self.classes), self.weights)
        preds = hard_vote(
            member_preds, len(self.classes), self.weights, self.tie_break, probs[self.tie_break]
        )
        log_shares = np.log(np.clip(shares, 1e-12, None))
        return Outputs(shares, preds, log_shares, member_logits, second=mean, uncalibrated=raw)

    def combine_labels(self, member_logits: np.ndarray) -> Outputs:
        """Multi-label soft vote: the (weighted) mean of the members' probabilities per label,
        each label kept at the same weighted mean of the members' tuned thresholds."""
        mean = np.clip(soft_vote(sigmoid(member_logits), self.weights), 1e-12, 1 - 1e-12)
        thresholds = soft_vote(np.stack([m.thresholds[None] for m in self.members]), self.weights)[0]
        logits = np.log(mean / (1 - mean))  # whose sigmoid is the mean: metrics read logits
        return Outputs(
            mean, (mean >= thresholds).astype(np.int64), logits, member_logits, thresholds=thresholds
        )

    def outputs(self, images: np.ndarray, tta: str | bool | None = None) -> Outputs:
        return self.combine(np.stack([m.logits(images, tta) for m in self.members]), tta=tta)

    def confidence(self) -> str:
        """How the vote's confidence is computed, in one line."""
        if self.multilabel:
            return "confidence: the mean of the members' sigmoid per label, at their mean thresholds"
        if self.vote == "hard":
            return "confidence: the winner's share of the votes (a temperature changes no member's vote)"
        fitted = [f"{m.id} T={m.temperature:.3f}" for m in self.members if m.temperature is not None]
        plain = [m.id for m in self.members if m.temperature is None]
        return "confidence: the mean of the members' probabilities, " + "; ".join(
            ([f"calibrated ({', '.join(fitted)})"] if fitted else [])
            + ([f"uncalibrated ({', '.join(plain)}: no temperature)"] if plain else [])
        )

    def views(self, tta: str | bool | None = None) -> str:
        """The members' views (engine/tta.py): one name, or each member's when they differ."""
        names = [m.views(tta) for m in self.members]
        return (
            names[0]
            if len(set(names)) == 1
            else ", ".join(f"{m.id}: {n}" for m, n in zip(self.members, names))
        )

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
        if m.multilabel != first.multilabel:
            raise VisionbenchError(
                f"runs '{first.id}' and '{m.id}' differ in task (data.task): one is multi-label",
                fix="ensemble runs trained for the same task",
            )
        if m.classes != first.classes:
            raise VisionbenchError(
                f"runs '{first.id}' and '{m.id}' have different class lists "
                f"({len(first.classes)} vs {len(m.classes)} classes: {first.classes[:4]} ... vs {m.classes[:4]} ...)",
                fix="ensemble only runs trained on the same dataset",
            )
        if first.fingerprint and m.fingerprint and m.fingerprint != first.fingerprint:
            what, fix = data_difference(first, m)
            raise VisionbenchError(
                f"runs '{first.id}' and '{m.id}' cannot be shown to share their test data: the data "
                f"fingerprints differ ({what})",
                fix=fix,
            )


# the data settings that change which images a run is trained and tested on
DATA_KEYS = (
    "name",
    "dir",
    "img_size",
    "resize",
    "channels",
    "classes",
    "per_class",
    "test_per_class",
    "split_seed",
)


def data_difference(a: Member, b: Member) -> tuple[str, str]:
    """Why two runs' data fingerprints differ, as far as their configs tell, and what to do.
    A streamed run's fingerprint names the files (path, size, time: hashing the pixels would
    read them all), a cached run's hashes the decoded arrays, so the two never match."""
    if a.cfg.data.stream != b.cfg.data.stream:
        streamed, cached = (a, b) if a.cfg.data.stream else (b, a)
        return (
            f"'{streamed.id}' streamed its images from the files (data.stream=true) and '{cached.id}' "
            "read them from the array cache; a streamed run's fingerprint names the files, a cached "
            "run's the decoded images, so the two never match, even for the same folder",
            f"ensemble runs that read their data the same way: train '{streamed.id}' again without "
            f"data.stream, or '{cached.id}' with data.stream=true",
        )
    differ = [k for k in DATA_KEYS if getattr(a.cfg.data, k) != getattr(b.cfg.data, k)]
    if differ:
        return (
            "; ".join(f"data.{k} {getattr(a.cfg.data, k)!r} vs {getattr(b.cfg.data, k)!r}" for k in differ),
            f"ensemble runs trained with the same data settings: train '{b.id}' again with "
            + " ".join(f"data.{k}={json.dumps(getattr(a.cfg.data, k))}" for k in differ),
        )
    return (
        "the same data settings: the files changed between the two runs (added, removed or edited)",
        f"train the older of '{a.id}' and '{b.id}' again on the files as they are now",
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


def load_test_split(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    """The test images (uint8 NCHW) and labels the predictor's run(s) were tested on; an error
    when the data found now is not the data recorded at training time."""
    member = predictor.members[0]  # members share the test data (check_compatible)
    test = verified_data(member.run, member.cfg, torch.device("cpu")).dataset.splits["test"]
    return np.asarray(test.images), np.asarray(test.labels)
