"""The evaluation bundle: every table and figure about a run's (or ensemble's) test predictions.

Training ends by writing it into RUN/eval-last/; `visionbench eval` writes it into
RUN/eval-<weights>/ under the run's own test-time views (train.tta: the figure training
recorded), RUN/eval-<weights>-<views>/ under others (a saved ensemble: ENSEMBLE/eval[-<views>]/):

    metrics.json              {"run", "weights", "tta" (the views' name: none, flip, ...), "n", "top1", "top5",
                               "balanced_acc" (mean recall per class), "macro_f1", "loss" (mean NLL; none
                               for a hard vote), "ece", "ece_bins", "per_class": {class: {"precision",
                               "recall", "f1", "support"}}, "confusion" (rows true, columns predicted),
                               "calibration": {"bins", "count", "accuracy", "confidence"} per bin,
                               "mistakes": [{"index", "true", "pred", "confidence"}],
                               "temperature" (T, or a list per member; none: uncalibrated),
                               "ece_calibrated" (= ece; none when uncalibrated), "ece_uncalibrated",
                               and when calibrated "loss_uncalibrated", "calibration_uncalibrated"};
                               an ensemble adds "vote", "members": [{"id", "top1"}] and "agreement"
    per_class.csv             class,precision,recall,f1,support
    confusion.csv             counts: header "true\\pred",<classes>; one row per true class
    confusion_normalized.csv  the same, each row divided by its class's count
    confusion.png, confusion_normalized.png
    reliability.png           accuracy against confidence per bin, with the ECE (calibrated runs:
                              before and after temperature scaling)
    mistakes.png              the most confident wrong predictions, true and predicted labels
    predictions.npz           logits (N, C) float32 (raw), probs (N, C) (calibrated), preds (N,), targets (N,),
                              indices (N,) into the test split; an ensemble adds member_logits
                              (M, N, C) and members (ids)

Confidence is the probability of the predicted class (for a hard vote: the winner's share of
the votes); ECE uses analysis.metrics.ECE_BINS equal-width bins. For a calibrated run
(analysis/calibration.py) the probabilities, loss, ECE and mistakes are after temperature
scaling, the `*_uncalibrated` keys before it; top-1 and the confusion matrix are the same.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..errors import write_error
from ..runs import Run
from .metrics import balanced_accuracy, calibration, confusion_matrix, macro_f1, precision_recall_f1
from .multilabel import multilabel_evaluation, multilabel_summary
from .plots import plot_confusion, plot_image_grid, plot_reliability
from .predictor import Ensemble, Outputs, Predictor, load_test_split
from .vote import agreement

MISTAKES = 24  # images in mistakes.png


def summarize(out: Outputs, targets: np.ndarray, classes: list[str], nll: bool = True) -> dict:
    """Top-1/5, per-class precision/recall/F1, confusion, calibration and the worst mistakes."""
    n = len(targets)
    cm = confusion_matrix(torch.from_numpy(out.preds), torch.from_numpy(targets), len(classes)).numpy()
    prf = precision_recall_f1(cm)
    confidence, correct, cal = reliability(out, targets)
    wrong = np.flatnonzero(~correct)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISTAKES]
    return {
        "n": n,
        "top1": float(correct.mean()),
        "top5": float((out.top_classes(5) == targets[:, None]).any(1).mean()),
        "balanced_acc": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "loss": mean_nll(out, targets) if nll else None,
        "ece": cal["ece"],
        "ece_bins": cal["bins"],
        "per_class": {
            c: {k: prf[k][i].item() for k in ("precision", "recall", "f1", "support")}
            for i, c in enumerate(classes)
        },
        "confusion": cm.tolist(),
        "calibration": {k: v for k, v in cal.items() if k != "ece"},
        "mistakes": [
            {
                "index": int(i),
                "true": classes[targets[i]],
                "pred": classes[out.preds[i]],
                "confidence": float(confidence[i]),
            }
            for i in worst
        ],
    }


def reliability(out: Outputs, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Each prediction's confidence, whether it is right, and the calibration over bins."""
    confidence = out.probs[np.arange(len(targets)), out.preds]
    correct = out.preds == targets
    return confidence, correct, calibration(confidence, correct)


def mean_nll(out: Outputs, targets: np.ndarray) -> float:
    p_true = out.probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(p_true, 1e-12, None)).mean())


def calibration_summary(out: Outputs, targets: np.ndarray, rep: dict, temperature, nll: bool) -> dict:
    """The ECE before and after temperature scaling (`rep` holds the after: out's own)."""
    if out.uncalibrated is None:
        return {"temperature": None, "ece_calibrated": None, "ece_uncalibrated": rep["ece"]}
    cal = reliability(out.uncalibrated, targets)[2]
    return {
        "temperature": temperature,
        "ece_calibrated": rep["ece"],
        "ece_uncalibrated": cal["ece"],
        "loss_uncalibrated": mean_nll(out.uncalibrated, targets) if nll else None,
        "calibration_uncalibrated": {k: v for k, v in cal.items() if k != "ece"},
    }


def members_summary(ens: Ensemble, out: Outputs, targets: np.ndarray) -> dict:
    """Each member's top-1 beside the ensemble's, and how often each pair agrees."""
    member_preds = out.members.argmax(2)
    return {
        "vote": ens.vote,
        "tie_break": ens.members[ens.tie_break].id,
        "weights": ens.weights,
        "members": [
            {"id": m.id, "top1": float((p == targets).mean())} for m, p in zip(ens.members, member_preds)
        ],
        "agreement": agreement(member_preds).tolist(),
    }


def write_csv(path: Path, header: list, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_bundle(
    folder: Path, rep: dict, out: Outputs, targets: np.ndarray, images: np.ndarray, classes, title
):
    folder.mkdir(parents=True, exist_ok=True)
    Run(folder).write_json("metrics.json", rep)
    write_csv(
        folder / "per_class.csv",
        ["class", "precision", "recall", "f1", "support"],
        [
            [c, *(f"{v[k]:.6f}" for k in ("precision", "recall", "f1")), v["support"]]
            for c, v in rep["per_class"].items()
        ],
    )
    cm = np.asarray(rep["confusion"])
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    write_csv(
        folder / "confusion.csv",
        ["true\\pred", *classes],
        [[c, *row] for c, row in zip(classes, cm.tolist())],
    )
    write_csv(
        folder / "confusion_normalized.csv",
        ["true\\pred", *classes],
        [[c, *(f"{v:.6f}" for v in row)] for c, row in zip(classes, norm)],
    )
    plot_confusion(cm, classes, folder / "confusion.png", title=f"{title}: top-1 {rep['top1']:.2%}")
    plot_confusion(
        cm, classes, folder / "confusion_normalized.png", title=f"{title}: recall per class", normalized=True
    )
    before = rep.get("calibration_uncalibrated")
    plot_reliability(
        {"ece": rep["ece"], **rep["calibration"]},
        folder / "reliability.png",
        title=title,
        before=before and {"ece": rep["ece_uncalibrated"], **before},
    )
    idx = [m["index"] for m in rep["mistakes"]]
    captions = [f"true {m['true']}\npred {m['pred']} {m['confidence']:.0%}" for m in rep["mistakes"]]
    plot_image_grid(images[idx], captions, folder / "mistakes.png", title=f"{title}: most confident mistakes")
    arrays = {
        "logits": out.logits.astype(np.float32),
        "probs": out.probs.astype(np.float32),
        "preds": out.preds,
        "targets": targets,
        "indices": np.arange(len(targets)),  # every test image, in the split's order
    }
    if out.members is not None:
        arrays |= {
            "member_logits": out.members.astype(np.float32),
            "members": np.array([m["id"] for m in rep["members"]]),
        }
    np.savez_compressed(folder / "predictions.npz", **arrays)


def bundle_name(predictor: Predictor, tta: str | bool | None) -> str:
    """eval-<weights> (an ensemble: eval) under the views the run's test pass used (train.tta),
    which therefore reproduces training's eval-last; other views add their name: eval-last-flip,
    eval-last-none."""
    base = "eval" if isinstance(predictor, Ensemble) else f"eval-{predictor.weights}"
    views = predictor.views(tta)
    return base if views == predictor.views(None) else f"{base}-{views}"


def evaluation(
    out: Outputs,
    targets: np.ndarray,
    images,
    classes: list[str],
    *,
    run_id: str,
    weights: str | None,
    tta: str | None = None,
    folder: Path | None = None,
    ensemble: Ensemble | None = None,
    temperature: float | list | None = None,
) -> dict:
    """The one test evaluation, for a run at the end of training, for `eval` and for an
    ensemble: the summary (metrics.json's schema) and, with `folder`, the bundle written there.
    `temperature` is the one that calibrated `out` (an ensemble: its members')."""
    nll = not (ensemble is not None and ensemble.vote == "hard")
    rep = {"run": run_id, "weights": weights, "tta": tta, **summarize(out, targets, classes, nll=nll)}
    rep |= calibration_summary(out, targets, rep, temperature, nll)
    if ensemble is not None:
        rep |= members_summary(ensemble, out, targets)
    if folder is not None:
        try:
            write_bundle(folder, rep, out, targets, images, classes, run_id)
        except OSError as e:  # a full disk: the run's other files are intact
            raise write_error(e, "the evaluation bundle", folder, "run the command again") from None
        rep["bundle"] = str(folder)
    return rep


def evaluate_predictor(
    predictor: Predictor, tta: str | bool | None = None, folder: Path | None = None
) -> dict:
    """Predict the test split of a run or an ensemble and evaluate it (see `evaluation`)."""
    images, targets = load_test_split(predictor)
    ensemble = predictor if isinstance(predictor, Ensemble) else None
    if predictor.multilabel:
        return multilabel_predictor_evaluation(predictor, images, targets, tta, folder)
    return evaluation(
        predictor.outputs(images, tta),
        targets,
        images,
        predictor.classes,
        run_id=predictor.id,
        weights=None if ensemble else predictor.weights,
        tta=predictor.views(tta),
        folder=folder,
        ensemble=ensemble,
        temperature=ensemble.temperatures(tta) if ensemble else predictor.temperature_for(tta),
    )


def multilabel_predictor_evaluation(predictor: Predictor, images, targets, tta, folder: Path | None) -> dict:
    """`evaluate_predictor` for multi-label runs and soft-vote ensembles (analysis/multilabel.py);
    an ensemble adds "vote", "weights" and each member's mAP."""
    out = predictor.outputs(images, tta)
    ensemble = isinstance(predictor, Ensemble)
    members = {
        "vote": predictor.vote,
        "weights": predictor.weights,
        "members": [
            {"id": m.id, "map": multilabel_summary(logits, targets, predictor.classes, m.thresholds)["map"]}
            for m, logits in zip(predictor.members, out.members)
        ],
    } if ensemble else None  # fmt: skip
    return multilabel_evaluation(
        out.logits, targets, predictor.classes, out.thresholds, run_id=predictor.id,
        weights=None if ensemble else predictor.weights, tta=predictor.views(tta), folder=folder, extra=members,
    )  # fmt: skip
