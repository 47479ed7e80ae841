"""Class subsets: keep some classes (relabelled 0..k-1 in the order given) and at most N
training images per class -- for transfer experiments and small-data runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np

from ..errors import VisionbenchError, did_you_mean
from .cache import Dataset, Split


def class_indices(ds: Dataset, classes: list[int | str]) -> list[int]:
    """Class names or indices -> indices into ds.classes, in the order given."""
    out = []
    for c in classes:
        if isinstance(c, int) and not isinstance(c, bool):
            if not 0 <= c < len(ds.classes):
                raise VisionbenchError(
                    f"class index {c} is out of range: {ds.name} has {len(ds.classes)} classes (0-{len(ds.classes) - 1})",
                    fix="use data.classes=[0, 1, ...] with valid indices, or class names",
                )
            out.append(c)
        elif str(c) in ds.classes:
            out.append(ds.classes.index(str(c)))
        else:
            raise VisionbenchError(
                f"unknown class '{c}' in data.classes.{did_you_mean(str(c), ds.classes)}",
                fix=f"choose from: {', '.join(ds.classes)}",
            )
    if len(set(out)) != len(out) or len(out) < 2:
        raise VisionbenchError(
            "data.classes needs at least two distinct classes", fix="e.g. data.classes=[0, 1]"
        )
    return out


def select_classes(
    ds: Dataset,
    classes: list[int | str] | None,
    per_class: int | None = None,
    seed: int = 0,
    test_per_class: int | None = None,
) -> Dataset:
    """The dataset restricted to `classes` (relabelled in the order given), with at most
    `per_class` training and `test_per_class` test images per class (seeded draws).
    The fingerprint names the selection, so checkpoints and evals refuse a different one."""
    if classes is None and per_class is None and test_per_class is None:
        return ds
    keep = class_indices(ds, classes) if classes is not None else list(range(len(ds.classes)))
    relabel = np.full(len(ds.classes), -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    rng = np.random.default_rng(seed)
    splits = {}
    for name, s in ds.splits.items():
        idx = [np.flatnonzero(s.labels == c) for c in keep]
        limit = {"train": per_class, "test": test_per_class}.get(name)
        if limit is not None:
            idx = [np.sort(rng.permutation(i)[:limit]) for i in idx]
        idx = np.sort(np.concatenate(idx))
        splits[name] = Split(np.asarray(s.images[idx]), relabel[s.labels[idx]])
    choice = json.dumps([ds.fingerprint, keep, per_class, seed, test_per_class])
    return replace(
        ds,
        classes=[ds.classes[c] for c in keep],
        class_names=[ds.class_names[c] for c in keep] if ds.class_names else [],
        splits=splits,
        fingerprint=hashlib.sha256(choice.encode()).hexdigest(),
        notes=[
            *ds.notes,
            f"classes {keep} of {len(ds.classes)}, at most {per_class} train / {test_per_class} test images per class",
        ],
    )
