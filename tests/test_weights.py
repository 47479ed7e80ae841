"""Weights from files: safetensors or safe .pth, tensors of another shape skipped, grey stems
summed from RGB, every tensor accounted for; a pickle that runs code is refused."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import Malicious
from safetensors.torch import save_file

from visionbench.errors import VisionbenchError
from visionbench.models import create_model, head_name
from visionbench.models.weights import check_fit, load_state, read_state_file


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_file_weights_load_with_a_report(tmp_path, suffix):
    source = create_model("simple_cnn", num_classes=5, in_chans=3)
    path = tmp_path / f"w{suffix}"
    state = source.state_dict()
    save_file(state, path) if suffix == ".safetensors" else torch.save({"model": state}, path)
    target = create_model("simple_cnn", num_classes=10, in_chans=1)
    report = load_state(target, read_state_file(path))
    assert report["adapted"] == ["features.0.weight"]
    assert torch.allclose(target.features[0].weight, state["features.0.weight"].sum(1, keepdim=True))
    head = ["classifier.5.bias", "classifier.5.weight"]
    assert sorted(s.split()[0] for s in report["skipped"]) == head and sorted(report["missing"]) == head
    assert torch.equal(target.classifier[0].weight, state["classifier.0.weight"])
    assert len(report["loaded"]) == len(state) - 3


def test_reset_head_keeps_a_fresh_head_of_the_same_shape():
    source, target = create_model("simple_cnn", 10), create_model("simple_cnn", 10)
    before = target.classifier[5].weight.clone()
    report = load_state(target, source.state_dict(), reset="classifier.5")
    assert report["reset"] == ["classifier.5.weight", "classifier.5.bias"]
    assert torch.equal(target.classifier[5].weight, before)


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Malicious(print, "ran code")}, protocol=2))
    with pytest.raises(VisionbenchError, match="cannot read weights safely"):
        read_state_file(path)
    with pytest.raises(VisionbenchError, match="not found"):
        read_state_file(tmp_path / "none.pth")


def test_a_truncated_safetensors_file_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(create_model("simple_cnn", num_classes=5, in_chans=3).state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])  # a copy stopped short
    with pytest.raises(VisionbenchError, match="damaged or not safetensors"):
        read_state_file(path)


def test_weights_of_another_architecture_are_an_error_listing_tensors(tmp_path, tiny_overrides):
    """simple_cnn's weights into small_cnn set nothing: an error before any run folder, not a
    run from scratch that says '20 missing, 10 unused'."""
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    path = tmp_path / "simple.safetensors"
    save_file(create_model("simple_cnn", num_classes=10, in_chans=1, img_size=16).state_dict(), path)
    cfg = resolve_config([], tiny_overrides + [f"model.weights={path}", "name=w"])
    with pytest.raises(VisionbenchError, match="another architecture") as e:
        train(cfg, quiet=True)
    assert "features.0.0.weight 8x1x3x3 in the model, not in the file" in e.value.what
    assert "classifier.0.weight 120x16 in the file, not in the model" in e.value.what
    assert e.value.where == str(path) and "--model NAME" in e.value.fix
    assert not (tmp_path / "runs" / "w").exists()


def test_a_file_matching_only_the_head_is_an_error_a_new_head_is_not():
    target = create_model("simple_cnn", num_classes=10, in_chans=1)
    head_only = {k: v for k, v in target.state_dict().items() if k.startswith("classifier.5")}
    head = head_name(target)
    with pytest.raises(VisionbenchError, match="set 0 of the 8 tensors of simple_cnn outside its head"):
        check_fit(target, head, "simple_cnn", load_state(target, head_only), head_only, "w.pth", "fix")
    other_head = create_model("simple_cnn", num_classes=5, in_chans=3).state_dict()  # fine-tuning
    check_fit(target, head, "simple_cnn", load_state(target, other_head), other_head, "w.pth", "fix")
    other_size = create_model("simple_cnn", num_classes=10, in_chans=3, img_size=28).state_dict()
    check_fit(target, head, "simple_cnn", load_state(target, other_size), other_size, "w.pth", "fix")  # CIFAR


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_run_weights_of_another_model_name_that_model_and_the_fix_works(tiny_overrides):
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    simple = ["model.name=simple_cnn", "model.kwargs={}", "model.input_size=16", "train.epochs=1"]
    train(resolve_config([], tiny_overrides + simple + ["name=src"]), quiet=True)
    with pytest.raises(VisionbenchError, match="another architecture") as e:
        train(resolve_config([], tiny_overrides + ["model.weights=run:src"]), quiet=True)
    assert "--model simple_cnn model.input_size=16" in e.value.fix
    run = train(resolve_config([], tiny_overrides + simple + ["model.weights=run:src"]), quiet=True)
    assert len(run.read_json("weights.json")["loaded"]) == 10
