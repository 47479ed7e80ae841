"""Staged freezing: what is frozen trains not at all, learning rates follow the stage, and a
run stopped inside a frozen stage resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import cut_then_resume

from visionbench.commands.train import train
from visionbench.config import FinetuneConfig, FreezeStage, SchedConfig, resolve_config
from visionbench.engine.checkpoint import load_checkpoint
from visionbench.engine.freeze import StagedFreezing
from visionbench.engine.optim import create_scheduler
from visionbench.errors import VisionbenchError
from visionbench.models import create_model


def staged(model, cfg: FinetuneConfig, epochs: int = 4):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    freezing = StagedFreezing(model, opt, cfg, epochs)
    sched = create_scheduler(opt, SchedConfig(name="constant"), steps_per_epoch=1, epochs=epochs)
    return opt, freezing, sched


def step(model, opt):
    model.train()
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    opt.zero_grad()


def test_head_only_then_all_with_a_lower_backbone_lr():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    cfg = FinetuneConfig(
        stages=[FreezeStage(epochs=1, freeze="head-only"), FreezeStage(backbone_lr_mult=0.1)]
    )
    opt, freezing, sched = staged(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert "head-only" in freezing.enter(0, sched)
    step(model, opt)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics too stay as they were
    assert freezing.enter(0, sched) is None  # same stage: nothing to do
    assert "backbone lr x 0.1" in freezing.enter(1, sched)
    lrs = {g["backbone"]: g["lr"] for g in opt.param_groups}
    assert lrs == {True: pytest.approx(0.01), False: pytest.approx(0.1)}
    step(model, opt)
    assert not torch.equal(model.layer1[0].conv1.weight, before["layer1.0.conv1.weight"])


def test_until_a_layer_freezes_what_comes_before_it():
    model = create_model("resnet18", num_classes=10)
    opt, freezing, sched = staged(model, FinetuneConfig(freeze="until:layer3", bn_eval=False))
    freezing.enter(0, sched)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4", "fc"}
    with pytest.raises(VisionbenchError, match="Did you mean 'layer3'"):
        staged(model, FinetuneConfig(freeze="until:layer33"))
    with pytest.raises(VisionbenchError, match="only the last"):
        staged(model, FinetuneConfig(stages=[FreezeStage(freeze="head-only"), FreezeStage()]))


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_resumed_staged_run_equals_uninterrupted(tmp_path, monkeypatch, tiny_overrides):
    stages = "finetune.stages=[{epochs: 1, freeze: head-only}, {backbone_lr_mult: 0.1}]"
    cfg = resolve_config([], tiny_overrides + [stages, "model.dropout=0.2"])
    full = train(cfg.model_copy(update={"name": "full"}), quiet=True)

    def frozen_stage_saved(cut):
        assert load_checkpoint(cut.checkpoint)["freezing"] == {"stage": 0}

    # SIGTERM inside epoch 1 of 2 (20 steps each): the frozen stage
    resumed = cut_then_resume(monkeypatch, tmp_path, cfg, 9, on_cut=frozen_stage_saved)

    a, b = full.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in full.metrics()] == [r["lr"] for r in resumed.metrics()]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_frozen_stage_leaves_the_backbone_as_loaded(tiny_overrides):
    base = train(resolve_config([], tiny_overrides + ["name=base", "train.epochs=1"]), quiet=True)
    cfg = resolve_config(
        [],
        tiny_overrides
        + ["name=head", "train.epochs=1", "model.weights=run:base", "finetune.freeze=head-only"],
    )
    head = train(cfg, quiet=True)
    a, b = base.load_weights("last"), head.load_weights("last")
    assert {k for k in a if not torch.equal(a[k], b[k])} == {"head.1.weight", "head.1.bias"}
    assert head.read_json("weights.json")["loaded"] == list(a)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_stages_past_the_last_epoch_are_named_in_one_warning(tiny_overrides, capsys):
    model = create_model("small_cnn", num_classes=10, width=4)
    two = [FreezeStage(epochs=5, freeze="head-only"), FreezeStage(freeze="none")]
    assert staged(model, FinetuneConfig(stages=two), epochs=6)[1].unreached() is None  # each stage runs
    three = [
        FreezeStage(epochs=1, freeze="head-only"),
        FreezeStage(epochs=2, freeze="until:features.2"),
        FreezeStage(),
    ]
    assert staged(model, FinetuneConfig(stages=three), epochs=3)[1].unreached() == (
        "warning: finetune stage 3/3 (freeze none, from epoch 4) never runs within train.epochs=3; "
        "set train.epochs=4 or more, or shorten the epochs in finetune.stages"
    )
    stages = "finetune.stages=[{epochs: 5, freeze: head-only}, {freeze: none}]"
    train(resolve_config([], tiny_overrides + [stages, "train.epochs=1"]))
    said = capsys.readouterr().out
    assert "finetune stage 2/2 (freeze none, from epoch 6) never runs within train.epochs=1" in said
    train(resolve_config([], tiny_overrides + [stages.replace("5", "1"), "train.epochs=2"]))
    assert "never run" not in capsys.readouterr().out
