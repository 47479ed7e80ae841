"""Temperature scaling: T undoes a known over-confidence, never changes a prediction, is fitted
and recorded by training, and calibrates eval, predict and soft votes; runs without it (and
train.calibrate=false) report the plain softmax as before."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionbench.analysis.calibration import (
    calibration_record,
    ece,
    fit_temperature,
    no_fit_reason,
    softmax,
)
from visionbench.analysis.predictor import Ensemble, Outputs, load_member, load_test_split
from visionbench.cli import app
from visionbench.commands.predict import read_images
from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.runs import Run

runner = CliRunner()


def calibrated_logits(n: int = 4000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are calibrated by construction: each label is drawn from their softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, classes)).astype(np.float32)
    p = softmax(logits)
    labels = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)
    return logits, np.minimum(labels, classes - 1)


def test_temperature_undoes_a_known_overconfidence_and_keeps_every_prediction():
    logits, labels = calibrated_logits()
    over = logits * 5  # five times over-confident
    rec = calibration_record(over, labels, weights="last")
    assert rec["temperature"] == pytest.approx(5, rel=0.1)
    assert rec["nll_after"] < rec["nll_before"] / 2 and rec["ece_after"] < rec["ece_before"] / 3
    assert fit_temperature(logits, labels) == pytest.approx(1, rel=0.1)  # calibrated: left alone
    out = Outputs.from_logits(over, rec["temperature"])
    assert (out.preds == over.argmax(1)).all() and (out.logits == over).all()  # top-1 and logits as they were
    assert np.allclose(out.probs, softmax(logits), atol=0.02)
    assert ece(over, labels, rec["temperature"]) == pytest.approx(rec["ece_after"])
    assert out.uncalibrated is not None and np.allclose(out.uncalibrated.probs, softmax(over))


def test_a_validation_split_without_mistakes_fits_nothing():
    logits, labels = calibrated_logits(200)
    assert no_fit_reason(logits, logits.argmax(1)) and no_fit_reason(logits, labels) is None


def test_a_run_is_calibrated_and_its_bundle_and_predictions_use_it(tiny_run):
    run = Run(tiny_run)
    rec = run.read_json("calibration.json")
    t = rec["temperature"]
    assert 0.05 < t < 20 and rec["weights"] == "last" and rec["n"] == 143
    assert rec["nll_after"] <= rec["nll_before"]
    m = run.read_json("eval-last/metrics.json")
    assert m["temperature"] == t and m["ece_calibrated"] == m["ece"] != m["ece_uncalibrated"]
    npz = np.load(tiny_run / "eval-last" / "predictions.npz")
    assert np.allclose(npz["probs"], softmax(npz["logits"], t), atol=1e-6)  # logits raw, probs calibrated
    assert (npz["preds"] == npz["logits"].argmax(1)).all()
    res = runner.invoke(app, ["eval", str(tiny_run), "--json"], catch_exceptions=False)
    assert json.loads(res.stdout)["ece_uncalibrated"] == pytest.approx(m["ece_uncalibrated"])
    # predict: the confidence is the calibrated probability, and it says so
    member = load_member(tiny_run, tiny_run.parent)
    images = tiny_run.parent / "images"
    images.mkdir(exist_ok=True)
    for i, img in enumerate(load_test_split(member)[0][:3]):
        Image.fromarray(img[0]).save(images / f"{i}.png")
    out_csv = tiny_run.parent / "preds.csv"
    args = ["predict", str(tiny_run), "--images", str(images), "--out", str(out_csv)]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0 and f"softmax(logits / {t:.3f})" in res.output
    logits = member.logits(read_images(images, member.spec.shape, member.cfg.data.resize)[1])
    with open(out_csv) as f:
        confidence = [float(row["confidence"]) for row in csv.DictReader(f)]
    assert confidence == pytest.approx(softmax(logits, t).max(1), abs=1e-4)
    assert confidence != pytest.approx(softmax(logits).max(1), abs=1e-4)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_soft_vote_averages_calibrated_probabilities(digit_runs):
    members = [load_member(r, digit_runs) for r in ("a", "b")]
    assert all(m.temperature for m in members)
    x = np.load(digit_runs / "a" / "eval-last" / "predictions.npz")["logits"]  # any logits will do
    logits = np.stack([x, x[::-1]])
    soft = Ensemble(members, "soft").combine(logits)
    expected = np.mean([softmax(z, m.temperature) for z, m in zip(logits, members)], 0)
    assert np.allclose(soft.probs, expected) and np.allclose(soft.uncalibrated.probs, softmax(logits).mean(0))
    hard = Ensemble(members, "hard").combine(logits)
    assert (hard.preds == hard.uncalibrated.preds).all()  # a temperature changes no vote
    assert "calibrated (a T=" in Ensemble(members, "soft").confidence()


def test_calibrate_false_writes_none_and_reports_the_plain_softmax(tiny_overrides, capsys):
    run = train(resolve_config([], tiny_overrides + ["train.calibrate=false"]), quiet=True)
    assert not (run.path / "calibration.json").exists()
    m = run.read_json("eval-last/metrics.json")  # as a run made before calibration existed
    assert m["temperature"] is None and m["ece_calibrated"] is None and m["ece_uncalibrated"] == m["ece"]
    npz = np.load(run.path / "eval-last" / "predictions.npz")
    assert np.allclose(npz["probs"], softmax(npz["logits"]))
    member = load_member(run.path, run.path.parent)
    assert member.temperature is None and "uncalibrated" in member.confidence()


def test_a_run_without_a_validation_split_says_why_and_how(tiny_overrides, capsys):
    run = train(resolve_config([], tiny_overrides + ["data.val_fraction=0", "train.epochs=1"]))
    out = capsys.readouterr().out
    assert "calibration: skipped: the run has no validation split" in out and "data.val_fraction=0.1" in out
    assert not (run.path / "calibration.json").exists()
