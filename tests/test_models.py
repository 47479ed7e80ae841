"""Models: the seeds' families build for 1- and 3-channel input and take a training step;
builders refuse unknown options; a name is registered once; offline, missing pretrained
weights are a clear error (downloads: tests/test_hub.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionbench.errors import VisionbenchError
from visionbench.models import MODELS, count_params, create_model, head_name, resize_inputs
from visionbench.models.listing import list_models
from visionbench.models.torchvision_zoo import weight_file
from visionbench.models.vit import patch_size_for

# every family seeds 002 and 004 train, and our own builders
FAMILIES = ["vgg16", "resnet18", "resnet50", "resnet152", "mobilenet_v2", "mobilenet_v3_large"]
FAMILIES += ["efficientnet_b0", "vit_b_16", "timm:resnet18", *sorted(MODELS)]
SLOW = {"vgg16", "resnet50", "resnet152", "vit_b_16"}  # 5-17 s each for one step on 2 CPU cores


def test_simple_cnn_is_seed_002_network():
    assert count_params(create_model("simple_cnn", num_classes=10, in_chans=3, img_size=32)) == 62_006
    assert count_params(create_model("cnn_dropout", num_classes=10, in_chans=3, img_size=32)) == 4_746_186


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FAMILIES]
)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_builds_and_trains_one_step(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=in_chans, img_size=32)
    x, y = torch.randn(2, in_chans, 32, 32), torch.tensor([1, 7])
    head = model.get_submodule(head_name(model))
    before = head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(x)
    assert logits.shape == (2, 10)
    F.cross_entropy(logits, y).backward()
    opt.step()
    assert not torch.equal(before, head.weight)


def test_unknown_builder_option_names_the_valid_ones():
    with pytest.raises(VisionbenchError, match="takes no option width") as e:
        create_model("simple_cnn", num_classes=10, width=8)
    assert "dropout" in str(e.value)
    with pytest.raises(VisionbenchError, match="Did you mean 'resnet18'"):
        create_model("resnet81", num_classes=10)
    with pytest.raises(VisionbenchError, match="no pretrained weights"):
        create_model("simple_cnn", num_classes=10, pretrained=True)


def test_a_name_registered_twice_is_an_error(monkeypatch):
    from visionbench.models import register_model

    monkeypatch.setattr("visionbench.models.registry.MODELS", dict(MODELS))  # leave the registry as it was

    def small_cnn(num_classes: int):
        return torch.nn.Linear(4, num_classes)

    with pytest.raises(VisionbenchError, match="model 'small_cnn' is registered twice") as e:
        register_model(small_cnn)
    assert "visionbench.models.cnn.small_cnn" in e.value.where
    assert create_model("small_cnn", 10).__class__.__name__ == "SmallCNN"


def test_builder_options_change_the_network():
    deep = create_model("scratch_cnn", 10, depth=4, width=8)
    shallow = create_model("scratch_cnn", 10, depth=2, width=8)
    assert count_params(deep) > count_params(shallow)
    assert create_model("cnn_dropout", 10, rate=0.4).features[3].p == 0.4
    assert [patch_size_for(s) for s in (28, 32, 48, 64)] == [4, 4, 6, 8]


def test_resnet_small_stem_keeps_resolution():
    model = create_model("resnet18", num_classes=10, in_chans=3, defaults={"small_stem": True})
    feats = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)(torch.zeros(1, 3, 32, 32))
    assert feats.shape[-2:] == (32, 32)
    big = create_model("resnet18", num_classes=10, in_chans=1, small_stem=False)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1


def test_resnet_zero_init_residual_is_an_option_off_by_default():
    # off: torchvision's init (on, a ResNet-18 with the small stem learned MNIST far slower)
    assert create_model("resnet50", num_classes=10).layer1[0].bn3.weight.abs().sum() > 0
    model = create_model("resnet50", num_classes=10, zero_init_residual=True)  # model.kwargs
    assert all(block.bn3.weight.abs().sum() == 0 for layer in (model.layer1, model.layer4) for block in layer)
    assert model.bn1.weight.abs().sum() > 0  # the stem's BatchNorm is not a residual branch


def test_missing_pretrained_weights_name_the_file(monkeypatch, tmp_path):  # TORCH_HOME: tmp (conftest)
    monkeypatch.setenv("VISIONBENCH_OFFLINE", "1")  # online, it would download them (tests/test_hub.py)
    with pytest.raises(VisionbenchError) as e:
        create_model("resnet18", num_classes=10, pretrained=True)
    assert str(tmp_path) in str(e.value) and "resnet18-" in str(e.value)


def test_pretrained_grey_stem_sums_rgb_filters_and_replaces_the_head(monkeypatch, tmp_path):
    import hashlib

    import torchvision

    from visionbench.models import torchvision_zoo

    imagenet = torchvision.models.mobilenet_v2().state_dict()  # a stand-in with ImageNet's shapes
    torch.save(imagenet, tmp_path / "w.pth")
    # named as torchvision names its files, by their sha256: a cached file is checked against it
    sha = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    monkeypatch.setattr(
        torchvision_zoo, "weights_url", lambda arch: f"https://x.invalid/{arch}-{sha[:8]}.pth"
    )
    path, _ = weight_file("mobilenet_v2")
    path.parent.mkdir(parents=True)
    (tmp_path / "w.pth").rename(path)
    model = create_model("mobilenet_v2", num_classes=10, in_chans=1, pretrained=True)
    stem = imagenet["features.0.0.weight"]
    assert torch.allclose(model.features[0][0].weight, stem.sum(1, keepdim=True))
    assert torch.equal(model.features[1].conv[0][0].weight, imagenet["features.1.conv.0.0.weight"])
    report = model.weights_report
    assert report["adapted"] == ["features.0.0.weight"]
    assert sorted(s.split()[0] for s in report["skipped"]) == ["classifier.1.bias", "classifier.1.weight"]
    assert [r["weights_offline"] for r in list_models("mobilenet_v2")] == [True]


def test_models_lists_counts_for_short_lists():
    rows = {r["name"]: r for r in list_models("resnet1")}
    # torchvision's models as on ImageNet: 224 px, their own stem
    assert rows["resnet18"]["input"] == "3x224x224"
    assert rows["resnet18"]["params"] == count_params(create_model("resnet18", 10, small_stem=False))
    # torchvision's model card: 1.81 G multiply-adds; FLOPs count 2 per multiply-add
    assert rows["resnet18"]["flops"] == pytest.approx(2 * 1.814e9, rel=0.005)
    assert rows["resnet18"]["weights_offline"] is False
    every = list_models("")
    assert all(r["params"] is None and r["flops"] is None for r in every if r["source"] == "torchvision")


def test_models_lists_flops_of_our_own_models_by_hand():
    # simple_cnn on 3x32x32, multiply-adds per layer: conv 5x5 3->6 at 28x28, conv 5x5 6->16 at
    # 10x10, then 400->120->84->10
    macs = 6 * 28 * 28 * 3 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    ours = {r["name"]: r for r in list_models("") if r["source"] == "visionbench"}  # counted in the full list
    assert ours["simple_cnn"]["flops"] == 2 * macs
    assert ours["simple_cnn"]["input"] == "3x32x32" and ours["simple_cnn"]["params"] == 62_006
    assert all(r["flops"] and r["params"] for r in ours.values())


def test_inputs_are_resized_inside_the_model():
    model = create_model("vit_small", 10, in_chans=1, img_size=64)
    resize_inputs(model, 64)
    assert model.patch_embed.stride == (8, 8)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert set(model.state_dict()) == set(create_model("vit_small", 10, in_chans=1, img_size=64).state_dict())
