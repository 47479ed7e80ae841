"""An exponential moving average of a model's weights, evaluated in place of the live weights."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA:
    """ema = d * ema + (1 - d) * weights after every step, buffers (BatchNorm statistics) included.
    The decay warms up as min(d, (1 + n) / (10 + n)), as in TensorFlow's and timm's EMA, so the
    random initial weights are forgotten within the first hundred steps."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema, live = [], []
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                ema.append(e)
                live.append(m)
            else:  # step counters
                e.copy_(m)
        torch._foreach_lerp_(ema, live, 1 - d)  # one fused kernel per group, not one per tensor

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
