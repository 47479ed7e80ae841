"""Held-out splits and channel statistics: numpy only, so listing data never imports torch."""

from __future__ import annotations

import numpy as np


def is_multilabel(labels: np.ndarray) -> bool:
    """Multi-label targets are multi-hot (N, C) rows; single-label ones class indices (N,)."""
    return np.ndim(labels) == 2


def strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per image: its class, or for multi-hot rows its rarest label (-1: none) --
    a cheap stand-in for iterative stratification (Sechidis et al., 2011) that still puts each
    rare label in every split it can."""
    labels = np.asarray(labels)
    if not is_multilabel(labels):
        return labels
    counts = labels.sum(0)
    rarity = np.where(labels > 0, counts[None, :], np.iinfo(np.int64).max)
    return np.where(labels.any(1), rarity.argmin(1), -1)


def class_members(labels: np.ndarray, c: int) -> np.ndarray:
    """Whether each image is of class `c` (multi-label: has it among its labels)."""
    labels = np.asarray(labels)
    return labels[:, c] > 0 if is_multilabel(labels) else labels == c


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class; a multi-label image counts once for each of its labels."""
    labels = np.asarray(labels)
    if is_multilabel(labels):
        return labels.sum(0).astype(np.int64)
    return np.bincount(labels, minlength=num_classes)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted indices; each class gives round(fraction * its count), at least 1
    (multi-label rows: by their rarest label, `strata`)."""
    if fraction <= 0:
        return np.arange(len(labels)), np.arange(0)
    labels = strata(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.append(rng.permutation(idx)[:n])
    held = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """About `n` sorted positions into `labels`, drawn at random (seeded) from every class in
    proportion to its size, at least one each: the class mix of the whole, even where the data
    is stored sorted by class (its first `n` would then be one class). All of them if n >= len."""
    labels = strata(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.permutation(idx)[: max(1, round(n * len(idx) / len(labels)))])
    return np.sort(np.concatenate(picks))


def channel_stats(images: np.ndarray, idx: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, from (a sample of at most ~10,000 of) the uint8
    NCHW images, or of those at `idx`; only the sample is read from a memory-mapped cache."""
    idx = np.arange(len(images)) if idx is None else np.asarray(idx)
    sample = np.asarray(images[np.sort(idx[:: max(1, len(idx) // 10000)])], dtype=np.float32) / 255
    return sample.mean(axis=(0, 2, 3)).tolist(), (sample.std(axis=(0, 2, 3)) + 1e-6).tolist()


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 NCHW images with 1 or 3 channels: grey is repeated into RGB; RGB becomes grey by
    ITU-R 601 luma (PIL's "L": 299 R + 587 G + 114 B, rounded), in integers, chunk by chunk."""
    c = images.shape[1]
    if c == channels:
        return images
    if (c, channels) == (1, 3):
        return np.repeat(images, 3, axis=1)
    if (c, channels) == (3, 1):
        out = np.empty((len(images), 1, *images.shape[2:]), dtype=np.uint8)
        weights = np.array([299, 587, 114], dtype=np.int32).reshape(1, 3, 1, 1)
        for i in range(0, len(images), 4096):
            x = np.asarray(images[i : i + 4096], dtype=np.int32)
            out[i : i + 4096] = ((x * weights).sum(axis=1, keepdims=True) + 500) // 1000
        return out
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
