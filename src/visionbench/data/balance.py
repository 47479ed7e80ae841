"""Imbalanced classes: the weights of a weighted loss (train.class_weights) and the draws of a
class-balanced sampler (data.sampler=balanced), both from the labels of the images trained on."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VisionbenchError

SHOWN = 10  # classes whose weights the choice line lists one by one; more: the range


def class_weights(setting: str | list[float], labels: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """Each class's weight in the loss: None for `none`; `balanced`: n / (classes x count_c)
    over `labels` (the training split after the validation carve-out), as scikit-learn's
    class_weight="balanced", 0 for a class with no training image; or the weights given,
    scaled to average 1 over `labels` as balanced ones do."""
    if setting == "none":
        return None
    if isinstance(setting, list):
        if len(setting) != len(classes):
            shown = ", ".join(classes[:SHOWN]) + (" ..." if len(classes) > SHOWN else "")
            raise VisionbenchError(
                f"train.class_weights gives {len(setting)} weights for {len(classes)} classes ({shown})",
                fix=f"give one weight a class, in that order (e.g. train.class_weights=[{', '.join(['1'] * len(classes))}])"
                if len(classes) <= SHOWN
                else "give one weight a class, in the order `visionbench data info` lists them; "
                "or train.class_weights=balanced",
            )
        given = np.asarray(setting, dtype=np.float64)
        # only their ratios are asked for: scaled to average 1 over the images, as balanced ones
        # do, the loss keeps its unweighted scale (the lr, the divergence warning's ln K)
        return given / given[np.asarray(labels, dtype=np.int64)].mean()
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes)).astype(np.float64)
    present = counts > 0
    return np.divide(counts.sum(), present.sum() * counts, out=np.zeros_like(counts), where=present)


def weights_line(setting: str | list[float], weights: np.ndarray, classes: list[str], n: int) -> str:
    """The choice line that says the weights a run trains with, and the key that sets them."""
    how = "n / (classes x count)" if setting == "balanced" else "as given, scaled to average 1"
    how += f" over the {n:,} images trained on"
    if len(classes) <= SHOWN:
        listed = ", ".join(f"{c} {w:.3g}" for c, w in zip(classes, weights))
    else:
        lo, hi = int(np.argmin(weights)), int(np.argmax(weights))
        listed = f"from {weights[lo]:.3g} ({classes[lo]}) to {weights[hi]:.3g} ({classes[hi]})"
    return f"class weights: {listed} ({how}; train.class_weights sets them)"


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(labels) image indices drawn with replacement, each with probability proportional to
    1 / its class's count: a class drawn uniformly (of those present), then an image of it
    uniformly. Drawn from `generator` alone (CPU), so the same seed gives the same order."""
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()
    by_class = torch.argsort(labels, stable=True)  # the images of class c at starts[c]...
    starts = torch.cumsum(counts, 0) - counts
    n = len(labels)
    drawn = present[torch.randint(len(present), (n,), generator=generator)]
    within = (torch.rand(n, generator=generator, dtype=torch.float64) * counts[drawn]).long()
    return by_class[starts[drawn] + within]
