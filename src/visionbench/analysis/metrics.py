"""Classification metrics from logits and targets."""

from __future__ import annotations

import torch


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
