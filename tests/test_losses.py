"""Training losses: class weights (train.class_weights) on class indices and on soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionbench.engine.loop import forward_backward
from visionbench.engine.losses import create_loss

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
WEIGHTS = torch.tensor([1.0, 2.0, 4.0])


def test_weighted_cross_entropy_equals_a_hand_computation():
    # image 0 is class 0 (weight 1), image 1 class 2 (weight 4): the mean of w[y] * -log p[y]
    log_p0 = 2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0))
    log_p1 = 0.0 - math.log(math.exp(0.5) + math.exp(1.5) + math.exp(0.0))
    by_hand = (1.0 * -log_p0 + 4.0 * -log_p1) / 2
    y = torch.tensor([0, 2])
    assert create_loss("ce", 0.0, WEIGHTS)(LOGITS, y).item() == pytest.approx(by_hand, rel=1e-6)
    # with label smoothing: torch's weighted CE summed, over the images
    torch_sum = F.cross_entropy(LOGITS, y, weight=WEIGHTS, label_smoothing=0.1, reduction="sum")
    assert create_loss("ce", 0.1, WEIGHTS)(LOGITS, y).item() == pytest.approx(torch_sum.item() / 2, rel=1e-6)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_class_weights_apply_to_mixed_targets_as_the_mix_of_their_classes(loss):
    # a Mixup target 0.3 a + 0.7 b: CE is lambda w_a CE_a + (1 - lambda) w_b CE_b; BCE weighs
    # the image by 0.3 w_a + 0.7 w_b
    a, b, lam = torch.tensor([0, 1]), torch.tensor([2, 0]), 0.3
    mixed = lam * F.one_hot(a, 3).float() + (1 - lam) * F.one_hot(b, 3).float()
    weighted, plain = create_loss(loss, 0.0, WEIGHTS), create_loss(loss, 0.0)
    if loss == "ce":
        expected = lam * weighted(LOGITS, a) + (1 - lam) * weighted(LOGITS, b)
    else:
        per_image = F.binary_cross_entropy_with_logits(LOGITS, mixed, reduction="none").mean(1)
        expected = (per_image * (lam * WEIGHTS[a] + (1 - lam) * WEIGHTS[b])).mean()
    assert weighted(LOGITS, mixed).item() == pytest.approx(expected.item(), rel=1e-6)
    assert weighted(LOGITS, mixed).item() != pytest.approx(plain(LOGITS, mixed).item(), rel=1e-3)
    ones = create_loss(loss, 0.1, torch.ones(3))  # weights of 1 are the unweighted loss
    assert ones(LOGITS, mixed).item() == pytest.approx(create_loss(loss, 0.1)(LOGITS, mixed).item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_weighted_loss_in_micro_batches_has_the_whole_batch_gradient(loss):
    # train.accumulate adds micro-batch means weighted by their share: the weighted loss must
    # be a mean over images for that sum to be the whole batch's
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(8, 6), torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])  # the rare classes in one half
    grads = []
    for parts in (1, 2):
        model.zero_grad()
        forward_backward(model, x, y, create_loss(loss, 0.1, WEIGHTS), parts=parts)
        grads.append([p.grad.clone() for p in model.parameters()])
    for whole, split in zip(*grads):
        torch.testing.assert_close(whole, split, rtol=1e-6, atol=1e-7)
