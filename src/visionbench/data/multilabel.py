"""Multi-label data: label sets read from `a;b` CSV cells or from one file filed under several
class folders, and their multi-hot (N, C) label arrays. A row's label is a class name (str)
for single-label data and a tuple of class names for multi-label data."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

import numpy as np

from .decode import as_bytes, stored_size

SEPARATOR = ";"  # fastai's label_delim and the usual Kaggle style ("a;b")

# how the data told us it is multi-label, and the key that says otherwise: one line, printed
# and recorded with the run's other choices (commands/train.py)
DETECTED = "task: multilabel ({why}); data.task=single reads it as single-label"


def label_set(raw: str) -> tuple[str, ...]:
    """`a; b;;a ` -> ('a', 'b'): split on `;`, spaces around each label dropped, empties and
    repeats ignored, NFC-normalised as class names are. An empty cell is the empty set: an
    image with none of the labels (fastai and MMPretrain train on such images as all-negative)."""
    parts = (unicodedata.normalize("NFC", p.strip()) for p in raw.split(SEPARATOR))
    return tuple(sorted({p for p in parts if p}))


def labels_of(label: str | tuple[str, ...]) -> tuple[str, ...]:
    """The classes a row's label names: one for single-label rows, its set for multi-label ones."""
    return label if isinstance(label, tuple) else (label,)


def label_array(labels: list, classes: list[str]) -> np.ndarray:
    """Class indices (N,) for single-label rows; multi-hot int64 (N, C) when any is a set."""
    index = {c: i for i, c in enumerate(classes)}
    if not any(isinstance(label, tuple) for label in labels):
        return np.asarray([index[c] for c in labels], dtype=np.int64)
    out = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for row, label in enumerate(labels):
        out[row, [index[c] for c in labels_of(label)]] = 1
    return out


def merge_duplicates(rows: list[tuple], depth: int) -> tuple[list[tuple], int]:
    """Folder rows (split, class, file, blob) where one file name (its path below the class
    folder, `depth` parts in) is filed under several class folders of a split with the same
    bytes become one row labelled with the set of those classes; then every row is a set.
    Returns (rows, files merged); with none merged, the rows as they were (single-label): so
    too when no training image has several labels, or every one has all of them.
    Only colliding names are read and hashed: 001.jpg in every class folder of a single-label set is
    common, and its copies differ."""
    groups: dict[tuple, list[int]] = {}
    for i, (split, _, name, _) in enumerate(rows):
        groups.setdefault((split, name.split("/", depth)[-1]), []).append(i)
    merged: dict[int, list[int]] = {}  # first row -> every row with its bytes
    for members in groups.values():
        if len({rows[i][1] for i in members}) < 2:
            continue
        by_bytes: dict[str, list[int]] = {}
        for i in members:
            blob = as_bytes(rows[i][3])
            # files that are no image (Git LFS pointers, HTML saved as .jpg) stay apart: the
            # decoder names each one, and the same pointer in two folders is no label set
            if isinstance(blob, bytes) and stored_size(blob):
                by_bytes.setdefault(hashlib.sha256(blob).hexdigest(), []).append(i)
        merged |= {same[0]: same for same in by_bytes.values() if len({rows[i][1] for i in same}) > 1}
    dropped = {i for same in merged.values() for i in same[1:]}
    out = []
    for i, (split, _, name, blob) in enumerate(rows):
        if i not in dropped:
            out.append((split, tuple(sorted({rows[j][1] for j in merged.get(i, [i])})), name, blob))
    train = [set(label) for split, label, _, _ in out if split == "train"]
    if not any(len(label) > 1 for label in train) or all(label == set().union(*train) for label in train):
        # copies only outside train, or every training image under every class folder (the
        # same blank test image in each): nothing a label set could teach -- single-label
        return rows, 0
    return out, len(merged)


def all_classes(labels: Iterable) -> set[str]:
    return {c for label in labels for c in labels_of(label)}
