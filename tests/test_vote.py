"""Ensemble votes as pure functions over members' predictions (write-up 004's rule), and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.analysis.metrics import calibration, precision_recall_f1
from visionbench.analysis.vote import agreement, hard_vote, soft_vote, vote_shares

C = 5


def vote(*members, **kw):
    return hard_vote(np.array(members), C, **kw).tolist()


def test_unanimous_and_two_against_one_follow_the_majority():
    # columns are samples: all agree; A and B outvote C; A and C outvote B; B and C outvote A
    a, b, c = [0, 1, 2, 3], [0, 1, 4, 4], [0, 2, 2, 4]
    for tie_break in range(3):  # the tie-break member never overrules a majority
        assert vote(a, b, c, tie_break=tie_break) == [0, 1, 2, 4]


def test_three_way_split_goes_to_the_tie_break_member():
    a, b, c = [0, 1, 2], [1, 2, 3], [2, 3, 4]
    assert vote(a, b, c, tie_break=0) == a
    assert vote(a, b, c, tie_break=1) == b
    assert vote(a, b, c, tie_break=2) == c


def test_seed_004_rule_on_every_combination():
    """The seed's code: a==b or b==c -> b; a==c -> a; else b (b is the tie-break model)."""
    grid = np.array(np.meshgrid(range(3), range(3), range(3))).reshape(3, -1)
    a, b, c = grid
    expected = np.where((a == b) | (b == c), b, np.where(a == c, a, b))
    assert hard_vote(grid, 3, tie_break=1).tolist() == expected.tolist()


def test_weights_let_one_member_outvote_two():
    a, b, c = [0, 0], [1, 1], [1, 2]
    assert vote(a, b, c) == [1, 0]  # unweighted: B+C beat A; then a three-way split -> A (tie-break 0)
    assert vote(a, b, c, weights=[3, 1, 1]) == [0, 0]
    # A (2) ties B + C (1 + 1) on sample 0: the tie-break member (B) decides among the tied
    assert vote(a, b, c, weights=[2, 1, 1], tie_break=1) == [1, 0]


def test_tie_outside_the_tie_break_vote_uses_its_scores():
    # four members split 2-2 between classes 0 and 1; the tie-break member voted 2 with weight 0
    preds = np.array([[0], [0], [1], [1], [2]])
    scores = np.array([[0.1, 0.3, 0.6, 0, 0]])  # its second choice among the tied: class 1
    assert hard_vote(preds, C, weights=[1, 1, 1, 1, 0], tie_break=4, tie_scores=scores).tolist() == [1]


def test_soft_vote_is_the_weighted_mean_of_probabilities():
    p = np.array([[[0.6, 0.4]], [[0.0, 1.0]], [[0.9, 0.1]]])
    assert soft_vote(p)[0] == pytest.approx([0.5, 0.5])
    assert soft_vote(p, [2, 0, 2])[0] == pytest.approx([0.75, 0.25])
    # a confident minority can win a soft vote and lose a hard one
    assert soft_vote(p, [1, 3, 1]).argmax(1).tolist() == [1]
    assert hard_vote(p.argmax(2), 2).tolist() == [0]
    with pytest.raises(ValueError):
        soft_vote(p, [1, 1])


def test_vote_shares_and_agreement():
    preds = np.array([[0, 1, 1, 1], [0, 1, 2, 2], [0, 0, 0, 2]])
    assert vote_shares(preds, 3)[3].tolist() == pytest.approx([0, 1 / 3, 2 / 3])
    agree = agreement(preds)
    assert agree[0, 1] == agree[1, 0] == 0.5 and agree[1, 2] == 0.5 and agree[0, 2] == 0.25
    assert np.diag(agree).tolist() == [1, 1, 1]


def test_precision_recall_f1_and_calibration():
    cm = np.array([[3, 1], [0, 0]])  # class 1 is predicted once, never present
    prf = precision_recall_f1(cm)
    assert prf["precision"].tolist() == [1.0, 0.0] and prf["recall"].tolist() == [0.75, 0.0]
    assert prf["f1"][0] == pytest.approx(2 * 0.75 / 1.75)
    # confidence 0.9 for four samples, three correct: |0.75 - 0.9| in one bin
    cal = calibration(np.full(4, 0.9), np.array([1, 1, 1, 0]), bins=10)
    assert cal["ece"] == pytest.approx(0.15) and cal["count"][8] == 4
    assert calibration(np.array([0.55, 1.0]), np.array([1, 1]), bins=2)["count"] == [0, 2]


def test_top_classes_put_the_vote_first_then_votes_then_mean_probability():
    from visionbench.analysis.predictor import Outputs

    # three members voted 0, 1, 2 (a tie, won by class 2); mean probabilities rank 3 above 4
    shares = np.array([[1 / 3, 1 / 3, 1 / 3, 0, 0]])
    mean = np.array([[0.3, 0.2, 0.1, 0.25, 0.15]])
    out = Outputs(shares, np.array([2]), np.log(shares + 1e-12), second=mean)
    assert out.top_classes(5).tolist() == [[2, 0, 1, 3, 4]]
    assert out.top_classes(9).shape == (1, 5)
