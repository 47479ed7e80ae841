"""`visionbench lr-find`: the range test on a run's own model, data and recipe, repeated over
data orders to show how far its suggestions can be trusted, with a plot."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data.prepare import prepare_data
from ..engine.device import amp_dtype, pick_device, seed_everything
from ..engine.losses import create_loss
from ..engine.lr_find import range_test, suggest
from ..engine.optim import create_optimizer
from ..models.build import auto_settings, build_model, input_size_errors
from .options import LR_FIND_ITERS
from .train_multilabel import task_config

KINDS = ("valley", "steepest", "minimum/10")


def find_lr(
    cfg: RunConfig,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    iters: int = LR_FIND_ITERS,
    repeats: int = 1,
    plot: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Run the range test `repeats` times (batch order and augmentation from seed, seed+1, ...;
    the same initial weights each time). Returns every curve, its suggestions, the median
    suggestion of each kind and its spread (largest / smallest over the repeats)."""
    device = pick_device(cfg.train.device)
    seed_everything(cfg.seed, device, cfg.train.deterministic, cfg.train.threads)
    data = prepare_data(cfg, device, say)
    cfg, notes = auto_settings(cfg, len(data.keep), data.dataset.shape, data.dataset.originals)
    notes, cfg = data.task_notes() + notes, task_config(cfg, data)  # multi-label: BCE
    data.cfg = cfg
    for note in notes if say else []:
        say(note)
    model = build_model(cfg, data.dataset, device)
    optimizer = create_optimizer(model, cfg.optim)
    loss_fn = create_loss(cfg.train.loss, cfg.train.label_smoothing, data.loss_weights)
    curves = []
    for r in range(repeats):
        shuffled = dataclasses.replace(data, cfg=cfg.model_copy(update={"seed": cfg.seed + r}))
        with input_size_errors(cfg, data.dataset):
            curve = range_test(
                model,
                shuffled.train,
                optimizer,
                loss_fn,
                start_lr=start_lr,
                end_lr=end_lr,
                iters=iters,
                amp_dtype=amp_dtype(cfg.train.amp, device),
            )
        curves.append(curve | {"suggestions": suggest(curve["lrs"], curve["losses"])})
        if say:
            say(
                f"repeat {r + 1}/{repeats}: {len(curve['lrs'])} steps, " + describe(curves[-1]["suggestions"])
            )
    summary = {}
    for kind in KINDS:
        values = sorted(c["suggestions"][kind] for c in curves if c["suggestions"][kind])
        summary[kind] = {
            "median": values[len(values) // 2] if values else None,
            "spread": values[-1] / values[0] if values else None,
            "values": values,
        }
    if plot:
        plot_range_test(curves, summary, plot)
    return {"curves": curves, "suggestions": summary, "plot": str(plot) if plot else None}


def describe(s: dict) -> str:
    return "  ".join(f"{k} {v:.2e}" if v else f"{k} -" for k, v in s.items())


def plot_range_test(curves: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, c in enumerate(curves):
        ax.plot(c["lrs"], c["losses"], label=f"repeat {i + 1}", alpha=0.8)
    for kind, style in zip(KINDS, ("-", "--", ":")):
        if summary[kind]["median"]:
            ax.axvline(
                summary[kind]["median"],
                color="k",
                ls=style,
                lw=1,
                label=f"{kind} {summary[kind]['median']:.1e}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    # from the lowest loss to 1.5x the starting one: the divergent tail would flatten the rest
    finite = [v for c in curves for v in c["losses"] if np.isfinite(v)]
    start = max(c["losses"][0] for c in curves if c["losses"])
    low, top = min(finite), min(1.5 * start, max(finite))
    ax.set_ylim(low - 0.05 * (top - low), top)
    ax.legend(fontsize=8)
    ax.set_title("learning-rate range test")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
