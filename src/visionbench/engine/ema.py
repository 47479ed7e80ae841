"""Averages of a model's weights over the steps: an EMA evaluated in place of the live weights, and
Lookahead, which pulls the live weights back to a slow average."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import VisionbenchError


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


class Lookahead:
    """airbench's Lookahead (Zhang et al., 2019): every `every` steps the slow weights move
    towards the live ones by 1 - d and the live weights restart from them, with
    d = 0.95^every * (t/T)^3 - no averaging early, more and more towards the end; at step T the
    live weights become the slow ones. The live model is what is evaluated (`module`)."""

    def __init__(self, model: nn.Module, every: int, total_steps: int):
        self.module, self.every, self.total, self.steps = model, every, total_steps, 0
        self.slow = [t.detach().clone() for t in self._floats(model)]

    @staticmethod
    def _floats(model: nn.Module) -> list[torch.Tensor]:
        return [t for t in model.state_dict().values() if t.dtype.is_floating_point]  # BN stats too

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        live = self._floats(model)
        if self.steps % self.every == 0:
            decay = 0.95**self.every * (min(self.steps, self.total) / self.total) ** 3
            torch._foreach_lerp_(self.slow, live, 1 - decay)
            torch._foreach_copy_(live, self.slow)
        if self.steps == self.total:  # the last few steps since the last pull are dropped, as in airbench
            torch._foreach_copy_(live, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        for s, saved in zip(self.slow, state["slow"]):
            s.copy_(saved)
        self.steps = state["steps"]


def weight_average(model: nn.Module, cfg, total_steps: int) -> ModelEMA | Lookahead | None:
    """train.ema's EMA or train.lookahead's Lookahead (a TrainConfig), or None: one of them."""
    if cfg.ema and cfg.lookahead:
        raise VisionbenchError(
            "train.ema and train.lookahead both average the weights", fix="set one of them to 0"
        )
    if cfg.ema:
        return ModelEMA(model, cfg.ema)
    return Lookahead(model, cfg.lookahead, total_steps) if cfg.lookahead else None
