"""Early stopping on the validation accuracy recorded in a run's metrics."""

from __future__ import annotations


def early_stop_due(rows: list[dict], patience: int) -> bool:
    """True once `patience` epochs in a row brought no better val accuracy (train accuracy
    where there is no validation split); 0 never stops. Reads the logged rows, so a resumed
    run decides exactly as an uninterrupted one."""
    if not patience or not rows:
        return False
    scores = [r.get("val_acc", r["train_acc"]) for r in rows]
    best_epoch = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return len(scores) - 1 - best_epoch >= patience
