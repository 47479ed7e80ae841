"""The training step: micro-batches accumulated into one step equal the whole batch's step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from visionbench.data.loader import TensorLoader
from visionbench.engine.loop import train_one_epoch
from visionbench.engine.losses import create_loss


def one_step(accumulate: int, loss: str) -> dict[str, torch.Tensor]:
    """The weights after one SGD step (momentum, weight decay, clipping) on one batch of 48."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    rng = np.random.default_rng(0)
    loader = TensorLoader(
        rng.integers(0, 256, (48, 3, 8, 8), dtype=np.uint8),
        rng.integers(0, 5, 48),
        48,
        device=torch.device("cpu"),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if accumulate == 0:  # the weights before the step
        return {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(
        model,
        loader,
        opt,
        sched,
        epoch=0,
        loss_fn=create_loss(loss, 0.1),
        grad_clip=1.0,
        accumulate=accumulate,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("loss", ["ce", "bce"])
@pytest.mark.parametrize("accumulate", [2, 3, 5])  # 5: micro-batches of 10, 10, 10, 10 and 8
def test_accumulated_micro_batches_step_as_the_whole_batch(accumulate, loss):
    whole, parts = one_step(1, loss), one_step(accumulate, loss)
    for k in whole:
        assert torch.allclose(whole[k], parts[k], rtol=0, atol=2e-6), k
    assert not torch.allclose(whole["0.weight"], one_step(0, loss)["0.weight"], atol=1e-3)  # it stepped
