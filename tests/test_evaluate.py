"""`visionbench eval` bundles and `visionbench ensemble`, driven through the CLI."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionbench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_eval_writes_the_bundle(digit_runs):
    res = invoke("eval", "a", "--runs-dir", str(digit_runs))
    assert res.exit_code == 0, res.output
    bundle = digit_runs / "a" / "eval-last"
    names = {p.name for p in bundle.iterdir()}
    assert names == {
        "metrics.json",
        "per_class.csv",
        "confusion.csv",
        "confusion_normalized.csv",
        "confusion.png",
        "confusion_normalized.png",
        "reliability.png",
        "mistakes.png",
        "predictions.npz",
    }
    m = json.loads((bundle / "metrics.json").read_text())
    summary = json.loads((digit_runs / "a" / "summary.json").read_text())
    assert m["top1"] == pytest.approx(summary["test_acc"]) and f"top-1 {m['top1']:.2%}" in res.output
    assert m["ece_bins"] == 15 and f"({m['ece_bins']} bins)" in res.output
    pred = np.load(bundle / "predictions.npz")
    assert pred["logits"].shape == (359, 10) and pred["indices"].tolist() == list(range(359))
    assert (pred["logits"].argmax(1) == pred["targets"]).mean() == pytest.approx(m["top1"])
    with open(bundle / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true\\pred", *map(str, range(10))]
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == 359
    with open(bundle / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [r["class"] for r in per_class] == [str(i) for i in range(10)]
    recall = [float(r["recall"]) for r in per_class]
    assert recall == pytest.approx([m["per_class"][str(i)]["recall"] for i in range(10)], abs=1e-6)
    assert len(m["mistakes"]) == min(24, 359 - round(m["top1"] * 359))
    confidences = [x["confidence"] for x in m["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    for png in ("confusion.png", "reliability.png", "mistakes.png"):
        assert Image.open(bundle / png).size[0] > 200


def test_tta_bundle_is_separate_and_differs(digit_runs):
    plain = json.loads(invoke("eval", "b", "--runs-dir", str(digit_runs), "--json").stdout)
    tta = json.loads(invoke("eval", "b", "--runs-dir", str(digit_runs), "--tta", "flip", "--json").stdout)
    assert tta["bundle"].endswith("eval-last-flip") and plain["bundle"].endswith("eval-last")
    assert (plain["tta"], tta["tta"]) == ("none", "flip")  # each figure says which views made it
    bad = runner.invoke(app, ["eval", "b", "--runs-dir", str(digit_runs), "--tta", "../../x"])
    assert bad.exit_code != 0 and "flip-translate" in bad.output  # the views there are, named
    # digits are not mirror-symmetric: averaging in mirrored views changes the logits
    a = np.load(f"{plain['bundle']}/predictions.npz")["logits"]
    b = np.load(f"{tta['bundle']}/predictions.npz")["logits"]
    assert not np.allclose(a, b)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_ensemble_reports_members_and_votes_and_saves(digit_runs):
    args = ["ensemble", "a", "b", "c", "--runs-dir", str(digit_runs)]
    res = invoke(*args, "--tie-break", "b", "--save", "trio")
    assert res.exit_code == 0, res.output
    assert "hard vote" in res.output and "ensemble confusion matrix" in res.output
    folder = digit_runs / "trio"
    meta = json.loads((folder / "ensemble.json").read_text())
    assert [m["id"] for m in meta["members"]] == ["a", "b", "c"] and meta["tie_break"] == 1
    summary = json.loads((folder / "summary.json").read_text())
    preds = np.load(folder / "eval" / "predictions.npz")
    member_preds = preds["member_logits"].argmax(2)
    from visionbench.analysis.vote import hard_vote

    assert preds["preds"].tolist() == hard_vote(member_preds, 10, tie_break=1).tolist()
    assert summary["top1"] == pytest.approx((preds["preds"] == preds["targets"]).mean())
    for m, p in zip(summary["members"], member_preds):  # members' accuracy beside the ensemble's
        assert m["top1"] == pytest.approx((p == preds["targets"]).mean())
    # the saved ensemble is accepted by eval, where a run is
    ev = json.loads(invoke("eval", "trio", "--runs-dir", str(digit_runs), "--json").stdout)
    assert ev["top1"] == pytest.approx(summary["top1"]) and ev["vote"] == "hard"
    soft = json.loads(invoke(*args, "--vote", "soft", "--weights", "1,2,1", "--json").stdout)
    assert soft["vote"] == "soft" and soft["weights"] == [1, 2, 1]
    refused = runner.invoke(app, [*args, "--save", "trio"])
    assert refused.exit_code == 2 and "never overwritten" in refused.output


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_ensemble_refuses_runs_with_other_classes(digit_runs, tmp_path, tiny_overrides):
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    for split, n in (("train", 6), ("test", 2)):
        for cls, colour in (("cat", 200), ("dog", 30)):
            for i in range(n):
                path = tmp_path / "pets" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png(np.full((8, 8, 3), colour + i, np.uint8)))
    cfg = resolve_config([], tiny_overrides + [f"data.name=folder:{tmp_path / 'pets'}", "name=pets"])
    train(cfg, runs_dir=digit_runs, quiet=True)
    res = runner.invoke(app, ["ensemble", "a", "pets", "--runs-dir", str(digit_runs)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "runs 'a' and 'pets' have different class lists" in " ".join(res.output.split())
    bad = runner.invoke(app, ["ensemble", "a", "b", "--tie-break", "c", "--runs-dir", str(digit_runs)])
    assert bad.exit_code == 2 and "--tie-break 'c' is not one of the runs" in bad.output


def test_a_run_json_missing_its_shape_is_a_clear_error_not_a_traceback(digit_runs, tmp_path):
    import shutil

    broken = tmp_path / "runs" / "broken"
    shutil.copytree(digit_runs / "a", broken)
    record = json.loads((broken / "run.json").read_text())
    del record["data_report"]["shape"]
    (broken / "run.json").write_text(json.dumps(record))
    res = runner.invoke(
        app, ["predict", "broken", "--runs-dir", str(tmp_path / "runs"), "--images", str(tmp_path)]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "data_report is incomplete" in " ".join(res.output.split())


@pytest.mark.parametrize(
    "trained, later", [("1", "1"), ("0", "1")], ids=["bf16-autocast", "fp32-then-bf16-cpu"]
)
@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_one_image_one_figure_in_every_command(tmp_path, monkeypatch, trained, later):
    """Training's test pass, `eval`, `predict` and an ensemble compute the same logits for the
    same image and weights: under the run's recorded autocast (bf16 on this CPU, native or
    emulated), whatever VISIONBENCH_CPU_BF16 says when the run is reopened, and whichever
    batch an image falls in (all 359 test images, or 5 of them)."""
    import visionbench as vb
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    monkeypatch.setenv("VISIONBENCH_CPU_BF16", trained)
    overrides = ["data.name=digits", "model.name=small_cnn", "model.kwargs={width: 8}", "train.epochs=1"]
    for seed, name in enumerate("pq"):
        train(resolve_config([], [*overrides, f"seed={seed}", f"name={name}"]), quiet=True)
    monkeypatch.setenv(
        "VISIONBENCH_CPU_BF16", later
    )  # e.g. a run made on an AVX2 CPU, reopened on a bf16 one
    runs = tmp_path / "runs"
    trained_pass = np.load(runs / "p" / "eval-last" / "predictions.npz")
    summary = json.loads((runs / "p" / "summary.json").read_text())
    res = invoke("eval", "p", "--runs-dir", str(runs), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["top1"] == summary["test_acc"]
    again = np.load(runs / "p" / "eval-last" / "predictions.npz")
    assert np.array_equal(again["logits"], trained_pass["logits"])

    from visionbench.runs.reopen import open_run

    test = open_run("p").data.dataset.splits["test"].images
    run = vb.load("p")
    rows = run.predict(test[:5])
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    confidence = trained_pass["probs"][:5].max(1)
    assert [r["confidence"] for r in rows] == pytest.approx(confidence, abs=1e-6)

    q = np.load(runs / "q" / "eval-last" / "predictions.npz")
    soft = json.loads(
        invoke("ensemble", "p", "q", "--vote", "soft", "--runs-dir", str(runs), "--json").stdout
    )
    expected = ((trained_pass["probs"] + q["probs"]) / 2).argmax(1) == trained_pass["targets"]
    assert soft["top1"] == pytest.approx(expected.mean())
