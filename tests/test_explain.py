"""explain: attribution maps for chosen or worst-classified test images, as a PNG grid."""

from __future__ import annotations

import json
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.commands.explain import attributions, pick_layer, worst_indices
from visionbench.errors import VisionbenchError

pytest.importorskip("captum")
runner = CliRunner()


class OnePixel(nn.Module):
    """Class 1's logit is 3x pixel (2, 5) through a 1x1 conv; class 0's is constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 3.0)

    def forward(self, x):
        v = self.conv(x)[:, 0, 2, 5]
        return torch.stack([torch.zeros_like(v), v], 1)


def test_gradient_methods_find_the_one_pixel_that_matters():
    x = torch.rand(2, 1, 8, 8) + 0.5
    model = OnePixel()
    maps = attributions(model, x, torch.tensor([1, 1]), pick_layer(model, None)[1])
    assert set(maps) == {"saliency", "smoothgrad", "integrated_gradients", "gradcam"}
    for method in ("saliency", "smoothgrad", "integrated_gradients"):
        m = maps[method]
        assert m.shape == (2, 8, 8)
        assert (m.reshape(2, -1).argmax(1) == 2 * 8 + 5).all(), method
        assert m[:, 2, 5] == pytest.approx(m.reshape(2, -1).sum(1)), method  # nowhere else
    # integrated gradients is exact for a linear model: attribution = weight x (input - baseline)
    assert maps["integrated_gradients"][:, 2, 5] == pytest.approx(3 * x[:, 0, 2, 5].numpy(), rel=1e-4)


def test_worst_indices_are_the_highest_losses():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 1.0], [2.0, 0.0]])
    targets = torch.tensor([0, 0, 0, 0])
    assert worst_indices(logits, targets, 2) == [1, 2]


def test_default_layer_is_the_last_conv_and_unknown_layers_are_named():
    layers = {
        "conv1": nn.Conv2d(1, 2, 3),
        "relu": nn.ReLU(),
        "conv2": nn.Conv2d(2, 2, 3),
        "flat": nn.Flatten(),
    }
    model = nn.Sequential(OrderedDict(layers))
    assert pick_layer(model, None)[0] == "conv2"
    assert pick_layer(model, "relu")[1] is layers["relu"]  # any named layer can be asked for
    with pytest.raises(VisionbenchError, match="unknown layer 'conv_2'. Did you mean 'conv2'"):
        pick_layer(model, "conv_2")


def test_a_layer_whose_output_is_no_spatial_map_is_refused_naming_those_that_are():
    act = nn.ReLU()  # shared by a conv block and the classifier, as simple_cnn's activation is
    model = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(1, 2, 3), act=act, flat=nn.Flatten(), fc=nn.Linear(8, 3), act2=act)
    )
    x = torch.rand(2, 1, 4, 4)
    assert pick_layer(model, "conv", x)[0] == "conv" and model.training  # its mode left as it was
    for name in ("flat", "fc", "act"):
        with pytest.raises(VisionbenchError, match=f"layer '{name}' gives no spatial map") as e:
            pick_layer(model, name, x)
        assert e.value.fix == "choose one of: conv"


def test_explain_cli_writes_grid_for_chosen_and_worst_images(tiny_run):
    root = str(tiny_run.parent)
    res = runner.invoke(
        app, ["explain", "tiny", "--runs-dir", root, "--index", "4", "--index", "0", "--json"]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert [r["index"] for r in rep["images"]] == [4, 0]
    assert rep["layer"] == "features.2.0"  # small_cnn's last conv
    png = tiny_run / "explain" / "explain.png"
    assert png.stat().st_size > 10_000
    assert json.loads((tiny_run / "explain" / "explain.json").read_text()) == rep

    res = runner.invoke(
        app, ["explain", "tiny", "--runs-dir", root, "--count", "3", "--layer", "features.1.0"]
    )
    assert res.exit_code == 0, res.output
    assert "Grad-CAM layer features.1.0" in res.output and res.output.count("pred") == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--index", "100000"], "test index 100000 out of range"),
        (["--layer", "features.2.O"], "Did you mean 'features.2.0'"),
        (["--layer", "features"], "layer 'features' gives no spatial map"),  # ends in Flatten
        (["--target", "truth"], "unknown target 'truth'"),
    ],
)
def test_explain_refuses_bad_input_clearly(tiny_run, args, message):
    res = runner.invoke(app, ["explain", "tiny", "--runs-dir", str(tiny_run.parent), *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_missing_captum_names_the_extra(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # makes `import captum.attr` fail
    res = runner.invoke(app, ["explain", "tiny", "--runs-dir", str(tiny_run.parent)])
    assert res.exit_code == 2
    assert "pip install 'visionbench[explain]'" in res.output
