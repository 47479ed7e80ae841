"""Multi-label classification (data.task): label sets from csv: `a;b` cells and from files filed
under several class folders, BCE training with per-class thresholds, mAP / F1 / exact match,
label sets in predict's CSV, soft-vote ensembles per label."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionbench.analysis.multilabel import average_precision, multilabel_summary, tune_thresholds
from visionbench.cli import app
from visionbench.config import parse_overrides, resolve_config
from visionbench.data.multilabel import label_set
from visionbench.data.sources import load_dataset
from visionbench.data.split import stratified_split
from visionbench.errors import VisionbenchError

runner = CliRunner()
ATTRIBUTES = ("red", "stripes", "square")  # independent, each on ~40% of the images
TRAIN = ["model.name=small_cnn", "model.kwargs={width: 8}", "train.device=cpu", "data.img_size=16"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def attribute_image(rng, on: dict, size: int = 20) -> np.ndarray:
    """Noise, with a red background, green stripes and a blue centre square where `on` says."""
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    if on["red"]:
        img[..., 0] = 220
    if on["stripes"]:
        img[::4, :, 1] = 255
    if on["square"]:
        c = size // 2
        img[c - 3 : c + 3, c - 3 : c + 3, 2] = 255
    return img


def write_attribute_csv(root: Path, n: int = 120, seed: int = 0) -> Path:
    """A labels CSV of `n` PNGs as real ones come: sizes vary (20 and 28 px), a few are RGBA,
    spaces around `;`, one image with no label at all."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = [["file", "label"]]
    for i in range(n):
        on = {a: bool(rng.random() < 0.4) for a in ATTRIBUTES}
        img = Image.fromarray(attribute_image(rng, on, 28 if i % 5 == 0 else 20))
        (img.convert("RGBA") if i % 7 == 0 else img).save(root / f"img{i}.png")
        rows.append([f"img{i}.png", " ; ".join(a for a in ATTRIBUTES if on[a])])
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One multi-label run trained through the CLI on the attribute CSV (shared: ~10 s)."""
    root = tmp_path_factory.mktemp("multilabel")
    labels = write_attribute_csv(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONBENCH_CACHE", str(root / "cache"))
        res = invoke(
            "train", "--data", f"csv:{labels}", "--runs-dir", str(root / "runs"), "--epochs", "6",
            *TRAIN, "name=ml",
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    return {"root": root, "labels": labels, "run": root / "runs" / "ml", "output": res.output}


@pytest.fixture
def in_trained(trained, monkeypatch):
    monkeypatch.setenv("VISIONBENCH_CACHE", str(trained["root"] / "cache"))
    return trained


def test_label_sets_drop_spaces_empties_and_repeats():
    assert label_set(" square ; red;;red ") == ("red", "square")
    assert label_set("") == ()


def test_task_is_a_short_key_on_the_command_line():
    assert parse_overrides(["task=multilabel"]) == {"data": {"task": "multilabel"}}
    assert resolve_config([], ["task=single"]).data.task == "single"


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_a_csv_of_label_sets_trains_multilabel_says_so_and_records_map(trained):
    out, run = trained["output"], trained["run"]
    assert "task: multilabel" in out and "data.task=single" in out  # the choice and its key
    assert "mAP" in out.strip().splitlines()[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["map"] <= 1 and summary["task"] == "multilabel"
    assert f"{summary['map']:.2%}" in out.strip().splitlines()[-1]
    assert "task: multilabel" in (run / "config.yaml").read_text()  # eval and predict read it so
    thresholds = json.loads((run / "thresholds.json").read_text())["thresholds"]
    assert sorted(thresholds) == sorted(ATTRIBUTES)


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_the_network_learns_the_attributes_well_above_chance(trained):
    """mAP of a random ranking is each label's prevalence (~0.4 here)."""
    summary = json.loads((trained["run"] / "summary.json").read_text())
    metrics = json.loads((trained["run"] / "eval-last" / "metrics.json").read_text())
    prevalence = np.mean([v["support"] / metrics["n"] for v in metrics["per_class"].values()])
    assert summary["map"] > prevalence + 0.3, (summary["map"], prevalence)


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_eval_writes_map_f1_exact_match_and_per_class_ap(in_trained):
    res = invoke("eval", str(in_trained["run"]))
    assert res.exit_code == 0, res.output
    assert "mAP" in res.output
    folder = in_trained["run"] / "eval-last"
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("map", "macro_f1", "micro_f1", "exact_match"):
        assert 0 <= metrics[key] <= 1
    assert set(metrics["per_class"]) == set(ATTRIBUTES)
    assert all(v["ap"] is not None for v in metrics["per_class"].values())
    assert (folder / "pr_curves.png").is_file() and not (folder / "confusion.png").exists()
    # the summary's mAP is the same evaluation's
    summary = json.loads((in_trained["run"] / "summary.json").read_text())
    assert metrics["map"] == pytest.approx(summary["map"], abs=1e-6)


def predicted(in_trained, tmp_path, *extra) -> list[dict]:
    images = tmp_path / "new"
    images.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i, on in enumerate(({"red": 1, "stripes": 0, "square": 1}, {"red": 0, "stripes": 1, "square": 0})):
        Image.fromarray(attribute_image(rng, on)).save(images / f"{i}.png")
    out = tmp_path / "pred.csv"
    res = invoke("predict", str(in_trained["run"]), "--images", str(images), "--out", str(out), *extra)
    assert res.exit_code == 0, res.output
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_predict_writes_each_label_set_with_every_probability(in_trained, tmp_path):
    rows = predicted(in_trained, tmp_path)
    thresholds = json.loads((in_trained["run"] / "thresholds.json").read_text())["thresholds"]
    assert list(rows[0]) == ["file", "label", "probabilities", "error"]
    for row in rows:
        probs = {c: float(p) for c, p in (item.split(":") for item in row["probabilities"].split())}
        assert set(probs) == set(ATTRIBUTES)
        chosen = set(row["label"].split(";")) - {""}
        assert chosen == {c for c, p in probs.items() if p >= thresholds[c]}


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_predict_uses_the_tuned_thresholds(in_trained, tmp_path):
    path = in_trained["run"] / "thresholds.json"
    saved = path.read_text()
    record = json.loads(saved)
    try:
        for threshold, expected in ((0.0, set(ATTRIBUTES)), (1.0, set())):
            record["thresholds"] = dict.fromkeys(ATTRIBUTES, threshold)
            path.write_text(json.dumps(record))
            rows = predicted(in_trained, tmp_path / str(threshold))
            assert all(set(r["label"].split(";")) - {""} == expected for r in rows)
    finally:
        path.write_text(saved)


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_a_soft_ensemble_averages_per_label_and_a_hard_vote_is_refused(in_trained):
    run = str(in_trained["run"])
    res = runner.invoke(app, ["ensemble", run, run])
    assert res.exit_code != 0 and "--vote soft" in res.output
    res = invoke("ensemble", run, run, "--vote", "soft", "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    metrics = json.loads((in_trained["run"] / "eval-last" / "metrics.json").read_text())
    assert rep["map"] == pytest.approx(metrics["map"], abs=1e-6)  # the mean of one model is itself
    assert [m["map"] for m in rep["members"]] == pytest.approx([metrics["map"]] * 2, abs=1e-6)


@pytest.mark.slow  # the module's trained run: over 2 s on 2 cores
def test_single_label_settings_and_losses_are_refused_for_multilabel_data(in_trained, tmp_path):
    base = ["train", "--data", f"csv:{in_trained['labels']}", "--runs-dir", str(tmp_path), *TRAIN]
    for setting, named in (("data.sampler=balanced", "data.sampler"), ("train.loss=ce", "train.loss")):
        res = runner.invoke(app, [*base, setting])
        assert res.exit_code != 0 and named in res.output and "data.task=single" in res.output


def test_task_single_reads_a_b_as_one_class(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(["a;b", "a", "b", "a;b"] * 3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (root / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    single = load_dataset(f"csv:{root / 'labels.csv'}", task="single")
    assert single.classes == ["a", "a;b", "b"] and single.splits["train"].labels.ndim == 1
    multi = load_dataset(f"csv:{root / 'labels.csv'}")
    assert multi.classes == ["a", "b"] and multi.splits["train"].labels.shape[1] == 2


def test_an_empty_label_is_still_an_error_in_single_label_csvs(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i * 50, np.uint8)).save(root / f"{i}.png")
    (root / "labels.csv").write_text("file,label\n0.png,a\n1.png,b\n2.png,\n3.png,a\n")
    with pytest.raises(VisionbenchError, match="without a file or a label") as e:
        load_dataset(f"csv:{root / 'labels.csv'}")
    assert "labels.csv:4" in str(e.value)


def write_folder(root: Path, same_bytes: bool) -> None:
    """a/, b/, c/ class folders of 12 px images; with `same_bytes` every third image is filed
    under two class folders (same name, same file); without, the same names hold other images."""
    rng = np.random.default_rng(1)
    for i in range(30):
        classes = ["abc"[i % 3]] + (["abc"[(i + 1) % 3]] if i % 3 == 0 else [])
        for c in classes:
            (root / c).mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 255, (12, 12, 3)).astype(np.uint8)
            if same_bytes:
                img = np.random.default_rng(i).integers(0, 255, (12, 12, 3)).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")


def test_a_file_under_several_class_folders_makes_a_multilabel_folder(tmp_path):
    write_folder(tmp_path / "dup", same_bytes=True)
    ds = load_dataset(f"folder:{tmp_path / 'dup'}")
    labels = np.concatenate([s.labels for s in ds.splits.values()])
    assert labels.shape == (30, 3) and (labels.sum(1) == 2).sum() == 10  # one image, two labels
    write_folder(tmp_path / "other", same_bytes=False)  # 0.png in a/ and b/ differ: two images
    ds = load_dataset(f"folder:{tmp_path / 'other'}")
    assert ds.splits["train"].labels.ndim == 1 and sum(len(s) for s in ds.splits.values()) == 40


def test_every_image_under_every_class_folder_stays_single_label(tmp_path):
    """The same blank 0.png in a/ and b/ (a test fixture, not label sets): no set could teach."""
    for c in "ab":
        (tmp_path / "same" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(tmp_path / "same" / c / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path / 'same'}")
    assert ds.splits["train"].labels.ndim == 1 and sum(len(s) for s in ds.splits.values()) == 8


def test_average_precision_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.random(50) < 0.3
        scores = np.round(rng.random(50) + y * 0.3, 1)  # ties too
        assert average_precision(scores, y) == pytest.approx(metrics.average_precision_score(y, scores))


def test_thresholds_maximise_each_class_f1_on_the_validation_images():
    probs = np.array([[0.9, 0.2], [0.7, 0.3], [0.4, 0.8], [0.1, 0.6]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    t = tune_thresholds(probs, targets)
    assert 0.4 < t[0] <= 0.7 and 0.6 < t[1] <= 0.8  # between the last positive and the next score
    rep = multilabel_summary(np.log(probs / (1 - probs)), targets, ["x", "y"], t)
    assert rep["macro_f1"] == pytest.approx(1.0) and rep["exact_match"] == 1.0


def test_multilabel_splits_keep_every_label_in_the_held_out_part():
    labels = np.zeros((40, 3), np.int64)
    labels[:30, 0] = 1
    labels[30:36, 1] = 1
    labels[36:, 2] = 1  # the rare label
    kept, held = stratified_split(labels, 0.25, seed=0)
    assert labels[held].sum(0).min() >= 1 and len(np.intersect1d(kept, held)) == 0
