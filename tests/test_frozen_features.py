"""Frozen layers computed once: training the rest on cached features ends with the weights of
training through the frozen layers, the cache is reused, augmentation needs feature views,
resume stays exact, and a model that cannot be cached says why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cut_then_resume

import visionbench.commands.train as train_module
from visionbench.commands.train import Interrupted, train
from visionbench.config import FinetuneConfig, resolve_config
from visionbench.data.prepare import prepare_data
from visionbench.engine.checkpoint import load_checkpoint
from visionbench.engine.features import FrozenFeatures
from visionbench.engine.freeze import StagedFreezing, frozen_params
from visionbench.engine.frozen import capture, mismatch, random_frozen, split_model
from visionbench.errors import VisionbenchError
from visionbench.models import create_model, head_name
from visionbench.models.build import auto_settings, build_model
from visionbench.runs import Run

# digits, small_cnn, no augmentation: 15 steps an epoch, the head alone for one epoch, then all
HEAD_THEN_ALL = [
    "data.name=digits",
    "data.per_class=60",
    "model.name=small_cnn",
    "model.kwargs={width: 8}",
    "model.dropout=0.2",  # a dropout in the rest: it must draw the same numbers either way
    "train.epochs=2",
    "train.batch_size=32",
    "optim.lr=0.1",
    "train.device=cpu",
    "finetune.stages=[{epochs: 1, freeze: head-only}, {freeze: none, backbone_lr_mult: 0.1}]",
]


def trained(overrides: list[str], quiet: bool = True) -> Run:
    return train(resolve_config([], overrides), quiet=quiet)


def same_weights(a: Run, b: Run) -> bool:
    wa, wb = a.load_weights("last"), b.load_weights("last")
    return all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_cached_features_end_with_the_weights_of_the_frozen_backbone(one_thread):
    through = trained(HEAD_THEN_ALL + ["name=through", "finetune.cache_features=off"])
    cached = trained(HEAD_THEN_ALL + ["name=cached", "finetune.cache_features=on"])
    assert same_weights(through, cached)  # after the head-only stage and the unfrozen one
    assert [r["val_acc"] for r in through.metrics()] == [r["val_acc"] for r in cached.metrics()]


def test_a_second_run_reads_the_features_back(one_thread, capsys):
    trained(HEAD_THEN_ALL + ["name=first", "train.epochs=1"], quiet=False)
    first = capsys.readouterr().out
    assert "frozen layers: their output, 32 values an image, computed in" in first
    assert "the rest (head) trains on it" in first
    trained(HEAD_THEN_ALL + ["name=second", "train.epochs=1", "optim.lr=0.05"], quiet=False)
    second = capsys.readouterr().out  # another head setting: the same frozen layers' output
    assert "frozen layers: their output, 32 values an image, read from" in second
    assert "frozen layers: the test images' output read from" in second  # the test pass, too
    assert "computed" not in second


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_run_ending_frozen_is_tested_on_cached_features_with_the_same_outputs(
    one_thread, capsys, monkeypatch
):
    head_only = HEAD_THEN_ALL + ["train.epochs=1"]  # the run ends in the head-only stage
    through = trained(head_only + ["name=through", "finetune.cache_features=off"])
    cached = trained(head_only + ["name=cached"], quiet=False)
    out = capsys.readouterr().out
    assert "frozen layers: the test images' output computed in" in out
    assert "frozen layers: the validation images' output computed in" in out  # the temperature's pass
    t = through.read_json("calibration.json")["temperature"]
    assert cached.read_json("calibration.json")["temperature"] == pytest.approx(t, rel=1e-5)
    a, b = (np.load(r.path / "eval-last" / "predictions.npz") for r in (through, cached))
    assert np.allclose(a["probs"], b["probs"], atol=1e-6) and (a["preds"] == b["preds"]).all()
    assert through.read_json("summary.json")["test_acc"] == cached.read_json("summary.json")["test_acc"]
    with monkeypatch.context() as mp, pytest.raises(Interrupted):  # stopped in the test pass
        mp.setattr(train_module, "finish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        trained(head_only + ["name=resumed"])
    resumed = train(None, resume="resumed")
    out = capsys.readouterr().out
    assert "frozen layers: the test images' output read from" in out
    assert "frozen layers: the validation images' output read from" in out
    assert resumed.read_json("calibration.json") == cached.read_json("calibration.json")
    assert resumed.read_json("summary.json")["test_acc"] == cached.read_json("summary.json")["test_acc"]
    tta = trained(head_only + ["name=tta", "train.tta=flip"], quiet=False)  # views of images: all of it runs
    assert (
        "test images' output" not in capsys.readouterr().out
        and tta.read_json("summary.json")["tta"] == "flip"
    )


def test_augmentation_without_views_runs_the_frozen_layers_and_says_why(one_thread, capsys, tmp_path):
    trained(HEAD_THEN_ALL + ["name=flipped", "train.epochs=1", "aug.flip=true"], quiet=False)
    out = capsys.readouterr().out
    assert "frozen layers: run every step, their output not cached: train-time augmentation (aug.flip)" in out
    with pytest.raises(VisionbenchError, match="finetune.feature_views=K") as e:
        trained(HEAD_THEN_ALL + ["name=strict", "aug.flip=true", "finetune.cache_features=on"])
    assert "finetune.cache_features=auto" in e.value.fix
    assert not (tmp_path / "runs" / "strict").exists()  # said before any run folder


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_balanced_sampler_trains_on_cached_features_as_through_the_frozen_layers(one_thread):
    # the features are cached in image order; the sampler draws some images twice, others never
    balanced = HEAD_THEN_ALL + ["train.epochs=1", "data.sampler=balanced"]
    through = trained(balanced + ["name=through", "finetune.cache_features=off"])
    cached = trained(balanced + ["name=cached", "finetune.cache_features=on"])
    assert same_weights(through, cached)
    with pytest.raises(VisionbenchError, match="data.sampler=balanced with train-time augmentation"):
        trained(balanced + ["name=strict", "finetune.cache_features=on", "aug.flip=true"])


@pytest.mark.parametrize(
    "setting, why",
    [
        ("finetune.bn_eval=false", "features.0.2 normalises with batch statistics"),
        ("aug.mixup=0.2", "aug.mixup mix images within a batch"),
        ("train.ema=0.9", "train.ema averages the whole model"),
        ("train.lookahead=5", "train.lookahead averages the whole model"),
    ],
)
def test_cache_features_on_where_it_cannot_be_is_a_clear_error(setting, why):
    with pytest.raises(VisionbenchError, match=why):
        trained(HEAD_THEN_ALL + ["name=strict", "finetune.cache_features=on", setting])


def test_views_equal_the_augmented_epochs_and_cycle(one_thread):
    """View k holds each image as epoch k augments it; epoch e trains on view e % K."""
    aug = ["aug.flip=true", "aug.crop_padding=1", "aug.jitter=0.3", "train.epochs=3"]
    cfg = resolve_config([], HEAD_THEN_ALL + aug + ["finetune.feature_views=2"])
    data = prepare_data(cfg, torch.device("cpu"))
    cfg, _ = auto_settings(cfg, len(data.keep), data.dataset.shape)
    data.cfg = cfg
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    freezing = StagedFreezing(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg.finetune, 3)
    freezing.apply(0)
    features = FrozenFeatures(cfg, model, data, freezing, say=lambda _: None)
    served = features.inputs(0, model, model).train
    model.eval()
    with torch.no_grad():  # what the frozen layers compute on each training batch of epochs 0 and 1
        seen = [{} for _ in range(2)]
        for k in range(2):
            for idx, (x, _) in zip(data.train.indices(k), data.train.epoch(k)):
                seen[k].update(zip(idx.tolist(), capture(model, model.head, x)))
        for epoch in range(3):
            for idx, (f, _) in zip(data.train.indices(epoch), served.epoch(epoch)):
                known = [(i, row) for i, row in zip(idx.tolist(), f) if i in seen[epoch % 2]]
                assert all(torch.allclose(row, seen[epoch % 2][i], atol=1e-5) for i, row in known)
    flipped = [i for i in seen[0] if i in seen[1] and not torch.allclose(seen[0][i], seen[1][i])]
    assert len(flipped) > len(seen[0]) // 2  # two views, not one served twice


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_resume_inside_a_cached_stage_is_exact(tmp_path, monkeypatch, one_thread):
    full = trained(HEAD_THEN_ALL + ["name=full"])

    def inside_the_cached_stage(cut):
        left = load_checkpoint(cut.checkpoint)
        assert left["freezing"] == {"stage": 0} and left["batch"] == 9

    cfg = resolve_config([], HEAD_THEN_ALL)  # SIGTERM inside epoch 1 of 2: the stage on cached features
    resumed = cut_then_resume(monkeypatch, tmp_path, cfg, 9, on_cut=inside_the_cached_stage)
    a, b = full.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "name, spec, size, cut",
    [
        ("resnet18", "until:layer3", 32, "layer3"),  # torchvision: conv1 .. layer4, avgpool, fc
        ("mobilenet_v3_small", "head-only", 64, "classifier.2"),  # its dropout moves to the rest
        ("mobilenet_v3_small", "until:features.9", 64, "features.9"),
        ("timm:test_resnet", "head-only", 32, "fc"),
        ("timm:test_vit", "head-only", 160, "head"),
    ],
)
def test_torchvision_and_timm_models_split_where_they_freeze(name, spec, size, cut, one_thread):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    frozen = frozen_params(model, spec, head_name(model))
    split = split_model(model, frozen)
    assert split.cut == cut
    assert random_frozen(model, split, frozen, bn_eval=True) is None
    assert mismatch(model, split, torch.randn(4, 3, size, size), frozen, bn_eval=True) is None


def test_a_model_that_does_not_split_says_why(one_thread):
    model = create_model("resnet18", num_classes=10)
    frozen = frozen_params(model, "until:layer3.0.conv2", "fc")  # inside a residual block
    why = mismatch(model, split_model(model, frozen), torch.randn(4, 3, 32, 32), frozen, bn_eval=True)
    assert why.startswith("the model does not run as a chain of its modules from layer3.0.conv2")
    dropping = create_model("timm:test_resnet", num_classes=10, drop_rate=0.5)  # F.dropout in its forward
    frozen = frozen_params(dropping, "head-only", "fc")
    why = mismatch(dropping, split_model(dropping, frozen), torch.randn(4, 3, 32, 32), frozen, bn_eval=True)
    assert "compute differently in training" in why
    effnet = create_model("efficientnet_b0", num_classes=10)
    frozen = frozen_params(effnet, "head-only", head_name(effnet))
    why = random_frozen(effnet, split_model(effnet, frozen), frozen, bn_eval=True)
    assert "StochasticDepth" in why and "random in training" in why


def test_feature_settings_read_as_words():
    assert FinetuneConfig.model_validate({"cache_features": True}).cache_features == "on"  # YAML's on
    cfg = resolve_config([], ["finetune.cache_features=off", "finetune.feature_views=4"])
    assert (cfg.finetune.cache_features, cfg.finetune.feature_views) == ("off", 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp, atol", [("false", 1e-4), ("true", 1e-2)])  # bf16 autocast: its precision
def test_cached_features_on_a_gpu(amp, atol):
    gpu = [o.replace("train.device=cpu", "train.device=cuda") for o in HEAD_THEN_ALL]
    gpu += [f"train.amp={amp}", "model.input_size=16"]  # resized on the device, inside the model
    through = trained(gpu + ["name=through", "finetune.cache_features=off"])
    cached = trained(gpu + ["name=cached", "finetune.cache_features=on"])
    wa, wb = through.load_weights("last"), cached.load_weights("last")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=atol) for k in wa)
