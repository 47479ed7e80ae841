"""Figures for a run: learning curves, confusion matrices, reliability diagram, image grids, as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(rows: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and val, side by side."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            ys = [r.get(f"{split}_{metric}") for r in rows]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm, classes: list[str], path: Path, title: str = "", normalized: bool = False) -> None:
    """Row-normalised colours; each cell shows the raw count, or with `normalized` the share
    of its true class (recall on the diagonal)."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(4, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}" if normalized else str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(images, labels, classes: list[str], path: Path, augmented=None, title: str = "") -> None:
    """One row per class; with `augmented`, each sample is followed by its augmented version."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    rows = list(dict.fromkeys(labels.tolist()))  # classes in order of first appearance
    per_row = max(int((labels == c).sum()) for c in rows) * (2 if augmented is not None else 1)
    fig, axes = plt.subplots(
        len(rows), per_row, figsize=(per_row * 0.9 + 1.5, len(rows) * 0.9 + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, c in enumerate(rows):
        cols = np.flatnonzero(labels == c)
        views = (
            [(images, i) for i in cols]
            if augmented is None
            else [v for i in cols for v in ((images, i), (augmented, i))]
        )
        for k, (arr, i) in enumerate(views):
            img = arr[i].transpose(1, 2, 0)
            axes[r, k].imshow(
                img[..., 0] if img.shape[2] == 1 else img,
                cmap="gray",
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
        axes[r, 0].text(-0.1, 0.5, classes[c], transform=axes[r, 0].transAxes, ha="right", va="center")
    fig.suptitle(title + ("  (each sample, then augmented)" if augmented is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_reliability(cal: dict, path: Path, title: str = "", before: dict | None = None) -> None:
    """Accuracy against mean confidence per bin (bars), the diagonal is perfect calibration;
    `before` (the same before temperature scaling) drawn as outlined bars over them."""
    bins = cal["bins"]
    edges = np.linspace(0, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for c, style in ((cal, {"color": "tab:blue", "edgecolor": "black"}), (before, {"fill": False})):
        if c is None:
            continue
        used, acc = np.asarray(c["count"]) > 0, np.asarray(c["accuracy"])
        if before is not None:  # both: each named with its ECE
            style |= {
                "label": f"{'after' if c is cal else 'before'} temperature scaling (ECE {c['ece']:.2%})"
            }
            style |= {"alpha": 0.6} if c is cal else {"edgecolor": "tab:red", "linewidth": 1.5}
        ax.bar(edges[:-1][used], acc[used], width=1 / bins, align="edge", **{"label": "accuracy"} | style)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel(f"confidence ({bins} equal-width bins)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title}  ECE {cal['ece']:.2%}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_image_grid(images, captions: list[str], path: Path, title: str = "", cols: int = 8) -> None:
    """uint8 NCHW images tiled into one picture, each caption under its tile (one axes: a
    grid of many matplotlib axes takes seconds to draw)."""
    images = np.asarray(images)
    n, c, h, w = images.shape if len(images) else (0, 1, 8, 8)
    rows, cols = max(1, -(-n // cols)), max(1, min(cols, n))
    pad = max(2, h // 8)
    mosaic = np.full((rows * (h + pad), cols * (w + pad), 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        mosaic[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = img.transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(cols * 1.7, rows * 2.0 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for i, caption in enumerate(captions):
        r, k = divmod(i, cols)
        ax.text(k * (w + pad) + w / 2, r * (h + pad) + h, caption, ha="center", va="top", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_attributions(images, maps: dict, rows: list[dict], path: Path, title: str = "") -> None:
    """One row per image: the image, then each method's map (Grad-CAM over the image)."""
    images = np.asarray(images)
    n, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(cols * 1.8, n * 1.9 + 0.6), squeeze=False)
    for r, img in enumerate(images):
        img = img.transpose(1, 2, 0)
        gray = img.mean(2) if img.shape[2] > 1 else img[..., 0]
        axes[r, 0].imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        row = rows[r]
        axes[r, 0].set_title(
            f"#{row['index']} {row['true']}\npred {row['pred']} {row['confidence']:.0%}", fontsize=7
        )
        for c, (method, m) in enumerate(maps.items(), start=1):
            a = m[r] / max(float(m[r].max()), 1e-12)  # each map scaled to its own maximum
            if method == "gradcam":
                axes[r, c].imshow(gray, cmap="gray", vmin=0, vmax=255)
                axes[r, c].imshow(a, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                axes[r, c].imshow(a, cmap="hot", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(method.replace("_", " "), fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_overlaid_curves(series: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Several runs' curves on shared axes: training loss, and validation (else training) accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in series.items():
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r.get("train_loss") for r in rows], label=name)
        acc = "val_acc" if any("val_acc" in r for r in rows) else "train_acc"
        axes[1].plot(epochs, [r.get(acc) for r in rows], marker=".", label=name)
    for ax, ylabel in zip(axes, ("train loss", "val accuracy (train where no val)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pr_curves(curves: dict, aps: dict, path: Path, title: str = "") -> None:
    """Precision against recall, one step curve per class ({class: (recall, precision)}),
    each class's AP in the legend (a class without a positive image has none: no curve)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (recall, precision) in curves.items():
        if aps.get(name) is not None:
            ax.step(recall, precision, where="post", label=f"{name} (AP {aps[name]:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if len(curves) <= 20:  # beyond that the legend hides the curves
        ax.legend(fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
