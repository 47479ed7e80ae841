"""The training and evaluation loops: plain PyTorch, one screen each."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.loader import TensorLoader
from ..errors import VisionbenchError
from .ema import ModelEMA
from .losses import Loss, create_loss


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VisionbenchError(
            f"device '{name}' asked for, but CUDA is not available", fix="use train.device=cpu (or auto)"
        )
    return torch.device(name)


def seed_everything(
    seed: int, device: torch.device, deterministic: bool = True, threads: int | None = None
) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    if deterministic and device.type == "cuda":
        # CPU kernels are already deterministic for a fixed thread count (the resume tests
        # check it bitwise), and this call costs 2.3 s of start-up there. warn_only: a few
        # CUDA kernels have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


class StopFlag:
    """Set by a signal handler; the loop checks it between steps and stops cleanly."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def train_one_epoch(
    model: nn.Module,
    loader: TensorLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epoch: int,
    start_batch: int = 0,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
    amp_dtype: torch.dtype | None = None,
    stop: StopFlag | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    loss_fn: Loss | None = None,
    ema: ModelEMA | None = None,
) -> dict:
    """One pass over the loader from `start_batch`. Returns sums (loss, correct, seen), the next
    batch index, and whether a stop was asked for; loss and accuracy stay on the device until
    the end, so nothing synchronises a GPU inside a step. Targets may be soft (Mixup/CutMix):
    accuracy then counts the class with the largest share."""
    loss_fn = loss_fn or create_loss("ce", label_smoothing)
    model.train()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, batch, t0 = 0, start_batch, time.perf_counter()
    for batch, (x, y) in enumerate(loader.epoch(epoch, start_batch), start=start_batch):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == (y if y.ndim == 1 else y.argmax(1))).sum()
        seen += len(y)
        if on_step is not None:
            on_step(batch, loss)
        if stop:
            batch += 1
            break
    else:
        batch = len(loader)
    loss_total = loss_sum.item()
    if not np.isfinite(loss_total):
        raise VisionbenchError(
            f"training loss became {loss_total} in epoch {epoch + 1}",
            fix="lower optim.lr, set train.grad_clip, or check the data for NaN pixels; "
            "the last good checkpoint is kept",
        )
    return {
        "loss_sum": loss_total,
        "correct": int(correct.item()),
        "seen": seen,
        "next_batch": batch,
        "stopped": bool(stop),
        "seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: TensorLoader,
    amp_dtype: torch.dtype | None = None,
    views: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for the whole loader, on the CPU, in loader order; with `views`
    (test-time augmentation, engine/tta.py) the mean of the logits over those views."""
    model.eval()
    outs, ys = [], []
    for x, y in loader.epoch(0):
        with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if views:
                outs.append(torch.stack([model(view(x)).float() for view in views]).mean(0))
            else:
                outs.append(model(x).float())
        ys.append(y)
    return torch.cat(outs).cpu(), torch.cat(ys).cpu()


def evaluate(model: nn.Module, loader: TensorLoader, amp_dtype: torch.dtype | None = None) -> dict:
    logits, targets = predict(model, loader, amp_dtype)
    return {
        "loss": F.cross_entropy(logits, targets).item(),
        "acc": (logits.argmax(1) == targets).float().mean().item(),
        "logits": logits,
        "targets": targets,
    }
