"""benchmarks/cpu_frontier.py and cpu_profile.py: the FLOPs they count and the groups they sum."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_frontier  # noqa: E402
import cpu_profile  # noqa: E402
from cpu_cifar10 import train_flops_per_image  # noqa: E402

from visionbench.data.loader import TensorLoader  # noqa: E402


@pytest.mark.parametrize("name", list(cpu_frontier.VARIANTS))
def test_every_variant_is_a_valid_config(name):
    cfg = cpu_frontier.variant_config(name, "/nowhere", quick=False)
    assert cfg.model.name == "fastnet" and cfg.recipe.startswith("fast@")


def test_flops_are_counted_at_the_size_the_run_trains_at():
    small = cpu_frontier.variant_config("res24", "/nowhere", quick=False)
    full = cpu_frontier.variant_config("v2", "/nowhere", quick=False)
    assert train_flops_per_image(small) < 0.7 * train_flops_per_image(full)  # (24/32)^2 = 0.56
    assert train_flops_per_image(full, backward=False) < 0.5 * train_flops_per_image(full)


@pytest.mark.parametrize(("n", "batch"), [(50, 16), (48, 16), (10, 16)])
def test_images_trained_matches_what_the_loader_serves(n, batch):
    loader = TensorLoader(np.zeros((n, 3, 4, 4), np.uint8), np.zeros(n), batch, train=True)
    served = sum(len(y) for _, y in loader.epoch(0))
    assert cpu_frontier.images_trained(n, batch, epochs=3) == 3 * served


def test_profile_groups_ops_by_the_range_and_the_op():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GELU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function(cpu_profile.EPOCH):
            with torch.profiler.record_function(cpu_profile.LOADER):
                x = torch.rand(4, 3, 8, 8).flip(3)
            nn.functional.cross_entropy(net(x), torch.zeros(4, dtype=torch.long)).backward()
            opt.step()
        with torch.profiler.record_function(cpu_profile.EVAL):
            net(x)
        net(x)  # outside both
    groups, in_eval = cpu_profile.self_times(prof)
    for group in (
        *cpu_profile.GROUPS[:5],
        "optimizer step",
        "loader + augmentation",
        "evaluation + TTA",
        "outside",
    ):
        assert groups[group] > 0, group
    assert groups["lookahead"] == 0 and in_eval["convolution (fwd+bwd)"] > 0


def test_the_bar_needs_two_seeds_the_accuracy_and_the_pflop():
    row = {"seeds": [0, 1], "acc_mean": 0.91, "pflop_plan": 0.14}
    assert cpu_frontier.meets_bar([row]) == [row]
    assert not cpu_frontier.meets_bar([row | {"seeds": [0]}])
    assert not cpu_frontier.meets_bar([row | {"pflop_plan": 0.2}])
    assert not cpu_frontier.meets_bar([row | {"acc_mean": 0.9}])


def test_progressive_runs_are_counted_at_each_epochs_side():
    cfg = cpu_frontier.variant_config("p50-e8", "/nowhere", quick=False)
    per_epoch = cpu_frontier.epoch_flops(cfg)
    full = train_flops_per_image(cpu_frontier.variant_config("e8", "/nowhere", quick=False))
    assert len(per_epoch) == 8 and per_epoch[-1] == pytest.approx(full)
    assert per_epoch[0] < 0.3 * full  # 16 of 32 px: about a quarter
    assert per_epoch == sorted(per_epoch)
