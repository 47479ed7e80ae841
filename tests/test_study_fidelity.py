"""Every study resolved at every scale (no training) against what its write-up states, as read
by hand from the write-ups themselves (../shared/seeds/), not from the study files: the models
and their parameter counts, optimizers, lrs, batches, epochs, image sizes, dropout, what is
frozen when, and the data at `full`; and that `cpu` and `smoke` change only data, epochs and
resolution - never the architecture, the optimizer or the freezing plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionbench.analysis.compare import flatten
from visionbench.commands.study import load_study, plan
from visionbench.commands.study_plan import param_count
from visionbench.models import create_model
from visionbench.models.registry import count_params

WRITEUPS = Path(__file__).resolve().parents[1] / "examples" / "writeups"
SCALES = ("smoke", "cpu", "full")
FILES = {"001": "001-tiny-imagenet-resnets.yaml", "002": "002-cifar10-lab.yaml",
         "003": "003-mnist-resnet50-rsb.yaml", "004": "004-scratch-transfer-vote.yaml"}  # fmt: skip

HEAD_ONLY_30_THEN_ALL = [(30, "head-only"), (None, "none")]
# What each write-up states, run by run (key: the run's key in its study file): config keys
# with the stated value, `params` the parameter count, `stages` the freezing plan as
# (epochs, freeze) pairs. Read from ../shared/seeds/00N_*.txt.
STATED = {
    "001": {  # "all variants of vanilla resnet ... baseline ... without data augmentation"
        "basic": {"data.name": "tiny-imagenet", "model.pretrained": False, "model.small_stem": False},
        "bottleneck": {"data.name": "tiny-imagenet", "model.pretrained": False, "model.small_stem": False},
    },
    "002": {
        # "Learning rates: 0.001 / Batch size: 32 / Epochs: 10, 20 / Total params: 62,006"
        "simple_cnn": {"data.name": "cifar10", "optim.lr": 0.001, "train.batch_size": 32, "params": 62_006,
                       "train.epochs": 20, "stages": []},
        # "Learning rates: 0.01 / Batch size: 32 / Epochs: 10 / Total params: 4,746,186"
        "dropout": {"data.name": "cifar10", "optim.lr": 0.01, "train.batch_size": 32, "train.epochs": 10,
                    "params": 4_746_186, "stages": []},
        # "pretrained model VGG-16 ... freezing the first layers and retraining the last one",
        # "Learning rates: 0.01 / Batch size: 32 / Epochs: 10"
        "vgg16_frozen": {"model.name": "vgg16", "model.pretrained": True, "finetune.freeze": "head-only",
                         "optim.lr": 0.01, "train.batch_size": 32, "train.epochs": 10},
        # "Learning rates: 0.01 / Batch size: 64 / Epochs: 20"; "For Resnet and VGG16 we use
        # pretrained models ... and freeze the previous layers"
        "resnet18_pretrained": {"model.name": "resnet18", "model.pretrained": True, "finetune.freeze": "head-only",
                                "optim.lr": 0.01, "train.batch_size": 64, "train.epochs": 20},
        # "Learning rates: 3e-5. Batch size: 64. epochs: 20. dropout = 0.1. emb_dropout = 0.1"
        "vit": {"optim.lr": 3e-5, "train.batch_size": 64, "train.epochs": 20, "model.dropout": 0.1,
                "model.kwargs.emb_dropout": 0.1, "model.pretrained": False, "stages": []},
    },
    "003": {  # "pre-trained ResNet50 ... 5 epochs ... RandomResizedCrop and HorizontalFlip", "(28x28)"
        "standard": {"model.name": "resnet50", "model.pretrained": True, "train.epochs": 5, "data.name": "mnist",
                     "aug.flip": True, "model.input_size": None},
    },
    "004": {
        # from scratch: "The simple one ... two chains ... nn.Linear(128, 10)"; no resizing
        "simple_cnn": {"model.pretrained": False, "stages": [], "finetune.freeze": "none", "params": 76_938},
        "complex_cnn": {"model.pretrained": False, "stages": [], "finetune.freeze": "none"},
        "medium_cnn": {"model.pretrained": False, "stages": [], "finetune.freeze": "none", "model.input_size": 64},
        # "With a size of 64x64 ... batch size to 256 ... First 30 epochs: only the last
        # classification layer ... Last 30 epochs: all layers were unfrozen"
        "mobilenet_64": {"model.pretrained": True, "model.input_size": 64, "train.batch_size": 256,
                         "train.epochs": 60, "stages": HEAD_ONLY_30_THEN_ALL},
        # "resized the images to 224x224 ... optim.SGD(model.parameters(), lr=0.001, momentum=0.9)"
        "mobilenet_224": {"model.pretrained": True, "model.input_size": 224, "optim.name": "sgd",
                          "optim.lr": 0.001, "optim.momentum": 0.9, "optim.nesterov": False,
                          "optim.weight_decay": 0.0},
        # "First 30 epochs: ... model.layer4 ... model.fc ... requires_grad = True; Last 30 epochs: all"
        "resnet50_224": {"model.name": "resnet50", "model.pretrained": True, "model.input_size": 224,
                         "train.epochs": 60, "stages": [(30, "until:layer4"), (None, "none")]},
    },
}  # fmt: skip
# The only keys a smaller scale may change: data, epochs, resolution, and (at run time, not in
# the plan) weights that cannot be had. Warmup and stage lengths follow the epochs.
SHRINKABLE = ("data.", "train.epochs", "model.input_size", "sched.warmup_epochs", "name")


def plans(writeup: str, scale: str) -> dict:
    return {
        r.id.removeprefix(f"writeup-{writeup}-{scale}-"): r
        for r in plan(load_study(WRITEUPS / FILES[writeup], scale))
    }


def value(r, key: str):
    if key == "params":
        return param_count(r.cfg)
    if key == "stages":
        return [(s.epochs, s.freeze) for s in r.cfg.finetune.stages]
    return flatten(r.cfg.model_dump(mode="json")).get(key)


@pytest.mark.parametrize("writeup", sorted(STATED))
def test_full_plan_is_what_the_writeup_states(writeup):
    runs = plans(writeup, "full")
    for key, stated in STATED[writeup].items():
        cells = [r for r in runs.values() if r.key == key]
        assert cells, f"{writeup}: no run {key}"
        for r in cells:
            for k, want in stated.items():
                got = value(r, k)
                assert got == pytest.approx(want) if isinstance(want, float) else got == want, (
                    r.id,
                    k,
                    got,
                    want,
                )
            assert r.differences == [], (r.id, r.differences)  # nothing from the write-up left unsaid


def test_parameter_counts_the_writeups_state():
    with torch.device("meta"):  # VGG16's 138M on the meta device: no memory, no time
        vgg = count_params(create_model("vgg16", num_classes=1000))
    assert vgg == 138_357_544  # write-up 002's count is ImageNet's 1000-class network
    (r,) = [r for r in plans("002", "full").values() if r.key == "vgg16_frozen"]
    assert param_count(r.cfg) == vgg - 4096 * 990 - 990  # the same network with a 10-class head
    rates = sorted(
        r.values["model.kwargs"]["rate"] for r in plans("002", "full").values() if r.key == "dropout"
    )
    assert rates == [0.1, 0.2, 0.3, 0.5, 0.9]  # "Accuracy ... (for dropout:0.1)", "[0.2, 0.3, 0.5, 0.9]"


def test_004_full_data_is_a_real_dataset_with_its_reason():
    study = load_study(WRITEUPS / FILES["004"], "full")
    for r in plan(study):
        assert r.cfg.data.name == "cifar10" and r.cfg.data.per_class is None, r.id  # never digits
    assert "CIFAR-10" in study.spec["about"] and "unnecessary" in study.spec["about"]


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
@pytest.mark.parametrize("writeup", sorted(FILES))
def test_smaller_scales_change_only_data_epochs_and_resolution(writeup, scale):
    full, small = plans(writeup, "full"), plans(writeup, scale)
    assert set(small) <= set(full)  # a scale may skip runs or sweep fewer values, never add
    for rid, r in small.items():
        f = full[rid]
        ours, theirs = flatten(r.cfg.model_dump(mode="json")), flatten(f.cfg.model_dump(mode="json"))
        differs = {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k) and k != "name"}
        assert bool(r.differences) == bool(differs), (r.id, differs)  # every change is said
        changed = {k for k in differs if not k.startswith(SHRINKABLE) and k != "finetune.stages"}
        assert not changed, (r.id, {k: (theirs.get(k), ours.get(k)) for k in changed})
        # the freezing plan: the same stages in the same order, each the same share of the epochs
        assert [(s.freeze, s.backbone_lr_mult) for s in r.cfg.finetune.stages] == [
            (s.freeze, s.backbone_lr_mult) for s in f.cfg.finetune.stages
        ], r.id
        bounded = [s.epochs for s in r.cfg.finetune.stages if s.epochs]
        assert sum(bounded) < r.cfg.train.epochs or not bounded, r.id  # the last stage gets epochs
        for s, t in zip(r.cfg.finetune.stages, f.cfg.finetune.stages):
            if s.epochs:
                share = t.epochs / f.cfg.train.epochs
                assert abs(s.epochs / r.cfg.train.epochs - share) <= 1 / r.cfg.train.epochs, r.id
        # a shortened schedule keeps its shape: warmup the same share of the epochs
        warm = f.cfg.sched.warmup_epochs / f.cfg.train.epochs
        assert r.cfg.sched.warmup_epochs / r.cfg.train.epochs == pytest.approx(warm, abs=1e-3), r.id


@pytest.mark.parametrize("writeup", sorted(FILES))
def test_scratch_networks_are_never_frozen_at_any_scale(writeup):
    for scale in SCALES:
        for r in plan(load_study(WRITEUPS / FILES[writeup], scale)):
            if not r.cfg.model.pretrained:
                assert r.cfg.finetune.stages == [] and r.cfg.finetune.freeze == "none", (scale, r.id)


def test_differences_say_every_departure_from_the_full_plan():
    cpu = plans("003", "cpu")
    assert "sched.warmup_epochs 5 → 0.25" in cpu["rsb_a3"].differences  # 003's rsb-a3: 5 of 100 epochs
    assert "train.epochs 100 → 5" in cpu["rsb_a3"].differences
    assert any(
        d.startswith("data mnist, 60,000 train") and "→ mnist, 10,000 train" in d
        for d in cpu["rsb_a3"].differences
    )
    r50 = plans("004", "cpu")["resnet50_224"]
    assert "model.input_size 224 px (from 32 px) → 96 px (from 32 px)" in r50.differences
    assert [(s.epochs, s.freeze) for s in r50.cfg.finetune.stages] == [(3, "until:layer4"), (None, "none")]


def test_a_runs_own_settings_beat_the_scales_defaults(tmp_path):
    """The study's `set` < the scale's `set` < the run's `set` < the scale's entry for the run <
    the grid: a scale's default never overrides what a run states (write-up 004's scratch CNNs
    were trained frozen when it did)."""
    file = tmp_path / "s.yaml"
    file.write_text(
        "name: s\nset: {optim.lr: 0.1, train.epochs: 8, data.name: cifar10}\n"
        "scales:\n"
        "  cpu: {set: {optim.lr: 0.2, data.per_class: 5, finetune.stages: [{epochs: 1, freeze: head-only}, {}]},\n"
        "        runs: {b: {train.epochs: 4}}}\n"
        "runs:\n"
        "  a: {set: {model.name: small_cnn, finetune.stages: []}}\n"
        "  b: {set: {model.name: small_cnn, optim.lr: 0.3, train.epochs: 8}, grid: {seed: [1, 2]}}\n"
    )
    a, b1, _ = plan(load_study(file, "cpu"))
    assert (
        a.cfg.finetune.stages == [] and a.cfg.optim.lr == 0.2
    )  # its own stages; the scale's lr over the study's
    assert b1.cfg.optim.lr == 0.3 and b1.cfg.train.epochs == 4 and b1.cfg.seed == 1
    assert b1.cfg.data.per_class == 5 and "train.epochs 8 → 4" in b1.differences


def test_a_setting_the_writeup_states_and_the_plan_does_not_is_a_difference(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text(  # write-up 002's ViT as the study first had it: lr 3e-4 against the stated 3e-5
        "name: s\nruns:\n  vit:\n    set: {model.name: simple_cnn, optim.lr: 3.0e-4, data.name: cifar10}\n"
        "    writeup: {setting: x, states: {optim.lr: 3.0e-5, params: 4746186, model.name: simple_cnn}}\n"
    )
    (r,) = plan(load_study(file, "cpu"))
    assert r.differences == [
        "optim.lr: the write-up states 3e-05, the full plan has 0.0003",
        "params: the write-up states 4,746,186, the full plan has 62,006",
    ]
