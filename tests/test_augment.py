"""Per-sample augmentation on batches: reproducible per (seed, epoch, batch), different per image,
and Mixup/CutMix targets that sum to 1 and match what was mixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionbench.config import AugConfig
from visionbench.data.augment import Augment, affine, batch_generators, cutmix, eye, mixup
from visionbench.data.loader import TensorLoader
from visionbench.engine.losses import create_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n=16, c=3, size=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, size, size), dtype=np.uint8)


PIXEL_AUGS = {
    "resized_crop": {"resized_crop": 0.2},
    "rotate": {"rotate": 30.0},
    "jitter": {"jitter": 0.4, "hue": 0.1},
    "randaugment": {"policy": "randaugment", "magnitude": 9},
    "trivialaugment": {"policy": "trivialaugment"},
}


@pytest.mark.parametrize("name", sorted(PIXEL_AUGS))
def test_pixel_augment_is_per_sample_in_range_and_reproducible(name):
    aug = Augment(AugConfig(**PIXEL_AUGS[name]), 10)
    x = torch.from_numpy(np.repeat(images(1), 32, axis=0)).float()  # one image, 32 copies
    out = aug.pixels(x.clone(), batch_generators(0, 3, 5, torch.device("cpu"))[0])
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    distinct = {tuple(o.flatten()[:64].round().tolist()) for o in out}
    assert len(distinct) > 16, "every image should draw its own parameters"
    again = aug.pixels(x.clone(), batch_generators(0, 3, 5, torch.device("cpu"))[0])
    assert torch.equal(out, again)
    other = aug.pixels(x.clone(), batch_generators(0, 3, 6, torch.device("cpu"))[0])
    assert not torch.equal(out, other)


def test_identity_warp_reads_pixels_back_up_to_rounding():
    x = torch.from_numpy(images(4, size=9)).float()
    assert torch.allclose(affine(x, eye(4, x.device)), x, atol=1e-3)


def test_mixup_targets_sum_to_one_and_match_the_blend():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 4, 4).clone()  # image i is all i
    y = torch.tensor([0, 1, 2, 3])
    mixed, t = mixup(x, y, np.random.default_rng(0), 0.4, 5)
    assert torch.allclose(t.sum(1), torch.ones(4))
    lam = t[0, 0].item()
    assert torch.allclose(mixed[0], torch.full((1, 4, 4), lam * 0 + (1 - lam) * 3))
    assert t[0, 3].item() == pytest.approx(1 - lam)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_targets_equal_the_pasted_area(seed):
    n, k = 6, 6
    x = torch.arange(float(n)).view(n, 1, 1, 1).expand(n, 3, 12, 10).clone()
    y = torch.arange(n)
    mixed, t = cutmix(x, y, np.random.default_rng(seed), 1.0, k)
    assert torch.allclose(t.sum(1), torch.ones(n))
    for i in range(n):
        own = (mixed[i] == i).float().mean().item()
        assert t[i, i].item() == pytest.approx(own)
        assert t[i, n - 1 - i].item() == pytest.approx(1 - own)


def test_soft_targets_feed_ce_and_bce():
    logits = torch.randn(4, 5)
    hard = torch.tensor([0, 1, 2, 3])
    onehot = torch.nn.functional.one_hot(hard, 5).float()
    for name in ("ce", "bce"):
        loss = create_loss(name, label_smoothing=0.1)
        assert loss(logits, hard).item() == pytest.approx(loss(logits, onehot).item(), rel=1e-6)
    bce = create_loss("bce")(logits, onehot)
    assert bce.item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot).item()
    )


def test_erasing_and_cutout_zero_a_box_per_image():
    aug = Augment(AugConfig(erase=1.0, cutout=4), 10)
    x = torch.ones(8, 3, 16, 16)
    g, rng = batch_generators(1, 0, 0, torch.device("cpu"))
    out, y = aug.batch(x, torch.zeros(8, dtype=torch.long), g, rng)
    zeroed = (out == 0).all(1).float().mean((1, 2))
    assert (zeroed > 0).all() and (zeroed < 0.6).all() and y.ndim == 1
    assert len(set(zeroed.tolist())) > 1


def test_loader_batches_are_reproducible_with_augmentation_and_repeats():
    cfg = AugConfig(policy="randaugment", mixup=0.2, cutmix=1.0, erase=0.25, repeats=2)
    make = lambda: TensorLoader(
        images(40), np.arange(40) % 10, 8, train=True, seed=3, augment=Augment(cfg, 10), repeats=2
    )
    full = list(make().epoch(1))
    tail = list(make().epoch(1, start_batch=3))
    for (xa, ya), (xb, yb) in zip(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert full[0][1].shape == (8, 10)  # soft targets
    order = make()._epoch_plan(1)["order"]
    assert torch.equal(order[0::2], order[1::2])  # each image twice, side by side
