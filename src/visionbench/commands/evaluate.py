"""`visionbench eval`: the evaluation bundle of a run or a saved ensemble, beside its files."""

from __future__ import annotations

from ..analysis.evaluation import bundle_name, evaluate_predictor
from ..analysis.predictor import Ensemble, open_predictor
from ..runs import check_writable


def evaluate(
    ref: str, runs_dir=None, weights: str | None = None, device: str = "auto", tta: str | None = None
) -> dict:
    """Evaluate on the test split; the bundle goes to RUN/eval-<weights>[-tta]/ (see
    analysis/evaluation.py) or, for a saved ensemble, ENSEMBLE/eval[-tta]/."""
    predictor = open_predictor(ref, runs_dir, weights, device)
    home = predictor.path if isinstance(predictor, Ensemble) else predictor.run.path
    check_writable(home)  # a read-only run folder: said before the evaluation, not after it
    return evaluate_predictor(predictor, tta, home / bundle_name(predictor, tta))
