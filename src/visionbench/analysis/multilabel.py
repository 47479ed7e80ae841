"""Multi-label evaluation: a sigmoid per class, per-class thresholds tuned on the validation
split (RUN/thresholds.json), and the metrics of multi-label benchmarks (VOC, COCO, MMPretrain):
mAP, macro and micro F1, exact match and per-class AP, with a precision-recall curve per class.

The bundle a multi-label evaluation writes (RUN/eval-*/, as analysis/evaluation.py's):

    metrics.json     {"run", "weights", "tta", "task": "multilabel", "n", "map" (mean AP over the
                      classes with a positive test image), "macro_f1", "micro_f1", "exact_match"
                      (images whose whole label set is right), "loss" (mean BCE), "top1"
                      (= exact_match: what tables of runs show), "thresholds": {class: t},
                      "per_class": {class: {"ap", "precision", "recall", "f1", "support", "threshold"}}}
    per_class.csv    class,ap,precision,recall,f1,support,threshold
    pr_curves.png    precision against recall per class, AP in the legend
    predictions.npz  logits (N, C), probs (N, C) sigmoid, preds (N, C) 0/1 at the thresholds,
                     targets (N, C) multi-hot, indices (N,)

Confusion matrices, top-5, the reliability diagram and temperature scaling read one class per
image (a softmax) and are not computed for multi-label runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import VisionbenchError, write_error
from ..runs import Run
from .plots import plot_pr_curves

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5  # a class with no positive validation image keeps it


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(np.asarray(logits, np.float64), -60, 60)))


def ranked_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one class, cutting the scores high to low after each distinct score: (score at the
    cut, true positives, predicted positives) -- ties fall on the same side of a threshold."""
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], np.cumsum(positive[order])
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of equal scores
    return s[last], tp[last], np.flatnonzero(last) + 1


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the step precision-recall curve (scikit-learn's average_precision_score);
    None for a class with no positive (scikit-learn would warn and give 0)."""
    from sklearn.metrics import average_precision_score  # only where a multi-label run is scored

    positive = np.asarray(positive) > 0.5
    if not positive.any():
        return None
    return float(average_precision_score(positive, np.asarray(scores)))


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per class, the probability at or above which it is predicted, chosen to maximise its
    F1 on these (validation) images: the midpoint between the cut's score and the next lower
    one, so the same images fall on each side however the test scores land."""
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for c in range(probs.shape[1]):
        positive = targets[:, c] > 0.5
        if not positive.any():
            continue
        s, tp, n = ranked_counts(probs[:, c], positive)
        f1 = 2 * tp / (n + positive.sum())
        best = int(np.argmax(f1))
        below = s[best + 1] if best + 1 < len(s) else 0.0
        out[c] = (s[best] + below) / 2
    return out


def f1_counts(tp, fp, fn) -> np.ndarray:
    tp, denom = np.asarray(tp, np.float64), 2 * np.asarray(tp) + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def multilabel_summary(logits: np.ndarray, targets: np.ndarray, classes: list[str], thresholds) -> dict:
    """metrics.json's multi-label figures for (N, C) logits and multi-hot targets."""
    probs, targets = sigmoid(logits), np.asarray(targets) > 0.5
    thresholds = np.asarray(thresholds, np.float64)
    preds = probs >= thresholds
    tp, fp, fn = (preds & targets).sum(0), (preds & ~targets).sum(0), (~preds & targets).sum(0)
    f1 = f1_counts(tp, fp, fn)
    ap = [average_precision(probs[:, c], targets[:, c]) for c in range(len(classes))]
    scored = [a for a in ap if a is not None]
    seen = (tp + fp + fn) > 0  # as macro_f1 for single-label: the classes in targets or predictions
    exact = float((preds == targets).all(1).mean()) if len(targets) else 0.0
    bce = -(
        targets * np.log(np.clip(probs, 1e-12, None)) + ~targets * np.log(np.clip(1 - probs, 1e-12, None))
    )
    return {
        "task": "multilabel",
        "n": len(targets),
        "map": float(np.mean(scored)) if scored else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "micro_f1": float(f1_counts(tp.sum(), fp.sum(), fn.sum())),
        "exact_match": exact,
        "top1": exact,  # what tables of runs (runs, compare, sweep) show for any run
        "loss": float(bce.mean()),
        "thresholds": dict(zip(classes, thresholds.tolist())),
        "per_class": {
            c: {
                "ap": ap[i],
                "precision": float(tp[i] / max(tp[i] + fp[i], 1)),
                "recall": float(tp[i] / max(tp[i] + fn[i], 1)),
                "f1": float(f1[i]),
                "support": int(targets[:, i].sum()),
                "threshold": float(thresholds[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def thresholds_record(logits: np.ndarray, targets: np.ndarray, classes: list[str], split: str, tta) -> dict:
    """RUN/thresholds.json: each class's F1-best threshold on the validation logits."""
    t = tune_thresholds(sigmoid(logits), np.asarray(targets))
    return {
        "weights": "last",
        "split": split,
        "tta": tta,
        "n": len(targets),
        "thresholds": dict(zip(classes, t.tolist())),
    }


def read_thresholds(run: Run, classes: list[str]) -> np.ndarray:
    """The run's tuned thresholds in class order; 0.5 each when none were tuned."""
    path = run.path / THRESHOLDS_FILE
    if not path.is_file():
        return np.full(len(classes), DEFAULT_THRESHOLD)
    try:
        table = json.loads(path.read_text())["thresholds"]
        return np.array([float(table[c]) for c in classes])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VisionbenchError(
            f"cannot read the tuned thresholds ({type(e).__name__}: {e})",
            where=str(path),
            fix="delete the file to predict at probability 0.5 per class, or train the run again",
        ) from None


def label_sets(probs: np.ndarray, thresholds: np.ndarray, classes: list[str]) -> list[list[str]]:
    """Each image's predicted labels: the classes at or above their threshold."""
    return [[classes[c] for c in np.flatnonzero(row >= thresholds)] for row in probs]


def write_multilabel_bundle(folder: Path, rep: dict, logits, targets, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Run(folder).write_json("metrics.json", rep)
    keys = ("ap", "precision", "recall", "f1", "support", "threshold")
    with open(folder / "per_class.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", *keys])
        w.writerows([c, *("" if v[k] is None else v[k] for k in keys)] for c, v in rep["per_class"].items())
    probs, targets = sigmoid(logits), np.asarray(targets)
    curves = {c: pr_curve(probs[:, i], targets[:, i]) for i, c in enumerate(rep["per_class"])}
    aps = {c: v["ap"] for c, v in rep["per_class"].items()}
    plot_pr_curves(curves, aps, folder / "pr_curves.png", title=f"{title}: mAP {rep['map']:.2%}")
    thresholds = np.array(list(rep["thresholds"].values()))
    np.savez_compressed(
        folder / "predictions.npz",
        logits=np.asarray(logits, np.float32),
        probs=probs.astype(np.float32),
        preds=(probs >= thresholds).astype(np.uint8),
        targets=targets,
        indices=np.arange(len(targets)),
    )


def pr_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each cut of one class's scores, from recall 0."""
    positive = np.asarray(positive) > 0.5
    _, tp, n = ranked_counts(np.asarray(scores), positive)
    return np.r_[0, tp / max(positive.sum(), 1)], np.r_[1, tp / n]


def multilabel_evaluation(
    logits: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    thresholds,
    *,
    run_id: str,
    weights: str | None,
    tta: str | None = None,
    folder: Path | None = None,
    extra: dict | None = None,
) -> dict:
    """The multi-label counterpart of evaluation.evaluation: the summary (with `extra`, e.g. an
    ensemble's members) and, with `folder`, the bundle written there."""
    rep = {
        "run": run_id,
        "weights": weights,
        "tta": tta,
        **multilabel_summary(logits, targets, classes, thresholds),
        **(extra or {}),
    }
    if folder is not None:
        try:
            write_multilabel_bundle(folder, rep, logits, targets, run_id)
        except OSError as e:
            raise write_error(e, "the evaluation bundle", folder, "run the command again") from None
        rep["bundle"] = str(folder)
    return rep
