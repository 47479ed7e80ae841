"""Every registered model builds for 1- and 3-channel input and takes a training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionbench.errors import VisionbenchError
from visionbench.models import MODELS, count_params, create_model


def test_simple_cnn_is_seed_002_network():
    assert count_params(create_model("simple_cnn", num_classes=10, in_chans=3, img_size=32)) == 62_006


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_builds_and_trains_one_step(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=in_chans, img_size=32)
    x, y = torch.randn(2, in_chans, 32, 32), torch.tensor([1, 7])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert model(x).shape == (2, 10)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_resnet_small_stem_keeps_resolution():
    model = create_model("resnet18", num_classes=10, in_chans=3, small_stem=True)
    feats = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)(torch.zeros(1, 3, 32, 32))
    assert feats.shape[-2:] == (32, 32)
    big = create_model("resnet18", num_classes=10, in_chans=1, small_stem=False)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1


def test_missing_pretrained_weights_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VisionbenchError) as e:
        create_model("resnet18", num_classes=10, pretrained=True)
    assert str(tmp_path) in str(e.value) and "resnet18-" in str(e.value)
