"""Classification metrics from logits (or probabilities) and targets."""

from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern NNs")


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(1).float().mean().item()


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class; columns: predicted class."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def classification_report(logits: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    cm = confusion_matrix(logits.argmax(1), targets, len(classes))
    support = cm.sum(1).clamp(min=1)
    return {
        "n": len(targets),
        "top1": topk_accuracy(logits, targets, 1),
        "top5": topk_accuracy(logits, targets, 5),
        "per_class_acc": dict(zip(classes, (cm.diag() / support).tolist())),
        "confusion": cm.tolist(),
    }


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, from a confusion matrix (rows true): 0 where a class is never predicted/present."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual.astype(np.int64)}


def balanced_accuracy(cm: np.ndarray) -> float:
    """The mean recall over the classes in the targets: each class counts the same, so one the
    model never predicts costs its whole share, however few its images (top-1 hides it)."""
    cm = np.asarray(cm, dtype=np.float64)
    actual = cm.sum(1)
    present = actual > 0
    return float((np.diag(cm)[present] / actual[present]).mean()) if present.any() else 0.0


def macro_f1(cm: np.ndarray) -> float:
    """The mean F1 over the classes in the targets or the predictions (scikit-learn's macro
    average over the labels seen): a class never predicted counts as 0."""
    cm = np.asarray(cm, dtype=np.float64)
    seen = (cm.sum(0) + cm.sum(1)) > 0
    return float(precision_recall_f1(cm)["f1"][seen].mean()) if seen.any() else 0.0


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins: the gap between
    accuracy and mean confidence per bin, weighted by the bin's share of samples."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    # bin b holds (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    acc = np.bincount(which, correct, minlength=bins) / safe
    conf = np.bincount(which, confidence, minlength=bins) / safe
    ece = float((count * np.abs(acc - conf)).sum() / max(len(confidence), 1))
    return {
        "ece": ece,
        "bins": bins,
        "count": count.tolist(),
        "accuracy": acc.tolist(),
        "confidence": conf.tolist(),
    }
