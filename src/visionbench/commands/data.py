"""`visionbench data info` and `data show`: what a dataset holds, and a grid of its samples as
stored and as the training loader augments them (every aug.* key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import AugConfig
from ..data import Dataset, channel_stats, load_dataset
from ..data.cache import memo
from ..data.report import dataset_report, with_advice
from ..data.split import class_members


def cache_state(ds: Dataset) -> dict | None:
    """The cache folder and its size in MiB; None for a streamed dataset."""
    if not ds.cache:
        return None
    files = [f for f in Path(ds.cache).iterdir() if f.is_file()]
    return {"folder": ds.cache, "mib": sum(f.stat().st_size for f in files) / 2**20}


def dataset_info(name: str, data_dir: Path | None, on_build=None, on_progress=None) -> tuple[Dataset, dict]:
    """The dataset and its report: source, fingerprint, cache, files as stored, counts per
    class and split, warnings (imbalance, gaps, leaks, skipped files)."""
    ds = load_dataset(name, data_dir, on_build=on_build, on_progress=on_progress)
    rep = memo(ds, "report", lambda: dataset_report(ds))
    counts = rep.pop("counts")
    return ds, {
        "name": name,
        "source": ds.source,
        "fingerprint": ds.fingerprint,
        "cache": cache_state(ds),
        "originals": ds.originals,
        "splits": {s: {"n": sum(c), "per_class": c} for s, c in counts.items()},
        **rep,
        "warnings": with_advice(rep["warnings"]),  # imbalance: which keys to use
    }


def sample_grid(
    name: str,
    data_dir: Path | None,
    aug: AugConfig,
    out: Path,
    per_class: int = 8,
    max_classes: int = 20,
    seed: int = 0,
    on_build=None,
    on_progress=None,
) -> dict:
    """A PNG of `per_class` random training images of each of the first `max_classes` classes,
    beside their views through the training loader's augmentation when `aug` asks for any."""
    from ..analysis.plots import plot_samples
    from ..data.augment import Augment
    from ..data.loader import augmented_view

    ds = load_dataset(name, data_dir, on_build=on_build, on_progress=on_progress)
    train = ds.splits["train"]
    rng = np.random.default_rng(seed)
    classes = list(range(min(len(ds.classes), max_classes)))
    picks = [rng.permutation(np.flatnonzero(class_members(train.labels, c)))[:per_class] for c in classes]
    idx = np.concatenate(picks)
    shown = np.repeat(classes, [len(p) for p in picks])  # a multi-label image: the class it was picked for
    images = np.asarray(train.images[idx])
    augmented = None
    if aug.crop_padding or aug.flip or Augment.wanted(aug):
        mean, std = channel_stats(train.images)
        augmented = augmented_view(images, train.labels[idx], aug, len(ds.classes), mean, std, seed)
    plot_samples(images, shown, ds.classes, out, augmented, title=f"{name}: train samples")
    return {"png": str(out), "samples": len(idx), "classes": len(classes), "augmented": augmented is not None}
