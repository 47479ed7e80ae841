"""export: ONNX and TorchScript files that give PyTorch's logits on real test images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.commands.export import run_onnx, run_torchscript
from visionbench.engine.loop import predict
from visionbench.runs.reopen import open_run

runner = CliRunner()


def export(tiny_run, *args: str):
    res = runner.invoke(app, ["export", "tiny", "--runs-dir", str(tiny_run.parent), *args])
    return res


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_64_real_images(tiny_run, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    res = export(tiny_run, "--format", fmt, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["parity"]["images"] == 64
    assert rep["parity"]["max_abs_logit_diff"] <= 1e-4
    # the file alone, fed [0, 1] pixels, gives the run's own logits (its normalisation is inside),
    # for a batch size other than the one it was exported with
    loaded = open_run("tiny", tiny_run.parent, device="cpu")
    test = loaded.data.dataset.splits["test"]
    x = np.array(test.images[:37]).astype(np.float32) / 255
    expected, _ = predict(loaded.model, loaded.data.loader("test", np.arange(37)))
    got = (run_onnx if fmt == "onnx" else run_torchscript)(rep["path"], x)
    assert got.shape == (37, 10)
    assert np.abs(got - expected.numpy()).max() <= 1e-4
    meta = json.loads(open(rep["path"] + ".json").read())
    assert meta["classes"] == loaded.data.dataset.classes and meta["input"]["range"] == [0, 1]


def test_export_parity_failure_is_an_error(tiny_run, tmp_path):
    res = export(tiny_run, "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--tolerance", "-1")
    assert res.exit_code == 2
    assert "differs from PyTorch" in res.output and "Traceback" not in res.output


def test_export_refuses_unknown_format(tiny_run):
    res = export(tiny_run, "--format", "tflite")
    assert res.exit_code == 2 and "unknown format 'tflite'" in res.output


def test_torchscript_export_leaves_model_in_contiguous_layout(tiny_run, tmp_path):
    res = export(
        tiny_run, "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--images", "5", "--json"
    )
    assert json.loads(res.stdout)["parity"]["images"] == 5
    module = torch.jit.load(str(tmp_path / "m.pt"))
    assert module(torch.rand(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_each_format_keeps_its_own_metadata(tiny_run):
    """ONNX then TorchScript into the run's export/: the second does not overwrite the first's
    metadata and parity record."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    paths = {}
    for fmt in ("onnx", "torchscript"):
        res = export(tiny_run, "--format", fmt, "--images", "6", "--json")
        assert res.exit_code == 0, res.output
        paths[fmt] = json.loads(res.stdout)["path"]
    for fmt, path in paths.items():
        meta = json.loads(open(path + ".json").read())
        assert meta["format"] == fmt and meta["path"] == path and meta["parity"]["images"] == 6
