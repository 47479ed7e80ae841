"""Folder edge cases from RELIABILITY.md, the dataset report, and the skip threshold."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.data import load_dataset
from visionbench.data.cache import Dataset, Split
from visionbench.data.decode import decode
from visionbench.data.report import check_skipped, dataset_report
from visionbench.errors import VisionbenchError


def png(colour, size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return root


def two_class_tree(root: Path, n: int = 4) -> dict[str, bytes]:
    files = {}
    for split, count in (("train", n), ("test", 2)):
        for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
            for i in range(count):
                files[f"{split}/{cls}/{i}.png"] = png((colour[0], i * 10, colour[2]))
    return files


def test_symlinks_leaving_the_root_or_looping_are_not_followed(tmp_path):
    outside = write_tree(tmp_path / "outside", {"secret/x.png": png((1, 2, 3))})
    root = write_tree(tmp_path / "tree", two_class_tree(tmp_path))
    os.symlink(outside / "secret" / "x.png", root / "train" / "cat" / "leak.png")
    os.symlink(root / "train", root / "train" / "dog" / "loop")  # a directory loop
    os.symlink(root / "train" / "cat" / "0.png", root / "train" / "cat" / "inside.png")  # stays inside: kept
    ds = load_dataset(f"folder:{root}", None)
    assert np.bincount(ds.splits["train"].labels).tolist() == [5, 4]


def test_decompression_bomb_is_refused_without_decoding():
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, "PNG")  # 81 Mpx: over the 64 Mpx guard, under 2x
    reason = decode(buf.getvalue(), None)
    assert isinstance(reason, str) and "decompression bomb" in reason


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"train/Cat/0.png": png((1, 1, 1)), "train/cat/0.png": png((2, 2, 2))},
            "differ only by case: Cat/cat",
        ),
        ({"train/cat/0.png": png((1, 1, 1)), "test/cat/0.png": png((1, 1, 1))}, "only one class (cat)"),
        ({"a.txt": b"not an image"}, "no images found"),
    ],
)
def test_bad_folder_layouts_are_clear_errors(tmp_path, files, message):
    root = write_tree(tmp_path / "tree", files)
    with pytest.raises(VisionbenchError) as e:
        load_dataset(f"folder:{root}", None)
    assert message in str(e.value) and str(root) in str(e.value)


def test_empty_class_folder_is_named(tmp_path):
    root = write_tree(tmp_path / "tree", two_class_tree(tmp_path))
    (root / "train" / "bird").mkdir()
    with pytest.raises(VisionbenchError, match="empty class folder") as e:
        load_dataset(f"folder:{root}", None)
    assert str(root / "train" / "bird") in str(e.value)


def test_report_warns_on_leaks_gaps_and_imbalance():
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (13, 1, 4, 4), dtype=np.uint8)
    train_y = np.array([0] * 10 + [1] * 2 + [2])
    test_x = np.concatenate([train_x[:2], rng.integers(0, 256, (3, 1, 4, 4), dtype=np.uint8)])
    test_y = np.array([0, 0, 1, 1, 1])
    ds = Dataset("toy", ["a", "b", "c"], {"train": Split(train_x, train_y), "test": Split(test_x, test_y)})
    rep = dataset_report(ds)
    assert rep["counts"] == {"train": [10, 2, 1], "test": [2, 3, 0]}
    assert rep["duplicates_across_splits"] == {"test/train": 2}
    text = " | ".join(rep["warnings"])
    assert "1 classes have no test images: c" in text
    assert "class imbalance in train: a has 10 images, c 1" in text
    assert "2 train images are exact copies of test images" in text


def test_report_counts_a_carved_val_split_apart_and_finds_leaks_into_it():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    x[9] = x[0]  # one image twice: if one copy is held out, validation has seen training data
    y = np.array([0] * 6 + [1] * 4)
    test = Split(rng.integers(0, 256, (2, 1, 4, 4), dtype=np.uint8), np.array([0, 1]))
    ds = Dataset("toy", ["a", "b"], {"train": Split(x, y), "test": test})
    keep, held = np.array([0, 1, 2, 3, 4, 6, 7, 8]), np.array([5, 9])
    rep = dataset_report(ds, (keep, held))
    assert rep["counts"] == {"train": [5, 3], "val": [1, 1], "test": [1, 1]}
    assert rep["duplicates_across_splits"] == {"train/val": 1}
    assert "1 val images are exact copies of train images" in " | ".join(rep["warnings"])
    assert dataset_report(ds, (np.arange(10), np.array([], int)))["counts"] == {
        "train": [6, 4],
        "test": [1, 1],
    }


def test_clean_dataset_has_no_warnings():
    ds = load_dataset("digits")
    assert dataset_report(ds)["warnings"] == []


def test_skipped_files_threshold_and_strict():
    ds = Dataset(
        "toy",
        ["a", "b"],
        {"train": Split(np.zeros((99, 1, 2, 2), np.uint8), np.zeros(99, np.int64))},
        source="/data/toy",
        skipped=[{"file": "bad.jpg", "reason": "truncated"}],
    )
    check_skipped(ds, strict=False, max_bad_fraction=0.01)  # 1 of 100: allowed
    with pytest.raises(VisionbenchError, match="bad.jpg: truncated"):
        check_skipped(ds, strict=True, max_bad_fraction=0.01)
    with pytest.raises(VisionbenchError, match="more than 0%"):
        check_skipped(ds, strict=False, max_bad_fraction=0.0)


def test_training_on_a_folder_reports_skips_and_strict_refuses(tmp_path):
    files = two_class_tree(tmp_path, n=40)
    files["train/cat/broken.png"] = png((1, 1, 1))[:30]
    root = write_tree(tmp_path / "tree", files)
    base = [
        f"data.name=folder:{root}",
        "model.name=small_cnn",
        "train.epochs=1",
        "train.device=cpu",
        "data.max_bad_fraction=0.05",
    ]
    run = train(resolve_config([], base), quiet=True)
    report = run.read_json("run.json")["data_report"]
    assert [s["file"] for s in report["skipped"]] == ["train/cat/broken.png"]
    # the carved 10% validation split is counted apart: train counts what is trained on
    assert report["counts"] == {"train": [36, 36], "val": [4, 4], "test": [2, 2]}
    assert (report["splits"]["train"], report["splits"]["val"]) == (72, 8)
    with pytest.raises(VisionbenchError, match="data.strict is on"):
        train(resolve_config([], base + ["data.strict=true"]), quiet=True)


def test_cli_data_show_and_info(tmp_path):
    runner = CliRunner()
    out = tmp_path / "grid.png"
    res = runner.invoke(
        app,
        ["data", "show", "digits", "--out", str(out), "--per-class", "3", "aug.crop_padding=1"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "30 samples, 10 classes, stored | augmented" in res.output
    with Image.open(out) as img:
        assert img.size[0] > 300 and len(np.unique(np.asarray(img.convert("L")))) > 10  # drawn, not blank
    root = write_tree(tmp_path / "tree", two_class_tree(tmp_path))
    res = runner.invoke(app, ["data", "info", f"folder:{root}", "--json"], catch_exceptions=False)
    info = json.loads(res.stdout)
    assert info["classes"] == ["cat", "dog"] and info["splits"]["train"]["per_class"] == [4, 4]


def test_data_show_draws_the_training_augmentations_every_aug_key(tmp_path, monkeypatch):
    """`data show` draws the augmented samples through the training loader's pipeline: rotation
    and colour jitter show (they once did not: only crop and flip were drawn), seeded."""
    import visionbench.analysis.plots as plots

    drawn = []
    monkeypatch.setattr(
        plots,
        "plot_samples",
        lambda images, labels, classes, path, augmented, title: drawn.append((images, augmented)),
    )

    def show(*keys):
        args = ["data", "show", "digits", "--out", str(tmp_path / "grid.png"), "--per-class", "3", *keys]
        assert runner.invoke(app, args, catch_exceptions=False).exit_code == 0
        return drawn[-1]

    runner = CliRunner()
    stored, base = show("aug.crop_padding=1", "aug.flip=true")
    assert not np.array_equal(stored, base) and np.array_equal(
        base, show("aug.crop_padding=1", "aug.flip=true")[1]
    )
    for key in ("aug.rotate=30", "aug.jitter=0.4"):
        assert not np.array_equal(show("aug.crop_padding=1", "aug.flip=true", key)[1], base), key
        _, alone = show(key)  # without crop or flip, the grid still shows the augmented views
        assert alone is not None and not np.array_equal(alone, stored), key


def test_resize_policy_crop_versus_stretch(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :2] = (255, 0, 0)  # left quarter red, the rest blue
    arr[:, 2:] = (0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    files = {f"train/{c}/{i}.png": buf.getvalue() for c in ("a", "b") for i in range(2)}
    root = write_tree(tmp_path / "tree", files)
    crop = load_dataset(f"folder:{root}", None, img_size=4)
    stretch = load_dataset(f"folder:{root}", None, img_size=4, resize="stretch")
    assert crop.shape == stretch.shape == (3, 4, 4)
    assert crop.splits["train"].images[0, 0].max() == 0  # the red margin was cropped away
    assert stretch.splits["train"].images[0, 0, :, 0].min() > 200  # kept, squeezed into column 0
    with pytest.raises(VisionbenchError, match="unknown resize policy 'squash'"):
        load_dataset(f"folder:{root}", None, img_size=4, resize="squash")


def test_folder_options_are_refused_for_other_sources():
    with pytest.raises(VisionbenchError, match="takes no option img_size"):
        load_dataset("digits", None, img_size=16)


def test_broken_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "photos.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    with pytest.raises(VisionbenchError, match="cannot read the archive"):
        load_dataset(f"folder:{bad}", None)


def test_nested_folders_inside_a_class_keep_the_class(tmp_path):
    files = {f"{cls}/2019/{i}.png": png((i, 0, 0)) for cls in ("cat", "dog") for i in range(5)}
    ds = load_dataset(f"folder:{write_tree(tmp_path / 'tree', files)}", None)
    assert ds.classes == ["cat", "dog"]


def test_a_folder_with_its_own_val_split_uses_it(tmp_path):
    files = two_class_tree(tmp_path, n=20)
    files |= {f"val/{cls}/{i}.png": png((9, i, 9)) for cls in ("cat", "dog") for i in range(3)}
    root = write_tree(tmp_path / "tree", files)
    run = train(
        resolve_config(
            [],
            [
                f"data.name=folder:{root}",
                "model.name=small_cnn",
                "train.epochs=1",
                "train.device=cpu",
                "train.batch_size=8",
            ],
        ),
        quiet=True,
    )
    splits = run.read_json("run.json")["data_report"]["splits"]
    assert (splits["train"], splits["val"], splits["test"]) == (40, 6, 4)
    assert splits["val_split"] == "the dataset's own val split"
    assert "val_acc" in run.metrics()[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_listed_not_dropped(tmp_path):
    root = write_tree(tmp_path / "tree", two_class_tree(tmp_path))
    locked = root / "train" / "cat" / "0.png"
    locked.chmod(0)
    ds = load_dataset(f"folder:{root}", None)
    assert [s["file"] for s in ds.skipped] == ["train/cat/0.png"]
    assert "cannot read the file" in ds.skipped[0]["reason"]


def test_file_vanishing_between_listing_and_reading_is_listed(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "tree", two_class_tree(tmp_path))
    real = os.open

    def vanishing(path, *args, **kwargs):  # decode.file_bytes opens with os.open (O_NONBLOCK)
        if Path(path).parts[-3:] == ("train", "dog", "1.png"):
            raise FileNotFoundError(2, "No such file or directory")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", vanishing)
    ds = load_dataset(f"folder:{root}", None)
    assert [s["file"] for s in ds.skipped] == ["train/dog/1.png"]
    assert "No such file or directory" in ds.skipped[0]["reason"]


def test_data_info_says_which_keys_to_use_when_it_warns_about_imbalance(tmp_path):
    files = {f"train/cat/{i}.png": png((200, 10 * i, 0)) for i in range(8)}
    files |= {f"train/dog/{i}.png": png((0, 10 * i, 200)) for i in range(2)}
    root = write_tree(tmp_path / "tree", files)
    text = CliRunner().invoke(app, ["data", "info", f"folder:{root}"], catch_exceptions=False).stdout
    assert "class imbalance in train" in text
    assert "train.class_weights=balanced" in text and "data.sampler=balanced" in text
    assert "balanced accuracy and macro-F1" in text
    resolve_config([], ["train.class_weights=balanced", "data.sampler=balanced"])  # the advice works
    balanced = write_tree(tmp_path / "even", two_class_tree(tmp_path))
    text = CliRunner().invoke(app, ["data", "info", f"folder:{balanced}"], catch_exceptions=False).stdout
    assert "class_weights" not in text
