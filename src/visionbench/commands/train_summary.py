"""What every finished run's summary.json records beside its test figures, its curves, and the
divergence warning: shared by single- and multi-label runs (commands/train.py,
commands/train_multilabel.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..analysis.plots import plot_curves
from ..config import RunConfig
from ..data.prepare import Prepared
from ..engine.losses import create_loss
from ..models import count_params
from ..models.torchvision_zoo import RESNETS
from ..runs import Run


def save_curves(run: Run) -> list[dict]:
    """The run's metrics rows, drawn as curves.png."""
    rows = run.metrics()
    if rows:
        plot_curves(rows, run.path / "curves.png", title=run.id)
    return rows


def run_facts(
    cfg: RunConfig, data: Prepared, scored: nn.Module, best: float, wall: float, rows: list[dict], test_n: int
) -> dict:
    """The summary's keys about the run itself: epochs, time, size, device, data, seed."""
    return {
        "best_val_acc": best if data.val is not None else None,
        "epochs": len(rows),  # fewer than train.epochs after an early stop
        "train_seconds": sum(r["seconds"] for r in rows),
        "wall_seconds_this_process": wall,
        "params": count_params(scored),
        "device": str(data.device),
        "data": cfg.data.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "test_n": test_n,
        "tta": cfg.train.tta,
        "warnings": [w for w in (diverging(rows, cfg, len(data.dataset.classes)),) if w],
    }


def diverging(rows: list[dict], cfg: RunConfig, num_classes: int) -> str | None:
    """A warning at the first epoch whose mean training loss is over 3x an untrained network's
    (the loss of all-zero logits: ln K for cross-entropy, ln 2 for BCE): the run is diverging,
    yet still finite. Read from the logged rows, so a resumed run says the same."""
    loss_fn = create_loss(cfg.train.loss, cfg.train.label_smoothing)
    chance = loss_fn(torch.zeros(1, num_classes), torch.zeros(1, dtype=torch.long)).item()
    row = next((r for r in rows if r["train_loss"] > 3 * chance), None)
    if row is None:
        return None
    m = cfg.model  # torchvision's bottleneck ResNets diverge so in short warmups (RESULTS.md)
    bottleneck = m.name.startswith(RESNETS) and m.name not in ("resnet18", "resnet34")
    fixes = []
    if bottleneck and not (m.kwargs.get("zero_init_residual") or m.pretrained or m.weights):
        fixes.append("'model.kwargs={zero_init_residual: true}' (each block starts as the identity)")
    if bottleneck and m.small_stem:
        fixes.append("model.small_stem=false (the small stem keeps 11x the activations and learns slowly)")
    fixes.append(f"optim.lr={cfg.optim.lr / 4:.3g} (now {cfg.optim.lr:.3g})")
    clip = cfg.train.grad_clip
    fixes.append(f"train.grad_clip={clip / 4:.3g} (now {clip:.3g})" if clip else "train.grad_clip=1.0")
    return (
        f"training loss {row['train_loss']:.3g} in epoch {row['epoch']} is {row['train_loss'] / chance:.0f}x "
        f"an untrained network's ({chance:.3g}): training is diverging; try " + ", or ".join(fixes)
    )
