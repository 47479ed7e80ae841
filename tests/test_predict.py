"""`visionbench predict`: a folder of images to a CSV, with a run or a saved ensemble."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.data import load_dataset

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """predict writes predictions.csv into the working folder unless --out says otherwise: each
    test works in its own folder, never the repository's (a stray predictions.csv was committed)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def unlabelled(tmp_path):
    """The first six digits test images as PNG files, in an unsorted nested layout, beside a
    corrupt image, a text file and a hidden file; returns (folder, {file: test index})."""
    test = load_dataset("digits").splits["test"].images
    names = {"z.png": 0, "b/2.png": 1, "b/10.png": 2, "a.png": 3, "b/c/x.png": 4, "B.png": 5}
    folder = tmp_path / "unlabelled"
    for name, i in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png(test[i, 0]))  # greyscale 8x8, as stored
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    return folder, names


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_labels_files_in_sorted_order_as_eval_would(digit_runs, unlabelled, tmp_path):
    folder, names = unlabelled
    out = tmp_path / "preds.csv"
    res = invoke("predict", "a", "--images", str(folder), "--out", str(out), "--runs-dir", str(digit_runs))
    assert res.exit_code == 0, res.output
    rows = read_csv(out)
    files = [r["file"] for r in rows]
    assert files == sorted(names | {"b/broken.jpg": 0, "notes.txt": 0})
    errors = {r["file"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"b/broken.jpg", "notes.txt"} and "not a readable image" in errors["b/broken.jpg"]
    assert "skipped b/broken.jpg" in res.output and "skipped notes.txt" in res.output
    # preprocessing equals the run's own: the same labels and confidences as its eval bundle
    invoke("eval", "a", "--runs-dir", str(digit_runs))
    probs = np.load(digit_runs / "a" / "eval-last" / "predictions.npz")["probs"]
    for r in rows:
        if r["file"] in names:
            i = names[r["file"]]
            assert r["label"] == str(probs[i].argmax())
            assert float(r["confidence"]) == pytest.approx(probs[i].max(), abs=1e-4)
            top = r["top_k"].split()
            assert len(top) == 5 and top[0].split(":")[0] == r["label"]
    again = tmp_path / "again.csv"
    invoke("predict", "a", "--images", str(folder), "--out", str(again), "--runs-dir", str(digit_runs))
    assert again.read_text() == out.read_text()


def test_saved_ensemble_predicts_like_its_eval(digit_runs, unlabelled, tmp_path):
    folder, names = unlabelled
    assert (
        invoke(
            "ensemble", "a", "b", "c", "--vote", "soft", "--save", "soft3", "--runs-dir", str(digit_runs)
        ).exit_code
        == 0
    )
    out = tmp_path / "ens.csv"
    res = invoke(
        "predict",
        "soft3",
        "--images",
        str(folder),
        "--out",
        str(out),
        "--runs-dir",
        str(digit_runs),
        "--json",
    )
    assert json.loads(res.stdout)["predicted"] == 6
    probs = np.load(digit_runs / "soft3" / "eval" / "predictions.npz")["probs"]
    for r in read_csv(out):
        if r["file"] in names:
            assert r["label"] == str(probs[names[r["file"]]].argmax())
    refused = runner.invoke(
        app, ["predict", "soft3", "--weights", "best", "--images", str(folder), "--runs-dir", str(digit_runs)]
    )
    assert refused.exit_code == 2 and "--weights applies to runs" in refused.output


def test_runs_recorded_without_classes_read_them_from_their_data(digit_runs, tmp_path):
    import shutil

    from visionbench.analysis.predictor import load_member

    old = tmp_path / "old"
    shutil.copytree(digit_runs / "a", old, ignore=shutil.ignore_patterns("eval*"))
    meta = json.loads((old / "run.json").read_text())
    for key in ("classes", "shape"):
        del meta["data_report"][key]
    (old / "run.json").write_text(json.dumps(meta))
    recorded, rebuilt = load_member(digit_runs / "a", digit_runs), load_member(old, digit_runs)
    assert rebuilt.spec == recorded.spec and rebuilt.spec.shape == (1, 8, 8)
    assert rebuilt.mean == pytest.approx(recorded.mean) and rebuilt.std == pytest.approx(recorded.std)


def test_a_folder_too_large_for_the_memory_is_refused_before_it_is_read(unlabelled, digit_runs, monkeypatch):
    from visionbench.data import cache

    folder, _ = unlabelled
    monkeypatch.setattr(cache, "memory_total", lambda: 1024)  # 256 bytes: not even one file
    res = runner.invoke(app, ["predict", "a", "--images", str(folder), "--runs-dir", str(digit_runs)])
    assert res.exit_code == 2 and "more than 25% of the 1.0 KiB of memory" in " ".join(res.output.split())
    assert "label the images a folder of them at a time" in res.output
    assert not Path("predictions.csv").exists()  # the default --out, in the test's own folder


def test_predict_takes_one_image_file_and_names_a_missing_path(digit_runs, unlabelled, tmp_path):
    folder, names = unlabelled
    whole, one = tmp_path / "all.csv", tmp_path / "one.csv"
    invoke("predict", "a", "--images", str(folder), "--out", str(whole), "--runs-dir", str(digit_runs))
    res = invoke(
        "predict",
        "a",
        "--images",
        str(folder / "b" / "2.png"),
        "--out",
        str(one),
        "--runs-dir",
        str(digit_runs),
    )
    assert res.exit_code == 0, res.output
    [row] = read_csv(one)
    assert row["file"] == str(folder / "b" / "2.png") and not row["error"]
    # the same label and confidence as when the folder it is in is labelled
    same = next(r for r in read_csv(whole) if r["file"] == "b/2.png")
    assert (row["label"], row["confidence"], row["top_k"]) == (
        same["label"],
        same["confidence"],
        same["top_k"],
    )
    missing = runner.invoke(
        app, ["predict", "a", "--images", str(tmp_path / "nope"), "--runs-dir", str(digit_runs)]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output and "nope" in missing.output
    text = runner.invoke(
        app, ["predict", "a", "--images", str(folder / "notes.txt"), "--runs-dir", str(digit_runs)]
    )
    assert (
        text.exit_code == 2 and "not a folder, a .zip/.tar archive of images, or an image file" in text.output
    )


def test_fifos_and_broken_or_outward_symlinks_get_a_row_with_the_reason(digit_runs, unlabelled, tmp_path):
    folder, names = unlabelled
    os.mkfifo(folder / "pipe.png")  # read, it would wait for a writer for ever
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    (tmp_path / "outside.png").write_bytes((folder / "a.png").read_bytes())
    (folder / "b" / "out.png").symlink_to(tmp_path / "outside.png")
    out = tmp_path / "preds.csv"
    res = invoke("predict", "a", "--images", str(folder), "--out", str(out), "--runs-dir", str(digit_runs))
    assert res.exit_code == 0, res.output
    errors = {r["file"]: r["error"] for r in read_csv(out) if r["error"]}
    assert errors["pipe.png"] == "not a regular file (a FIFO): not read"
    assert errors["gone.png"] == "a broken symlink (its target does not exist)"
    assert errors["b/out.png"] == "a symlink to a file outside the folder: not followed"
    assert len(read_csv(out)) == len(names) + 5  # and broken.jpg, notes.txt; .DS_Store stays out


def test_an_out_path_that_cannot_be_written_is_refused_before_predicting(digit_runs, unlabelled, tmp_path):
    folder, _ = unlabelled
    (tmp_path / "file").write_text("")
    for out, message in (
        (tmp_path, "is a folder, not a CSV file"),
        (tmp_path / "file" / "p.csv", "it is a file"),
    ):
        res = runner.invoke(
            app, ["predict", "a", "--images", str(folder), "--out", str(out), "--runs-dir", str(digit_runs)]
        )
        assert res.exit_code == 2 and message in " ".join(res.output.split())
        assert "labelled" not in res.output
