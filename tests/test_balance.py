"""Imbalanced classes: class weights from the images trained on, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.data.balance import class_weights
from visionbench.data.prepare import prepare_data
from visionbench.errors import VisionbenchError


def test_balanced_weights_are_n_over_classes_times_count():
    labels = np.array([0] * 6 + [1] * 3 + [2])  # 10 images, 3 classes
    assert class_weights("balanced", labels, ["a", "b", "c"]).tolist() == pytest.approx(
        [10 / 18, 10 / 9, 10 / 3]
    )
    assert class_weights("balanced", labels, ["a", "b", "c", "d"])[3] == 0  # no training image
    assert class_weights("none", labels, ["a", "b", "c"]) is None
    # given ones keep their ratios, scaled to average 1 over the images: (6 x 1 + 3 x 2 + 1 x 4) / 10 = 1.6
    assert class_weights([1, 2, 4], labels, ["a", "b", "c"]).tolist() == pytest.approx(
        [1 / 1.6, 2 / 1.6, 4 / 1.6]
    )


def test_weights_come_from_the_split_trained_on_after_the_validation_carve_out():
    cfg = resolve_config([], ["data.name=digits", "data.val_fraction=0.5", "train.class_weights=balanced"])
    data = prepare_data(cfg, torch.device("cpu"))
    kept = data.dataset.splits["train"].labels[data.keep]
    assert data.class_weights.tolist() == pytest.approx((len(kept) / (10 * np.bincount(kept))).tolist())
    whole = data.dataset.splits["train"].labels
    assert data.class_weights.tolist() != pytest.approx((len(whole) / (10 * np.bincount(whole))).tolist())
    assert data.loss_weights.dtype == torch.float32
    (note,) = data.weights_notes()
    assert note.startswith("class weights: 0 ") and f"over the {len(kept):,} images trained on" in note


def test_a_weight_list_of_the_wrong_length_names_the_classes_and_a_fix_that_works(tmp_path):
    cfg = resolve_config([], ["data.name=digits", "data.classes=[3, 5]", "train.class_weights=[1, 2, 3]"])
    with pytest.raises(VisionbenchError, match="3 weights for 2 classes") as e:
        train(cfg, quiet=True)
    assert not (tmp_path / "runs").exists()  # said before any run folder
    assert "train.class_weights=[1, 1]" in e.value.fix
    fixed = resolve_config([], ["data.name=digits", "data.classes=[3, 5]", "train.class_weights=[1, 1]"])
    assert prepare_data(fixed, torch.device("cpu")).class_weights.tolist() == [1, 1]
