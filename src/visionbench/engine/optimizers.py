"""Every optimizer by name (`optim.name`, OPTIMIZERS), and those torch does not ship: Yogi, LAMB,
LARS, Lion -- each the paper's update and defaults, in plain PyTorch (weight decay is decoupled,
as in AdamW, except LARS, whose paper folds it into the gradient). No config import here:
config.py checks `optim.name` against OPTIMIZERS."""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class _Simple(Optimizer):
    """The common frame: one `update(p, grad, state, group)` per parameter with a gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad, self.state[p], group)
        return loss

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


def _adam_moments(
    grad, state, betas, yogi: bool = False, v0: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bias-corrected first and second moments (v starting at `v0`); Yogi's second moment moves
    additively."""
    if not state:
        state["step"] = 0
        state["m"] = torch.zeros_like(grad)
        state["v"] = torch.full_like(grad, v0)
    b1, b2 = betas
    state["step"] += 1
    m, v = state["m"], state["v"]
    m.lerp_(grad, 1 - b1)
    g2 = grad * grad
    if yogi:  # v -= (1 - b2) * sign(v - g^2) * g^2: v changes by at most (1 - b2) g^2 per step
        v.addcmul_(torch.sign(v - g2), g2, value=-(1 - b2))
    else:
        v.lerp_(g2, 1 - b2)
    t = state["step"]
    return m / (1 - b1**t), v / (1 - b2**t)


class Yogi(_Simple):
    """Yogi (Zaheer et al., NeurIPS 2018): Adam whose second moment cannot grow or shrink too fast.
    The paper's defaults: betas (0.9, 0.999), eps 1e-3, v starting at 1e-6 (its experiments)."""

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0, initial_v=1e-6):
        super().__init__(
            params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, initial_v=initial_v)
        )

    def __setstate__(self, state):  # checkpoints saved before initial_v was a setting
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("initial_v", 0.0)

    def update(self, p, grad, state, group):
        m, v = _adam_moments(grad, state, group["betas"], yogi=True, v0=group["initial_v"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])


class Lamb(_Simple):
    """LAMB (You et al., ICLR 2020): the Adam step of each weight tensor rescaled by
    ||w|| / ||step||. Biases and norm weights (1-D) take plain Adam steps, as in the paper's
    BERT code (exclude_from_layer_adaptation) and in timm's Lamb, which RSB trained with (it
    adapts only the decayed tensors, and timm decays no 1-D ones). Scaled by its own norm, a
    parameter that starts at zero (zero_init_residual's last BatchNorm weight of each block, every
    BatchNorm bias) only grows by (1 + lr) a step: from 1e-3 to 1.2e-3 in 175 steps at lr 1e-3
    instead of to 0.18, so every residual branch stayed shut (write-up 003's rsb_a3 at chance)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        m, v = _adam_moments(grad, state, group["betas"])
        step = m / (v.sqrt() + group["eps"]) + group["weight_decay"] * p
        w_norm, s_norm = p.norm(), step.norm()
        if p.ndim > 1:  # a zero norm (zero weights, zero step) falls back to the plain Adam step
            step.mul_(torch.where((w_norm > 0) & (s_norm > 0), w_norm / s_norm, torch.ones_like(w_norm)))
        p.add_(step, alpha=-group["lr"])


class Lars(_Simple):
    """LARS (You et al., 2017): SGD with momentum whose step per tensor is scaled by
    trust * ||w|| / (||g|| + wd ||w||). Biases and norm weights (1-D) take plain SGD steps."""

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001):
        super().__init__(
            params,
            dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient),
        )

    def update(self, p, grad, state, group):
        d = grad.add(p, alpha=group["weight_decay"])
        if p.ndim > 1:
            w_norm, g_norm = p.norm(), grad.norm()
            local = group["trust_coefficient"] * w_norm / (g_norm + group["weight_decay"] * w_norm)
            d.mul_(torch.where((w_norm > 0) & (g_norm > 0), local, torch.ones_like(local)))
        buf = state.setdefault("momentum", torch.zeros_like(p))
        buf.mul_(group["momentum"]).add_(d)
        p.add_(buf, alpha=-group["lr"])


class Lion(_Simple):
    """Lion (Chen et al., 2023): the sign of an interpolated momentum; use a 3-10x smaller lr than
    AdamW's and betas (0.9, 0.99)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        b1, b2 = group["betas"]
        m = state.setdefault("m", torch.zeros_like(p))
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(torch.sign(m.lerp(grad, 1 - b1)), alpha=-group["lr"])
        m.lerp_(grad, 1 - b2)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "yogi": Yogi,
    "lamb": Lamb,
    "lars": Lars,
    "lion": Lion,
}
