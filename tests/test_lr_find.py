"""The lr range test leaves the model as it found it and suggests a usable learning rate."""

from __future__ import annotations

import json

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
