"""data.classes / data.per_class: chosen classes relabelled in order, seeded per-class caps."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.data import load_dataset
from visionbench.data.subset import select_classes
from visionbench.errors import VisionbenchError


def test_classes_are_kept_relabelled_and_capped():
    ds = load_dataset("digits")
    sub = select_classes(ds, [7, "3"], per_class=20, seed=1, test_per_class=5)
    assert sub.classes == [ds.classes[7], "3"]
    train, test = sub.splits["train"], sub.splits["test"]
    assert np.bincount(train.labels).tolist() == [20, 20] and np.bincount(test.labels).tolist() == [5, 5]
    full = ds.splits["train"]
    sevens = full.images[full.labels == 7]
    assert all(any(np.array_equal(img, s) for s in sevens) for img in train.images[train.labels == 0])
    assert sub.fingerprint != ds.fingerprint
    assert select_classes(ds, [7, 3], 20, seed=1, test_per_class=5).fingerprint == sub.fingerprint
    with pytest.raises(VisionbenchError, match="out of range"):
        select_classes(ds, [3, 10])
    with pytest.raises(VisionbenchError, match="unknown class"):
        select_classes(ds, ["cat", 1])
