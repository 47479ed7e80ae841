"""Yogi, LAMB, LARS and Lion against hand-computed steps; every optimizer by name learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from visionbench.config import OptimConfig, ProgressiveConfig, SchedConfig, resolve_config
from visionbench.engine.optim import create_optimizer, create_scheduler
from visionbench.engine.optimizers import OPTIMIZERS, Lamb, Lars, Lion, Yogi
from visionbench.engine.schedules import progressive_sides
from visionbench.errors import VisionbenchError

pytestmark = pytest.mark.usefixtures("one_thread")


def one_param(values, grads):
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grads, dtype=torch.float64)
    return p


def test_lamb_step_is_adam_step_scaled_by_trust_ratio():
    p = one_param([[3.0, 4.0]], [[1.0, -2.0]])
    Lamb([p], lr=0.1, weight_decay=0.1, eps=0.0).step()
    u = torch.tensor([[1.0, -1.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])  # Adam's first step is sign(g)
    expected = torch.tensor([[3.0, 4.0]]) - 0.1 * (5.0 / u.norm()) * u
    assert torch.allclose(p.detach(), expected.double(), atol=1e-6)


def test_lamb_steps_biases_and_norm_weights_as_adam():
    """A 1-D parameter (bias, BatchNorm weight) takes Adam's step, not one scaled by its own
    norm: zero_init_residual's BatchNorm weights start at 0 and would only grow by (1 + lr) a
    step - 1.2e-3 after 100 steps of lr 1e-3, so every residual branch stays shut."""
    gamma = one_param([0.0, 0.0], [-1.0, -1.0])  # a zero-init BatchNorm weight
    opt = Lamb([gamma], lr=1e-3, weight_decay=0.0, eps=0.0)
    for _ in range(100):  # the same gradient each step: the loss wants the branch open
        opt.step()
    assert torch.allclose(gamma.detach(), f64([0.1, 0.1]), atol=1e-9)  # 100 Adam steps of lr
    bias = one_param([3.0, 4.0], [1.0, -2.0])
    Lamb([bias], lr=0.1, weight_decay=0.0, eps=0.0).step()
    assert torch.allclose(bias.detach(), f64([2.9, 4.1]))  # sign(g) at lr, not x ||w|| = 5


def test_lars_scales_by_weight_over_grad_norm():
    p = one_param([[3.0, 4.0]], [[0.6, 0.8]])
    Lars([p], lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.01).step()
    # local lr = 0.01 * 5 / 1 = 0.05; step = 0.05 * g
    assert torch.allclose(p.detach(), torch.tensor([[3.0 - 0.03, 4.0 - 0.04]], dtype=torch.float64))
    bias = one_param([1.0], [0.5])  # 1-D: a plain SGD step
    Lars([bias], lr=1.0, trust_coefficient=0.01).step()
    assert bias.item() == pytest.approx(0.5)


def test_lion_steps_by_sign_of_interpolated_momentum():
    p = one_param([1.0, 1.0], [0.3, -2.0])
    opt = Lion([p], lr=0.01, betas=(0.9, 0.99), weight_decay=0.5)
    opt.step()
    assert torch.allclose(
        p.detach(), torch.tensor([1 * (1 - 0.005) - 0.01, 1 * (1 - 0.005) + 0.01], dtype=torch.float64)
    )
    m = opt.state[p]["m"]
    assert torch.allclose(m, 0.01 * torch.tensor([0.3, -2.0], dtype=torch.float64))


# --- several steps with momentum and weight decay, against the papers' update rules -------------
# Each reference is written from the paper's algorithm box, not from engine/optimizers.py.
GRADS = [[[0.5, -1.0], [0.2, 0.3]], [[-0.4, 0.9], [0.1, -0.6]], [[0.3, 0.2], [-0.7, 0.05]]]
W0 = [[1.0, -2.0], [0.5, 1.5]]


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def run_steps(opt_class, **kwargs) -> torch.Tensor:
    p = nn.Parameter(f64(W0))
    opt = opt_class([p], **kwargs)
    for g in GRADS:
        p.grad = f64(g)
        opt.step()
    return p.detach()


def lion_reference(lr, b1, b2, wd):
    """Chen et al. 2023, Algorithm 2: c = b1 m + (1-b1) g; w -= lr (sign(c) + wd w); m = b2 m + (1-b2) g."""
    w = f64(W0)
    m = torch.zeros_like(w)
    for g in map(f64, GRADS):
        c = b1 * m + (1 - b1) * g
        w = w - lr * (torch.sign(c) + wd * w)
        m = b2 * m + (1 - b2) * g
    return w


def lars_reference(lr, momentum, wd, eta):
    """You et al. 2017, Algorithm 1: local = eta ||w|| / (||g|| + wd ||w||);
    v = momentum v + lr local (g + wd w); w -= v."""
    w = f64(W0)
    v = torch.zeros_like(w)
    for g in map(f64, GRADS):
        local = eta * w.norm() / (g.norm() + wd * w.norm())
        v = momentum * v + lr * local * (g + wd * w)
        w = w - v
    return w


def lamb_reference(lr, b1, b2, eps, wd):
    """You et al. 2020, Algorithm 2: Adam's bias-corrected moments; r = m^ / (sqrt(v^) + eps);
    w -= lr ||w|| / ||r + wd w|| (r + wd w)."""
    w = f64(W0)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(map(f64, GRADS), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        u = r + wd * w
        w = w - lr * w.norm() / u.norm() * u
    return w


def yogi_reference(lr, b1, b2, eps, wd, v0=1e-6):
    """Zaheer et al. 2018, Algorithm 2: v = v - (1-b2) sign(v - g^2) g^2, from v0 = 1e-6 (their
    experiments); with Adam's bias correction and decoupled weight decay, as implementations do."""
    w = f64(W0)
    m, v = torch.zeros_like(w), torch.full_like(w, v0)
    for t, g in enumerate(map(f64, GRADS), start=1):
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * torch.sign(v - g * g) * g * g
        w = w * (1 - lr * wd) - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return w


def test_yogi_several_steps_match_the_paper():
    got = run_steps(Yogi, lr=0.1, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)
    assert torch.allclose(got, yogi_reference(0.1, 0.9, 0.99, 1e-3, 0.1), atol=1e-12, rtol=0)


def test_yogi_and_lion_take_their_papers_defaults_unless_set():
    model = nn.Linear(2, 2)

    def group(name, **kwargs) -> dict:
        return create_optimizer(model, OptimConfig(name=name, **kwargs)).param_groups[0]

    assert (group("yogi")["betas"], group("yogi")["eps"]) == ((0.9, 0.999), 1e-3)  # Zaheer et al.
    assert group("lion")["betas"] == (0.9, 0.99) and "eps" not in group("lion")  # Chen et al.
    assert (group("adam")["betas"], group("adam")["eps"]) == ((0.9, 0.999), 1e-8)
    assert group("lion", betas=(0.95, 0.98))["betas"] == (0.95, 0.98)  # what the user sets wins
    assert group("yogi", eps=1e-6)["eps"] == 1e-6


def test_lion_several_steps_match_the_paper():
    got = run_steps(Lion, lr=0.01, betas=(0.8, 0.95), weight_decay=0.3)
    assert torch.allclose(got, lion_reference(0.01, 0.8, 0.95, 0.3), atol=1e-12, rtol=0)
    # b1 matters: the same gradients with b1 = b2 end elsewhere (a sign flips)
    assert not torch.allclose(got, lion_reference(0.01, 0.95, 0.95, 0.3), atol=1e-6)


def test_lars_several_steps_match_the_paper():
    got = run_steps(Lars, lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    assert torch.allclose(got, lars_reference(0.5, 0.9, 0.01, 0.02), atol=1e-12, rtol=0)
    assert not torch.allclose(got, lars_reference(0.5, 0.0, 0.01, 0.02), atol=1e-6)  # momentum counts


def test_lamb_several_steps_match_the_paper():
    got = run_steps(Lamb, lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)
    assert torch.allclose(got, lamb_reference(0.05, 0.8, 0.9, 1e-6, 0.1), atol=1e-12, rtol=0)


LRS = {
    "sgd": 0.1,
    "adam": 0.01,
    "adamw": 0.01,
    "rmsprop": 0.003,
    "yogi": 0.01,
    "lamb": 0.01,
    "lars": 1.0,
    "lion": 0.003,
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_fits_a_tiny_problem(name):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x @ torch.randn(8) > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = create_optimizer(model, OptimConfig(name=name, lr=LRS[name], betas=(0.9, 0.99)))
    loss_fn = nn.CrossEntropyLoss()
    first = loss_fn(model(x), y).item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first, f"{name}: {first:.3f} -> {loss.item():.3f}"


def lrs_of(cfg: SchedConfig, steps_per_epoch=10, epochs=10) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(opt, cfg, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_warm_up_then_decay_to_their_floor():
    for name in ("cosine", "linear"):
        lrs = lrs_of(SchedConfig(name=name, warmup_epochs=2, min_lr_ratio=0.1))
        assert lrs[0] == pytest.approx(0.05) and lrs[19] == pytest.approx(1.0)
        assert lrs[-1] == pytest.approx(0.1, abs=0.02) and min(lrs[20:]) >= 0.1 - 1e-9
    cos = lrs_of(SchedConfig(name="cosine", warmup_epochs=2))
    assert cos[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 80)))
    step = lrs_of(SchedConfig(name="step", step_epochs=3, gamma=0.5))
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25


def test_plateau_decays_after_patience_and_resumes_exactly():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(opt, SchedConfig(name="plateau", patience=1, gamma=0.1), 1, 10)
    for loss in (1.0, 0.9, 0.95, 0.95):  # two epochs without a better loss: decay once
        sched.report(loss)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    again = create_scheduler(opt2, SchedConfig(name="plateau", patience=1, gamma=0.1), 1, 10)
    again.load_state_dict(state)
    again.report(0.97)
    again.report(0.97)
    opt2.step()
    again.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    "n_train, batch, steps",
    [(10_000, 128, 78), (196, 16, 12), (41, 4, 10), (20, 2, 10), (9, 2, 4)],
)
def test_an_unset_batch_is_halved_until_an_epoch_has_8_steps(n_train, batch, steps):
    """As the README says: 128, halved until an epoch has at least 8 optimizer steps (41 images:
    4, not 8 with 5 steps), never below 2 images (BatchNorm), each choice said with its key."""
    from visionbench.config import resolve_config
    from visionbench.models.build import auto_settings

    cfg, notes = auto_settings(resolve_config([], []), n_train, (3, 32, 32))
    assert cfg.train.batch_size == batch and n_train // batch == steps
    said = [n for n in notes if n.startswith("train.batch_size")]
    if batch == 128:
        assert said == []
    else:
        assert said[0].startswith(f"train.batch_size={batch}: {n_train:,} training images make {steps} steps")
        assert said[0].endswith("set train.batch_size=N to choose")
        assert ("fewer than 8 even at the smallest batch" in said[0]) == (steps < 8)


def test_an_unset_lr_is_each_optimizers_own_scaled_with_the_batch_and_said():
    """SGD: 0.1 at batch 128, linear in the batch; Adam's family: 1e-3 at 128, by the square root
    (SGD's 0.025 at batch 32 left Adam at 19% on write-up 002's CNN); Lion a tenth of Adam's."""
    from visionbench.config import resolve_config
    from visionbench.models.build import auto_settings

    def chosen(optimizer: str, batch: int):
        cfg = resolve_config([], [f"optim.name={optimizer}", f"train.batch_size={batch}"])
        cfg, notes = auto_settings(cfg, 10_000, (3, 32, 32))
        return cfg.optim.lr, [n for n in notes if n.startswith("optim.lr")]

    assert chosen("sgd", 128) == (pytest.approx(0.1), [])
    assert chosen("sgd", 32)[0] == pytest.approx(0.025)
    lr, notes = chosen("adam", 32)
    assert lr == pytest.approx(5e-4) and notes == [
        "optim.lr=0.0005: adam's 0.001 at batch 128, x sqrt(32/128); set optim.lr=X to choose"
    ]
    assert chosen("adamw", 128)[0] == pytest.approx(1e-3) and chosen("lion", 512)[0] == pytest.approx(2e-4)
    model = nn.Linear(2, 2)  # and an optimizer built without the run's choices takes the same at 128
    assert create_optimizer(model, OptimConfig(name="yogi")).param_groups[0]["lr"] == pytest.approx(1e-3)


def test_a_batch_larger_than_the_training_set_scales_the_lr_by_the_images_it_holds():
    """--batch-size 100000 on 1,295 digits gave lr 78.1 (0.1 scaled to 100,000): the lr scales
    with the one batch of 1,295 an epoch serves, said in one line naming the key. The batch
    asked is kept (saved in config.yaml: a sweep's re-run and a resume compare it)."""
    from visionbench.config import resolve_config
    from visionbench.models.build import auto_settings

    cfg, notes = auto_settings(resolve_config([], ["train.batch_size=100000"]), 1295, (1, 8, 8))
    assert cfg.train.batch_size == 100000 and cfg.optim.lr == pytest.approx(0.1 * 1295 / 128)
    assert notes[0].startswith("warning: train.batch_size=100000 is more than the 1,295 training images")
    assert "train.batch_size=N" in notes[0]
    assert notes[1] == "optim.lr=1.01: 0.1 scaled to batch 1295; set optim.lr=X to choose"
    cfg, notes = auto_settings(resolve_config([], []), 5, (1, 8, 8))  # 5 images: halved to the floor of 2
    assert cfg.train.batch_size == 2 and cfg.optim.lr == pytest.approx(0.1 * 2 / 128)


@pytest.mark.parametrize(
    ("epochs", "side", "keys"),
    [(10, 32, {"scale": 0.5}), (8, 32, {"scale": 0.5}), (12, 224, {"scale": 0.5, "hold": 0.3, "step": 32})],
)
def test_progressive_sides_hold_the_small_side_then_grow_to_the_full_one(epochs, side, keys):
    cfg = ProgressiveConfig(**keys)
    sides = progressive_sides(epochs, side, cfg)
    for e, s in enumerate(sides):  # by where each epoch starts in the run
        if e / epochs < cfg.hold:
            assert abs(s - side * cfg.scale) <= cfg.step / 2, sides  # the first `hold` small
        if e / epochs >= 1 - cfg.finetune:
            assert s == side, sides  # the last `finetune` at the full side
    assert sides == sorted(sides) and all(s % cfg.step == 0 for s in sides)
    assert progressive_sides(2, side, cfg)[-1] == side  # the last epoch at the side it is tested at
    assert len(set(sides)) > 2  # growing in between, not a jump
    assert progressive_sides(epochs, side, ProgressiveConfig()) == [side] * epochs  # scale 1: off


def test_progressive_hold_and_finetune_cannot_exceed_the_run():
    with pytest.raises(VisionbenchError, match="hold \\+ finetune is 1.2.*sum to 1 or less"):
        resolve_config([], ["train.progressive.hold=0.9", "train.progressive.finetune=0.3"])
    resolve_config([], ["train.progressive.hold=0.7", "train.progressive.finetune=0.3"])  # the fix
