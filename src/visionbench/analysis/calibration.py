"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar
T > 0, fitted after training on the validation split's logits, divides the logits before the
softmax. The argmax never changes; the confidence comes to mean what it says.

A run that was calibrated holds RUN/calibration.json:

    {"temperature": T, "weights": "last" (the weights it was fitted for), "split": how the
     validation split was made, "n": its images, "tta": the views its logits averaged,
     "nll_before", "nll_after", "ece_before", "ece_after" (on that split, ECE_BINS bins)}

Runs without it (trained before calibration existed, with train.calibrate=false, or without a
validation split) report the plain softmax, as they always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..data.prepare import Prepared
from ..engine.loop import predict
from ..engine.tta import tta_views
from ..runs import Run
from .metrics import calibration

CALIBRATION_FILE = "calibration.json"
# T is searched in [1/20, 20]: a model 20x over- or under-confident is beyond what one scalar
# should be trusted to fix, and the bound keeps a near-perfect validation split from driving T to 0
BOUNDS = (0.05, 20.0)
STEPS = 80  # golden-section steps: the bracket shrinks to 0.618^80 of log(400), ~1e-16


def softmax(logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """Class probabilities (float64) of float32 `logits`, divided by `temperature` first when
    one is given: the one place a calibration is applied. The logits themselves never change."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if temperature is not None:
        z = z / temperature
    return z.softmax(-1).double().numpy()


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of `targets` under softmax(logits / temperature), in float64."""
    return F.cross_entropy(logits.double() / temperature, targets.long()).item()


def fit_temperature(logits, targets, bounds: tuple[float, float] = BOUNDS) -> float:
    """The T in `bounds` minimising the NLL of logits / T: a golden-section search on log T.
    The NLL is convex in 1/T, so it has one minimum in log T and the search finds it; it is
    deterministic (no random start, no tolerance that depends on the machine)."""
    z, y = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(targets, dtype=torch.long)
    f = lambda log_t: nll(z, y, math.exp(log_t))
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(bounds[0]), math.log(bounds[1])
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(STEPS):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return math.exp((a + b) / 2)


def ece(logits: np.ndarray, targets: np.ndarray, temperature: float | None = None) -> float:
    """ECE of the predicted class's probability (analysis.metrics.calibration)."""
    probs = softmax(logits, temperature)
    preds = probs.argmax(1)
    return calibration(probs[np.arange(len(preds)), preds], preds == targets)["ece"]


def no_fit_reason(logits: np.ndarray, targets: np.ndarray) -> str | None:
    """Why these validation logits cannot calibrate a model, or None."""
    if not (np.asarray(logits).argmax(1) != np.asarray(targets)).any():
        return (
            f"the model makes no mistake on the {len(targets):,} validation images, so they cannot "
            "tell how far its confidence goes too far"
        )
    return None


def calibration_record(logits: np.ndarray, targets: np.ndarray, **context) -> dict:
    """T fitted on (`logits`, `targets`), with the NLL and ECE before and after; `context`
    (split, weights, tta) says what they came from."""
    logits, targets = np.asarray(logits, dtype=np.float32), np.asarray(targets)
    t = fit_temperature(logits, targets)
    z, y = torch.from_numpy(logits), torch.from_numpy(targets)
    return {
        "temperature": t,
        **context,
        "n": len(targets),
        "nll_before": nll(z, y, 1.0),
        "nll_after": nll(z, y, t),
        "ece_before": ece(logits, targets),
        "ece_after": ece(logits, targets, t),
    }


def read_temperature(run: Run, weights: str, views: str | None = None) -> float | None:
    """The temperature fitted for run `run`'s `weights` file under the test-time `views`, or
    None: not calibrated, or calibrated for its other weights file or other views (T fits the
    logits it was fitted on: averaged over views they are softer)."""
    record = run.read_json(CALIBRATION_FILE)
    t = record.get("temperature")
    same_views = views is None or record.get("tta", "none") == views
    return float(t) if t is not None and record.get("weights", "last") == weights and same_views else None


def calibrate_run(
    run: Run, cfg: RunConfig, data: Prepared, val_pass: Callable, amp, say: Callable[[str], None]
) -> float | None:
    """After the last epoch: T fitted on the validation logits of the last weights (the run's
    own test-time views, as its test pass), written to RUN/calibration.json and said in one
    line; None, with the reason said, when there is nothing to fit it on. `val_pass()` gives
    the (model, loader) the validation pass runs (engine/features.py: cached frozen features or
    the images). Deterministic: a resumed run fits the same T from the same weights."""
    if not cfg.train.calibrate:
        return None
    if data.val is None:
        say(
            "calibration: skipped: the run has no validation split to fit a temperature on "
            "(data.val_fraction=0.1 holds a tenth of train out for it; train.calibrate=false says none is wanted)"
        )
        return None
    logits, targets = predict(*val_pass(), amp, tta_views(cfg.train.tta))
    logits, targets = logits.numpy(), targets.numpy()
    if why := no_fit_reason(logits, targets):
        more = (
            "more images in its val/ folder" if "val" in data.dataset.splits else "a larger data.val_fraction"
        )
        say(f"calibration: skipped: {why} ({more} would hold out more)")
        return None
    record = calibration_record(
        logits, targets, weights="last", split=data.stats["val_split"], tta=cfg.train.tta
    )
    run.write_json(CALIBRATION_FILE, record)
    say(
        f"calibration: temperature {record['temperature']:.3f} fitted on {record['n']:,} validation images: "
        f"ECE {record['ece_before']:.2%} -> {record['ece_after']:.2%}, NLL {record['nll_before']:.4f} -> "
        f"{record['nll_after']:.4f} (predict, eval and soft votes use it; train.calibrate=false: none)"
    )
    return record["temperature"]
