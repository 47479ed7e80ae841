"""Analysis: metrics, confusion matrices and figures from a run's predictions."""

from .metrics import classification_report, confusion_matrix, topk_accuracy

__all__ = ["classification_report", "confusion_matrix", "topk_accuracy"]
