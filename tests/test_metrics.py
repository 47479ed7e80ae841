"""Classification metrics: balanced accuracy and macro-F1 beside top-1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from visionbench.analysis.evaluation import summarize
from visionbench.analysis.metrics import balanced_accuracy, macro_f1
from visionbench.analysis.predictor import Outputs


def test_a_class_never_predicted_shows_in_balanced_accuracy_and_macro_f1_not_top1():
    # 90 images of a, 10 of b; the model says a every time: top-1 90%, recall 1 and 0
    targets = np.array([0] * 90 + [1] * 10)
    logits = np.tile([[3.0, 0.0]], (100, 1))
    rep = summarize(Outputs.from_logits(logits), targets, ["a", "b"])
    assert rep["top1"] == pytest.approx(0.9)
    assert rep["balanced_acc"] == pytest.approx(0.5)  # (1 + 0) / 2
    f1_a = 2 * 0.9 * 1.0 / (0.9 + 1.0)  # precision 90/100, recall 90/90
    assert rep["macro_f1"] == pytest.approx((f1_a + 0.0) / 2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_and_macro_f1_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.choice(4, 200, p=[0.7, 0.2, 0.1, 0.0])  # class 3 absent from the targets
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (y, pred), 1)
    assert balanced_accuracy(cm) == pytest.approx(balanced_accuracy_score(y, pred))
    assert macro_f1(cm) == pytest.approx(f1_score(y, pred, average="macro"))
