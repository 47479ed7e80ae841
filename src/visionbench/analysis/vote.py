"""Combining members' predictions: hard (majority) and soft (mean probability) votes, and how
often members agree. Pure numpy over prediction arrays, so every rule is unit-testable."""

from __future__ import annotations

import numpy as np


def member_weights(n_members: int, weights=None) -> np.ndarray:
    w = np.ones(n_members) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {n_members} non-negative weights with a positive sum, got {weights}")
    return w


def vote_shares(preds: np.ndarray, num_classes: int, weights=None) -> np.ndarray:
    """(N, C) share of the (weighted) votes each class gets; `preds` is (members, N)."""
    w = member_weights(len(preds), weights)
    counts = np.zeros((preds.shape[1], num_classes))
    for m, p in enumerate(preds):
        counts[np.arange(len(p)), p] += w[m]
    return counts / w.sum()


def hard_vote(
    preds: np.ndarray, num_classes: int, weights=None, tie_break: int = 0, tie_scores=None
) -> np.ndarray:
    """Majority vote over `preds` (members, N), each member's vote counted `weights[m]` times.

    When several classes share the most votes (three members, three answers), the tie goes to
    the tie-break member: its own prediction when that is among the tied classes (write-up 004's
    rule), else the tied class it scores highest in `tie_scores` (N, C), else the lowest index.
    """
    shares = vote_shares(preds, num_classes, weights)
    tied = np.isclose(shares, shares.max(1, keepdims=True), rtol=0, atol=1e-9)
    if tie_scores is None:
        tie_scores = np.zeros(shares.shape)
        tie_scores[np.arange(preds.shape[1]), preds[tie_break]] = 1.0
    # among the tied classes only; argmax takes the first (lowest index) of equal scores
    return np.where(tied, np.asarray(tie_scores, dtype=np.float64), -np.inf).argmax(1)


def soft_vote(probs: np.ndarray, weights=None) -> np.ndarray:
    """(N, C) weighted mean of the members' probabilities `probs` (members, N, C)."""
    w = member_weights(len(probs), weights)
    return np.tensordot(w / w.sum(), np.asarray(probs, dtype=np.float64), axes=1)


def agreement(preds: np.ndarray) -> np.ndarray:
    """(M, M) fraction of samples on which each pair of members predicts the same class;
    1 - agreement is the pairwise disagreement (a simple diversity measure)."""
    return (preds[:, None, :] == preds[None, :, :]).mean(-1)
