"""The lr range test leaves the model as it found it and suggests a usable learning rate."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.config import resolve_config
from visionbench.data.prepare import prepare_data
from visionbench.engine.losses import create_loss
from visionbench.engine.lr_find import range_test, suggest
from visionbench.engine.optim import create_optimizer
from visionbench.models.build import build_model


def test_range_test_restores_weights_buffers_and_optimizer(tiny_overrides):
    cfg = resolve_config([], tiny_overrides + ["optim.name=adam"])
    data = prepare_data(cfg, torch.device("cpu"))
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    opt = create_optimizer(model, cfg.optim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    curve = range_test(model, data.train, opt, create_loss("ce"), iters=30, end_lr=100.0)
    assert 5 < len(curve["lrs"]) <= 30 and curve["lrs"] == sorted(curve["lrs"])
    after = model.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not opt.state and all(g["lr"] == cfg.optim.lr for g in opt.param_groups)


class NoisyNet(torch.nn.Module):
    """A model that draws from every RNG in its forward, as a user's noise layer may."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)
        self.bn = torch.nn.BatchNorm1d(10)

    def forward(self, x):
        noise = torch.rand(1).item() + float(np.random.rand()) + random.random()
        if torch.cuda.is_available():
            noise += torch.rand(1, device="cuda").item()
        return self.bn(self.fc(x.flatten(1).float())) * (1 + 1e-3 * noise)


def draw_from_every_rng() -> list[float]:
    draws = [torch.rand(1).item(), float(np.random.rand()), random.random()]
    if torch.cuda.is_available():
        draws.append(torch.rand(1, device="cuda").item())
    return draws


@pytest.fixture
def digits_train(tiny_overrides):
    cfg = resolve_config([], tiny_overrides)
    return prepare_data(cfg, torch.device("cpu")).train


def test_range_test_restores_every_rng_and_the_mode(digits_train):
    model = NoisyNet().eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = draw_from_every_rng()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    range_test(model, digits_train, opt, create_loss("ce"), iters=10)
    assert draw_from_every_rng() == expected
    assert not model.training and not model.bn.training


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_range_test_restores_an_optimizer_that_has_stepped(digits_train, name):
    model = NoisyNet()
    if name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = create_loss("ce")
    for (x, y), _ in zip(digits_train.epoch(0), range(3)):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    before = copy.deepcopy(opt.state_dict())
    weights = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    range_test(model, digits_train, opt, loss_fn, iters=10, end_lr=100.0)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for i, state in before["state"].items():
        for key, value in state.items():
            assert torch.equal(after["state"][i][key], value), (i, key)
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_suggestions_on_a_known_curve():
    lrs = np.logspace(-6, 1, 71)
    # flat, then falls fastest around 1e-3, bottoms out at 1e-1, then explodes
    losses = (
        2
        - 1.5 / (1 + np.exp(-3 * (np.log10(lrs) + 3)))
        + np.where(lrs > 0.1, (np.log10(lrs) + 1) ** 2 * 5, 0)
    )
    s = suggest(list(lrs), list(losses))
    assert s["minimum/10"] == pytest.approx(1e-2, rel=0.15)
    assert s["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert 1e-4 < s["valley"] < 1e-1


def test_cli_reports_spread_plot_and_applies(tmp_path):
    plot = tmp_path / "lr.png"
    args = [
        "lr-find",
        "--data",
        "digits",
        "--model",
        "small_cnn",
        "model.kwargs={width: 8}",
        "train.device=cpu",
    ]
    res = CliRunner().invoke(
        app,
        args
        + ["--iters", "25", "--repeats", "2", "--plot", str(plot), "--json", "--apply", "train.epochs=1"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[0])
    assert plot.stat().st_size > 0
    assert (
        len(report["suggestions"]["valley"]["values"]) == 2 and report["suggestions"]["valley"]["spread"] >= 1
    )
    runs = list((tmp_path / "runs").glob("*/config.yaml"))
    assert len(runs) == 1 and f"lr: {report['chosen']}" in runs[0].read_text()
