"""The tensor-resident loader: splits, batch order, resumable epochs, normalisation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionbench.data import TensorLoader, channel_stats, stratified_split
from visionbench.data.loader import translate


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The array cache lives in the test's tmp dir, never in the user's home."""
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))


def random_images(n, c=3, h=6, w=6, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


# --- stratified_split -----------------------------------------------------------------------------
LABELS = np.repeat(np.array([2, 0, 1]), [50, 30, 20])[np.random.default_rng(1).permutation(100)]


def test_stratified_split_keeps_proportions_disjoint_complete():
    kept, held = stratified_split(LABELS, 0.2, seed=0)
    assert np.bincount(LABELS[held]).tolist() == [6, 4, 10]
    assert np.bincount(LABELS[kept]).tolist() == [24, 16, 40]
    assert len(np.intersect1d(kept, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(LABELS)))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)  # sorted indices


def test_stratified_split_deterministic_per_seed():
    a = stratified_split(LABELS, 0.2, seed=7)
    b = stratified_split(LABELS, 0.2, seed=7)
    c = stratified_split(LABELS, 0.2, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert np.bincount(LABELS[c[1]]).tolist() == [6, 4, 10]


def test_stratified_split_edge_cases():
    kept, held = stratified_split(LABELS, 0.0, seed=0)
    assert np.array_equal(kept, np.arange(100)) and len(held) == 0
    # every class gives at least one, but never its last sample
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2])
    kept, held = stratified_split(labels, 0.05, seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [1, 1, 0]
    assert np.bincount(labels[kept], minlength=3).tolist() == [9, 1, 1]


def test_stratified_sample_draws_every_class_of_class_sorted_labels_in_proportion():
    from visionbench.data.split import stratified_sample

    labels = np.repeat(np.arange(4), [600, 300, 90, 3])  # stored sorted by class: the first 100 are all 0s
    a = stratified_sample(labels, 100, seed=0)
    assert np.bincount(labels[a]).tolist() == [60, 30, 9, 1]  # every class, the tiny one too
    assert np.all(np.diff(a) > 0) and np.array_equal(a, stratified_sample(labels, 100, seed=0))
    other = stratified_sample(labels, 100, seed=1)
    assert not np.array_equal(a, other) and np.bincount(labels[other]).tolist() == [60, 30, 9, 1]
    assert np.array_equal(stratified_sample(labels, 5000, seed=0), np.arange(len(labels)))


def test_channel_stats():
    x = np.zeros((4, 3, 2, 2), np.uint8)
    x[:, 0] = 255
    x[:2, 1] = 255
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(std, [0.0, 0.5, 0.0], atol=1e-5)


# --- order and batches ----------------------------------------------------------------------------
def index_loader(n, bs, **kw) -> TensorLoader:
    """Labels are the sample indices, so a batch's labels say which samples it holds."""
    return TensorLoader(random_images(n), np.arange(n), bs, **kw)


def epoch_indices(loader, e, **kw) -> list[list[int]]:
    return [y.tolist() for _, y in loader.epoch(e, **kw)]


def test_train_loader_full_batches_each_index_once():
    loader = index_loader(103, 10, train=True, seed=3)
    assert len(loader) == 10
    for e in range(3):
        batches = epoch_indices(loader, e)
        assert [len(b) for b in batches] == [10] * 10
        flat = sum(batches, [])
        assert len(set(flat)) == 100 and set(flat) <= set(range(103))
    assert epoch_indices(loader, 0) != [list(range(i, i + 10)) for i in range(0, 100, 10)]  # shuffled


def test_train_order_depends_on_seed_and_epoch_only():
    a = index_loader(64, 8, train=True, seed=5)
    b = index_loader(64, 8, train=True, seed=5)
    assert epoch_indices(a, 2) == epoch_indices(b, 2)
    assert epoch_indices(a, 2) == epoch_indices(a, 2)  # replayable
    assert epoch_indices(a, 2) != epoch_indices(a, 3)
    assert epoch_indices(a, 2) != epoch_indices(index_loader(64, 8, train=True, seed=6), 2)


def test_images_follow_labels():
    images = random_images(20, seed=4)
    loader = TensorLoader(images, np.arange(20), 6, train=True, seed=1, mean=[0] * 3, std=[1 / 255] * 3)
    for x, y in loader.epoch(0):
        assert torch.equal(x, torch.from_numpy(images[y.numpy()]).float())


@pytest.mark.parametrize("k", [0, 1, 4, 7, 8])
def test_resume_at_batch_yields_exact_tail(k):
    loader = TensorLoader(
        random_images(70, h=8, w=8), np.arange(70) % 10, 8, train=True, seed=11, crop_padding=2, flip=True
    )
    full = list(loader.epoch(4))
    tail = list(loader.epoch(4, start_batch=k))
    assert len(full) == 8 and len(tail) == 8 - k
    for (x1, y1), (x2, y2) in zip(full[k:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resume_with_fresh_loader_matches():
    """A resumed run builds a new loader: its tail must match the interrupted run's epoch."""
    make = lambda: TensorLoader(
        random_images(40), np.arange(40), 8, train=True, seed=2, crop_padding=1, flip=True
    )
    full = list(make().epoch(1))
    tail = list(make().epoch(1, start_batch=3))
    assert len(tail) == 2
    for (x1, y1), (x2, y2) in zip(full[3:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_eval_loader_keeps_order_and_last_partial_batch():
    loader = index_loader(23, 10, train=False, seed=9, flip=True, crop_padding=2)
    assert len(loader) == 3
    batches = epoch_indices(loader, 5)
    assert batches == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    # eval never augments, whatever flip/crop_padding say
    images = random_images(23)
    xs = torch.cat(
        [
            x
            for x, _ in TensorLoader(
                images, np.arange(23), 10, flip=True, crop_padding=2, mean=[0] * 3, std=[1 / 255] * 3
            ).epoch(3)
        ]
    )
    assert torch.equal(xs, torch.from_numpy(images).float())


def test_small_train_set_still_yields_a_batch():
    loader = index_loader(5, 8, train=True)
    assert len(loader) == 1
    assert sorted(sum(epoch_indices(loader, 0), [])) == [0, 1, 2, 3, 4]


# --- normalisation --------------------------------------------------------------------------------
def test_normalisation_with_mean_std():
    images = random_images(5, seed=3)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 0.5]
    ((x, _),) = list(TensorLoader(images, np.zeros(5), 8, mean=mean, std=std))
    want = (images / 255.0 - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), want, atol=1e-5)
    # a pixel at the mean maps to 0, one std above it to 1
    px = np.zeros((1, 3, 1, 1), np.uint8)
    px[0, :, 0, 0] = [51, 102, 255]
    ((x, _),) = list(TensorLoader(px, [0], 1, mean=[0.2, 0.4, 0.5], std=[0.1, 0.1, 0.5]))
    np.testing.assert_allclose(x.flatten().numpy(), [0.0, 0.0, 1.0], atol=1e-5)


def test_default_normalisation_maps_to_minus_one_one():
    px = np.array([0, 255], np.uint8).reshape(2, 1, 1, 1)
    ((x, _),) = list(TensorLoader(px, [0, 1], 2))
    assert x.flatten().tolist() == [-1.0, 1.0]


def test_channels_last():
    ((x, _),) = list(TensorLoader(random_images(4), np.zeros(4), 4, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_loader_does_not_touch_read_only_source():
    images = random_images(8)
    before = images.copy()
    images.flags.writeable = False  # as from the cache's memory map
    loader = TensorLoader(images, np.arange(8), 4, train=True, crop_padding=1, flip=True)
    list(loader.epoch(0))
    assert not np.shares_memory(loader.images.numpy(), images)
    assert np.array_equal(images, before)


# --- translate (random crop) ----------------------------------------------------------------------
def grid(b=1, c=1, h=5, w=6) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


def test_translate_zero_shift_is_identity():
    x = grid(b=3, c=2)
    assert torch.equal(translate(x, torch.zeros(3, 2, dtype=torch.long), 2), x)


def test_translate_moves_content():
    x = grid()
    out = translate(x, torch.tensor([[1, 2]]), 2)
    # output pixel (i, j) reads input (i + dy, j + dx)
    assert out[0, 0, 1, 1] == x[0, 0, 2, 3]
    assert torch.equal(out[0, 0, :4, :4], x[0, 0, 1:, 2:])
    out = translate(x, torch.tensor([[-1, 0]]), 2)
    assert torch.equal(out[0, 0, 1:], x[0, 0, :-1])


def test_translate_reflect_padding_at_border():
    x = grid()
    out = translate(x, torch.tensor([[-2, 0]]), 2)
    # rows -2, -1 reflect to rows 2, 1 (reflect, not replicate, not zeros)
    assert torch.equal(out[0, 0, 0], x[0, 0, 2]) and torch.equal(out[0, 0, 1], x[0, 0, 1])
    out = translate(x, torch.tensor([[0, 1]]), 1)
    assert out[0, 0, 3, 5] == x[0, 0, 3, 4]  # column 6 reflects to column 4


def test_translate_is_per_sample():
    x = grid(b=2, c=2)
    shifts = torch.tensor([[0, 0], [1, -1]])
    out = translate(x, shifts, 1)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, :, :4, 1:], x[1, :, 1:, :5])


def test_loader_crop_shifts_within_padding():
    images = random_images(40, c=2, h=6, w=6, seed=8)
    loader = TensorLoader(
        images, np.arange(40), 8, train=True, seed=4, crop_padding=1, mean=[0] * 2, std=[1 / 255] * 2
    )
    src = torch.from_numpy(images).float()
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    shifted = {s: translate(src, torch.tensor([s] * len(src)), 1) for s in shifts}
    seen = set()
    for x, y in loader.epoch(0):
        for xi, yi in zip(x, y.tolist()):
            hits = [s for s in shifts if torch.equal(shifted[s][yi], xi)]
            assert len(hits) == 1
            seen.add(hits[0])
    assert len(seen) >= 5  # shifts vary from sample to sample


# --- flips ----------------------------------------------------------------------------------------
def flipped_samples(images, epoch, seed=13) -> set[int]:
    """Indices the flip loader mirrors in `epoch`, checking each is exactly the mirror image."""
    n = len(images)
    kw = dict(train=True, seed=seed, mean=[0] * 3, std=[1 / 255] * 3)
    plain = TensorLoader(images, np.arange(n), 50, **kw)
    flip = TensorLoader(images, np.arange(n), 50, flip=True, **kw)
    out = set()
    for (x0, y0), (x1, y1) in zip(plain.epoch(epoch), flip.epoch(epoch)):
        assert torch.equal(y0, y1)  # flipping does not change the order
        for a, b, i in zip(x0, x1, y0.tolist()):
            if not torch.equal(a, b):
                assert torch.equal(b, a.flip(-1))  # mirrored left-right, nothing else
                out.add(i)
    return out


def test_flips_about_half_and_mirror_exactly():
    n = 400
    images = random_images(n, h=4, w=5, seed=6)  # random pixels: no image is its own mirror
    first = flipped_samples(images, 2)
    assert 0.4 * n <= len(first) <= 0.6 * n
    assert flipped_samples(images, 2) == first  # reproducible
    assert flipped_samples(images, 3) != first  # another epoch flips other samples


# --- data.sampler=balanced ------------------------------------------------------------------------
def imbalanced_loader(seed=0) -> TensorLoader:
    """900 images of class 0 and 100 of class 1, shuffled; class-balanced draws."""
    labels = np.repeat([0, 1], [900, 100])[np.random.default_rng(1).permutation(1000)]
    return TensorLoader(random_images(1000, h=4, w=4), labels, 100, train=True, seed=seed, sampler="balanced")


def test_balanced_sampler_draws_classes_about_equally_and_replays_by_seed_and_epoch():
    loader = imbalanced_loader()
    labels = loader.labels[loader.order(0)]
    assert len(labels) == 1000 and len(loader) == 10  # as many draws as images: the same steps
    assert 0.45 < labels.float().mean().item() < 0.55  # 10% of the images, half the draws
    assert torch.equal(loader.order(3), imbalanced_loader().order(3))  # seeded: replayable
    assert not torch.equal(loader.order(3), loader.order(4))
    assert not torch.equal(loader.order(3), imbalanced_loader(seed=1).order(3))
    assert sorted(loader.order(0, whole=True).tolist()) == list(range(1000))  # whole: each image once


def test_balanced_sampler_resumed_mid_epoch_serves_the_same_batches():
    full = list(imbalanced_loader().epoch(2))
    tail = list(imbalanced_loader().epoch(2, start_batch=6))  # a fresh loader, as a resume builds
    assert len(tail) == 4
    for (x1, y1), (x2, y2) in zip(full[6:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
