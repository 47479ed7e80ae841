"""`visionbench train`'s steps for multi-label data (data.task): the task recorded in the config,
the per-class thresholds tuned on the validation split, and the test evaluation and summary,
whose last line names the mAP."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.markup import escape

from ..analysis.multilabel import (
    DEFAULT_THRESHOLD,
    THRESHOLDS_FILE,
    multilabel_evaluation,
    thresholds_record,
)
from ..config import RunConfig
from ..data.prepare import Prepared
from ..engine.loop import predict
from ..engine.tta import tta_views
from ..errors import VisionbenchError
from ..runs import Run
from .train_summary import run_facts, save_curves


def task_config(cfg: RunConfig, data: Prepared) -> RunConfig:
    """The config as the run records it: data.task=multilabel once the data is found to be,
    so `eval`, `predict` and a resume read it so; its loss BCE (a sigmoid per class), unless
    another loss was asked for, which is refused."""
    if not data.multilabel:
        return cfg
    if cfg.train.loss != "bce":
        if "loss" in cfg.train.model_fields_set:
            raise VisionbenchError(
                f"train.loss={cfg.train.loss} scores one class per image; multi-label data needs a "
                "sigmoid per class",
                fix="leave out train.loss (multi-label runs train with bce), or set data.task=single",
            )
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss": "bce"})})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"task": "multilabel"})})


def tune_thresholds(run: Run, cfg: RunConfig, data: Prepared, val_pass: Callable, amp, say) -> np.ndarray:
    """Each class's F1-best threshold on the validation split's probabilities from the last
    weights (the run's own views), written to RUN/thresholds.json and said in one line; 0.5
    each, said so, without a validation split."""
    classes = data.dataset.classes
    if data.val is None:
        say(
            f"thresholds: {DEFAULT_THRESHOLD} per class: no validation split to tune them on "
            "(data.val_fraction=0.1 holds a tenth of train out for it)"
        )
        return np.full(len(classes), DEFAULT_THRESHOLD)
    logits, targets = predict(*val_pass(), amp, tta_views(cfg.train.tta))
    record = thresholds_record(
        logits.numpy(), targets.numpy(), classes, data.stats["val_split"], cfg.train.tta
    )
    run.write_json(THRESHOLDS_FILE, record)
    shown = ", ".join(f"{c} {t:.2f}" for c, t in list(record["thresholds"].items())[:8])
    say(
        f"thresholds: tuned per class for F1 on {record['n']:,} validation images ({shown}"
        f"{' ...' if len(classes) > 8 else ''}): {run.id}/{THRESHOLDS_FILE}"
    )
    return np.array(list(record["thresholds"].values()))


def finish_multilabel(
    run: Run, cfg: RunConfig, data: Prepared, scored, tested, amp, best, wall, console, thresholds
):
    """Last weights, the multi-label test evaluation (RUN/eval-last/), then summary.json with
    `map`: its presence marks the run finished; the last line names the mAP."""
    run.save_weights("last.safetensors", scored)
    logits, targets = predict(*tested, amp, tta_views(cfg.train.tta))
    rep = multilabel_evaluation(
        logits.numpy(), targets.numpy(), data.dataset.classes, thresholds,
        run_id=run.id, weights="last", tta=cfg.train.tta, folder=run.path / "eval-last",
    )  # fmt: skip
    rows = save_curves(run)
    summary = {
        "task": "multilabel",
        "map": rep["map"],
        "macro_f1": rep["macro_f1"],
        "micro_f1": rep["micro_f1"],
        "exact_match": rep["exact_match"],
        "test_acc": rep["exact_match"],  # what tables of runs show: the exact-match share
        "test_top5": None,
        "balanced_acc": None,
        "test_loss": rep["loss"],
        "per_class_ap": {c: v["ap"] for c, v in rep["per_class"].items()},
        **run_facts(cfg, data, scored, best, wall, rows, rep["n"]),
    }
    run.set_status("finished")
    run.write_json("summary.json", summary)  # written last: its presence marks the run finished
    console.print(
        f"[bold green]test mAP {rep['map']:.2%}[/] (macro-F1 {rep['macro_f1']:.2%}, micro-F1 "
        f"{rep['micro_f1']:.2%}, exact match {rep['exact_match']:.2%}, {rep['n']:,} images)  "
        f"run: {escape(str(run.path))}"
    )
