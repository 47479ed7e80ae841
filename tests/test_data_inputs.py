"""More inputs: label CSVs (`csv:PATH`), grey <-> RGB conversion, decode progress, streaming.
Archive caps and refused members: test_archive.py."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest
from test_data import COLOURS, png

from visionbench.data import load_dataset
from visionbench.data.report import check_skipped
from visionbench.errors import VisionbenchError


def write_csv(tmp_path: Path, rows: list[str], header: str = "file,label,split") -> Path:
    """Images for every class in images/<class>_<i>.png, and the CSV naming them."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for cls, colour in COLOURS.items():
        for i in range(4):
            (folder / f"{cls}_{i}.png").write_bytes(png(colour))
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def tree_rows(split_of=lambda i: "train" if i < 3 else "test") -> list[str]:
    return [f"images/{c}_{i}.png,{c},{split_of(i)}" for c in COLOURS for i in range(4)]


def test_csv_labels_and_splits_follow_the_rows(tmp_path):
    ds = load_dataset(f"csv:{write_csv(tmp_path, tree_rows())}", None)
    assert ds.classes == sorted(COLOURS)
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 9, "test": 3}
    for split in ds.splits.values():
        for img, label in zip(split.images, split.labels):  # the pixel colour is the class
            assert tuple(img[:, 0, 0]) == COLOURS[ds.classes[label]]


def test_csv_without_split_column_carves_a_fixed_test_split(tmp_path):
    rows = [f"images/{c}_{i}.png,{c}" for c in COLOURS for i in range(4)]
    ds = load_dataset(f"csv:{write_csv(tmp_path, rows, header='filename,class')}", None)
    assert len(ds.splits["train"]) + len(ds.splits["test"]) == 12
    assert any("stratified 20%" in n for n in ds.notes)


def test_csv_missing_files_are_named_and_count_as_bad(tmp_path):
    rows = tree_rows() + ["images/gone.png,cat,train"]
    ds = load_dataset(f"csv:{write_csv(tmp_path, rows)}", None)
    assert [s["file"] for s in ds.skipped] == ["images/gone.png"]
    assert "labels.csv" in ds.skipped[0]["reason"]
    with pytest.raises(VisionbenchError, match="images/gone.png"):
        check_skipped(ds, strict=True, max_bad_fraction=0.5)
    with pytest.raises(VisionbenchError, match="1 files skipped"):  # 1 of 13 is over 1%
        check_skipped(ds, strict=False, max_bad_fraction=0.01)


def test_csv_file_outside_its_folder_is_not_read(tmp_path):
    (tmp_path.parent / "secret.png").write_bytes(png((1, 2, 3)))
    rows = tree_rows() + ["../secret.png,cat,train"]
    ds = load_dataset(f"csv:{write_csv(tmp_path, rows)}", None)
    assert ds.skipped[0]["file"] == "../secret.png"
    assert "outside" in ds.skipped[0]["reason"]


@pytest.mark.parametrize(
    "header, rows, message",
    [
        ("name,label", ["a.png,cat"], "no file column .*name, label"),
        ("file,species", ["a.png,cat"], "no label column"),
        ("file,label,split", ["images/cat_0.png,cat,holdout"], "unknown split 'holdout'"),
        ("file,label", ["images/cat_0.png,"], "without a file or a label"),
        ("file,label", ["images/cat_0.png,cat", "images/cat_0.png,dog"], "listed twice"),
    ],
)
def test_csv_bad_rows_name_the_line(tmp_path, header, rows, message):
    with pytest.raises(VisionbenchError, match=message):
        load_dataset(f"csv:{write_csv(tmp_path, rows, header=header)}", None)


def test_csv_class_only_in_test_is_refused(tmp_path):
    rows = tree_rows(lambda i: "train") + ["images/bird_0.png,owl,test"]
    with pytest.raises(VisionbenchError, match="owl"):
        load_dataset(f"csv:{write_csv(tmp_path, rows)}", None)


def test_csv_path_that_is_not_a_file(tmp_path):
    with pytest.raises(VisionbenchError, match="not a CSV file"):
        load_dataset(f"csv:{tmp_path}", None)


def test_csv_cache_follows_the_csv(tmp_path):
    path = write_csv(tmp_path, tree_rows())
    first = load_dataset(f"csv:{path}", None)
    path.write_text(path.read_text().replace("images/dog_0.png,dog,train\n", ""))
    second = load_dataset(f"csv:{path}", None)
    assert len(second.splits["train"]) == len(first.splits["train"]) - 1
    assert not np.array_equal(first.fingerprint, second.fingerprint)


def test_to_channels_grey_rgb_round_trip():
    from PIL import Image

    from visionbench.data.split import to_channels

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    grey = to_channels(rgb, 1)
    pil = np.stack([np.asarray(Image.fromarray(x.transpose(1, 2, 0)).convert("L")) for x in rgb])
    assert np.abs(grey[:, 0].astype(int) - pil).max() <= 1  # PIL's own luma, to rounding
    again = to_channels(grey, 3)
    assert again.shape == (5, 3, 4, 6) and (again == grey).all()
    assert to_channels(rgb, 3) is rgb


def test_grey_data_trains_an_rgb_model(tiny_overrides):
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    run = train(resolve_config([], tiny_overrides + ["data.channels=3", "train.epochs=1"]), quiet=True)
    assert len(run.read_json("run.json")["data_report"]["splits"]["mean"]) == 3
    assert run.read_json("summary.json")["test_acc"] > 0.3


def test_decode_progress_reports_every_image():
    from visionbench.data.decode import decode_all, decode_progress

    calls = []
    with decode_progress(lambda done, total: calls.append((done, total))):
        out = decode_all([png((1, 2, 3)), b"junk", png((4, 5, 6))], None)
    assert calls[-1] == (3, 3)
    assert isinstance(out[1], str) and out[0].shape == (8, 8, 3)
    decode_all([png((1, 2, 3))], None)  # outside the block: nobody hears
    assert len(calls) == 1


def noisy_tree(tmp_path: Path, n: int = 6) -> Path:
    """train/test class folders of random 10x10 PNGs (lossless: cached and streamed bytes agree)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for split, count in (("train", n), ("test", 2)):
        for cls in ("ant", "bee", "cow"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(buf, "PNG")
                (root / split / cls / f"{i}.png").write_bytes(buf.getvalue())
    return root


@pytest.mark.parametrize("workers, sampler", [(0, "shuffle"), (2, "shuffle"), (0, "balanced")])
def test_streamed_batches_equal_cached_batches(tmp_path, workers, sampler):
    import torch

    from visionbench.data.loader import TensorLoader
    from visionbench.data.stream import FileImages, StreamLoader

    root = noisy_tree(tmp_path)
    cached = load_dataset(f"folder:{root}", None)
    streamed = load_dataset(f"folder:{root}", None, stream=True)
    assert isinstance(streamed.splits["train"].images, FileImages)
    assert streamed.classes == cached.classes and streamed.shape == cached.shape
    assert np.array_equal(np.asarray(streamed.splits["train"].images), cached.splits["train"].images)
    kw = dict(train=True, crop_padding=2, flip=True, seed=3, sampler=sampler)
    a = TensorLoader(cached.splits["train"].images, cached.splits["train"].labels, 4, **kw)
    b = StreamLoader(
        streamed.splits["train"].images, streamed.splits["train"].labels, 4, workers=workers, **kw
    )
    for epoch in (0, 1):
        for (xa, ya), (xb, yb) in zip(a.epoch(epoch, 1), b.epoch(epoch, 1), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_bad_file_names_it(tmp_path, workers):
    from visionbench.data.stream import StreamLoader

    root = noisy_tree(tmp_path)
    ds = load_dataset(f"folder:{root}", None, stream=True)
    bad = ds.splits["train"].images.files[0]
    bad.write_bytes(b"<html>not a png</html>")
    loader = StreamLoader(ds.splits["train"].images, ds.splits["train"].labels, 18, workers=workers)
    with pytest.raises(VisionbenchError, match="streamed image") as e:
        list(loader.epoch(0))
    assert str(bad) in str(e.value)


def test_stream_refuses_archives(tmp_path):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "photos"), "zip", noisy_tree(tmp_path))
    with pytest.raises(VisionbenchError, match="not from an archive"):
        load_dataset(f"folder:{archive}", None, stream=True)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_streamed_folder_trains_and_evaluates(tmp_path):
    from visionbench.commands.evaluate import evaluate
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    root = noisy_tree(tmp_path, n=8)
    cfg = resolve_config(
        [],
        [
            f"data.name=folder:{root}",
            "data.stream=true",
            "data.workers=0",
            "model.name=small_cnn",
            "model.kwargs={width: 8}",
            "train.epochs=1",
            "train.batch_size=8",
            "train.device=cpu",
        ],
    )
    run = train(cfg, quiet=True)
    report = run.read_json("run.json")["data_report"]
    assert report["splits"]["train"] + report["splits"]["val"] == 24 and any(
        "streamed" in n for n in report["notes"]
    )
    assert evaluate(run.id)["n"] == 6


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_animated_gif_and_multipage_tiff_give_their_first_frame():
    import io

    from PIL import Image

    from visionbench.data.decode import decode

    frames = [Image.new("RGB", (6, 6), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    for fmt in ("GIF", "TIFF"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
        arr = decode(buf.getvalue(), None)
        assert arr.shape == (6, 6, 3)
        assert arr[0, 0].argmax() == 0 and arr[0, 0, 0] > 200, fmt  # red: the first frame


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
@pytest.mark.parametrize("resize", ["crop", "stretch"])
def test_tiny_image_is_resized_up_to_the_dataset_size(tmp_path, resize):
    files = {f"train/{c}/{i}.png": png(colour, size=16) for c, colour in COLOURS.items() for i in range(3)}
    files["train/cat/tiny.png"] = png(COLOURS["cat"], size=1)
    root = tmp_path / "tree"
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    ds = load_dataset(f"folder:{root}", None, img_size=16, resize=resize)
    assert ds.shape == (3, 16, 16) and not ds.skipped
    assert sum(len(s) for s in ds.splits.values()) == 10


def test_data_info_says_what_the_files_were_and_where_the_cache_is(tmp_path):
    import io
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from visionbench.cli import app

    root = tmp_path / "mixed"
    for cls, mode, size in (
        ("a", "RGB", (12, 9)),
        ("a", "L", (12, 9)),
        ("b", "CMYK", (30, 20)),
        ("b", "RGB", (12, 9)),
    ):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            buf = io.BytesIO()
            Image.new(mode, size).save(buf, "JPEG" if mode == "CMYK" else "PNG")
            # named for the class too: one name with the same bytes in two class folders is one
            # multi-label image (data.task)
            (root / cls / f"{cls}{mode}{i}.{'jpg' if mode == 'CMYK' else 'png'}").write_bytes(buf.getvalue())
    res = CliRunner().invoke(app, ["data", "info", f"folder:{root}", "--json"], catch_exceptions=False)
    info = json.loads(res.stdout)
    assert info["originals"] | {"size_chosen_for": None} == {
        "formats": {"PNG": 6, "JPEG": 2},
        "modes": {"RGB": 4, "L": 2, "CMYK": 2},
        "sizes": {"12x9": 6, "30x20": 2},
        "size_chosen_for": None,
    }
    assert "varied sizes (12x9, 30x20)" in info["originals"]["size_chosen_for"]
    assert info["cache"]["folder"].startswith(str(tmp_path)) and info["cache"]["mib"] > 0
    text = CliRunner().invoke(app, ["data", "info", f"folder:{root}"], catch_exceptions=False).stdout
    assert (
        "formats PNG 6, JPEG 2; modes RGB 4, L 2, CMYK 2; sizes 12x9 6, 30x20 2" in text and "cache: " in text
    )


def test_report_and_channel_stats_are_remembered_beside_the_cache(monkeypatch):
    import torch

    import visionbench.data.prepare as prepare_module
    from visionbench.config import resolve_config
    from visionbench.data.prepare import prepare_data

    cfg = resolve_config([], ["data.name=digits"])
    first = prepare_data(cfg, torch.device("cpu"))
    report = first.report
    folder = Path(first.dataset.cache)
    assert len(list(folder.glob("report-*.json"))) == 1 and len(list(folder.glob("stats-0.1-0-*.json"))) == 1
    monkeypatch.setattr(prepare_module, "channel_stats", lambda *a: pytest.fail("stats recomputed"))
    monkeypatch.setattr(prepare_module, "dataset_report", lambda *a: pytest.fail("report recomputed"))
    again = prepare_data(cfg, torch.device("cpu"))
    assert (again.mean, again.std) == (first.mean, first.std) and again.report == report


def test_a_subset_or_converted_copy_never_reads_the_whole_datasets_stats():
    import torch

    from visionbench.config import resolve_config
    from visionbench.data.prepare import prepare_data

    whole = prepare_data(resolve_config([], ["data.name=digits"]), torch.device("cpu"))
    whole.report  # noqa: B018  (remembered now)
    subset = prepare_data(
        resolve_config([], ["data.name=digits", "data.classes=[0, 1]"]), torch.device("cpu")
    )
    grey3 = prepare_data(resolve_config([], ["data.name=digits", "data.channels=3"]), torch.device("cpu"))
    assert subset.dataset.cache == whole.dataset.cache  # the same cache folder ...
    assert subset.mean != whole.mean and subset.report["classes"] == ["0", "1"]  # ... its own values
    assert len(grey3.mean) == 3 and grey3.report["shape"] == [3, 8, 8]
    assert len(list(Path(whole.dataset.cache).glob("stats-*.json"))) == 3


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 12345\n"


def test_a_folder_of_git_lfs_pointers_is_a_clear_error(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "pics" / cls / f"{i}.jpg").write_bytes(LFS_POINTER)
    with pytest.raises(VisionbenchError, match="no readable train images: 6 files skipped") as exc:
        load_dataset(f"folder:{tmp_path / 'pics'}", None)
    assert "git lfs pull" in str(exc.value)


def test_a_label_csv_whose_files_are_all_missing_is_a_clear_error(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,cat\nb.png,dog\nc.png,cat\n")
    with pytest.raises(VisionbenchError, match="no readable train images: 3 files skipped, e.g. a.png"):
        load_dataset(f"csv:{tmp_path / 'labels.csv'}", None)


def test_a_test_split_of_unreadable_files_is_named_never_replaced_by_a_carved_one(tmp_path):
    path = write_csv(tmp_path, tree_rows())  # 3 train and 1 test image per class
    for c in COLOURS:
        (tmp_path / "images" / f"{c}_3.png").write_bytes(b"<html>not found</html>")
    with pytest.raises(VisionbenchError, match="no readable test images: 3 files skipped"):
        load_dataset(f"csv:{path}", None)


def class_folders(root: Path, n: int = 6) -> Path:
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(png(colour))
    return root


def test_folder_dot_never_reads_runs_or_cache_folders_as_classes(tmp_path, monkeypatch):
    from visionbench.runs import Run

    monkeypatch.chdir(class_folders(tmp_path))
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))  # both inside the data folder
    run = Run.create(tmp_path / "runs", "r", files={"config.yaml": "seed: 0\n", "environment.json": "{}"})
    (run.path / "curves.png").write_bytes(png((1, 2, 3)))
    early = tmp_path / "more-runs" / "early"  # a runs folder whose one run has no figure yet
    early.mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        (early / name).write_text("{}")
    ds = load_dataset("folder:.")
    assert ds.classes == sorted(COLOURS)
    assert sum(len(s) for s in ds.splits.values()) == 6 * len(COLOURS)
    (run.path / "confusion.png").write_bytes(png((3, 2, 1)))  # what a run writes meanwhile ...
    assert load_dataset("folder:.").cache == ds.cache  # ... never changes the data's cache key


@pytest.mark.parametrize("name", ["folder:", "csv:", "folder: "])
def test_a_dataset_path_left_empty_is_an_error_never_the_current_folder(name):
    from visionbench.config import resolve_config

    with pytest.raises(VisionbenchError, match="names no path"):
        resolve_config([], [f"data.name={name}"])
    with pytest.raises(VisionbenchError, match="names no path"):
        resolve_config([], cli={"data": {"name": name}})  # --data
    with pytest.raises(VisionbenchError, match="names no path"):
        load_dataset(name)


def test_a_run_on_a_relative_folder_finds_its_data_from_another_folder(tmp_path, monkeypatch):
    import torch

    from visionbench.config import dump_config, resolve_config
    from visionbench.runs import Run
    from visionbench.runs.reopen import verified_data

    class_folders(tmp_path / "work" / "pics")
    monkeypatch.chdir(tmp_path / "work")
    cfg = resolve_config([], ["data.name=folder:pics", "data.dir=."])
    assert cfg.data.name == f"folder:{tmp_path / 'work' / 'pics'}" and cfg.data.dir == str(tmp_path / "work")
    run = Run.create(tmp_path / "runs", "rel", files={"config.yaml": dump_config(cfg)})  # as train saves it
    monkeypatch.chdir(tmp_path)
    data = verified_data(run, run.config(), torch.device("cpu"))  # what eval and predict read
    assert data.dataset.classes == sorted(COLOURS)


def test_a_class_whose_every_file_is_unreadable_is_an_error_not_a_dead_class(tmp_path):
    root = class_folders(tmp_path / "pics")
    for f in (root / "cat").iterdir():
        f.write_bytes(b"")  # zero-byte files: a sync that never finished
    with pytest.raises(VisionbenchError, match="no readable images of class cat: 6 files skipped"):
        load_dataset(f"folder:{root}")  # even with data.max_bad_fraction=1 (checked later)


def test_an_img_size_far_above_the_images_is_one_warning_line_naming_the_key(tmp_path):
    import json

    from typer.testing import CliRunner

    from visionbench.cli import app

    root = tmp_path / "small"
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(5):
            (root / cls / f"{i}.png").write_bytes(png(colour, size=8))
    # twice the images' side is not warned about; the cache stores what was found
    assert "upscaled" not in load_dataset(f"folder:{root}", None, img_size=16).originals
    args = ["train", "--data", f"folder:{root}", "--model", "small_cnn", "--epochs", "1", "--device", "cpu"]
    res = CliRunner().invoke(
        app, [*args, "--name", "up", "data.img_size=32", "model.kwargs={width: 8}"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    said = [line for line in res.output.splitlines() if "upscales" in line]
    assert len(said) == 1 and said[0].startswith("warning: data.img_size=32 upscales the images")
    assert "typically 8" in said[0] and "16x their pixels" in said[0] and "set data.img_size=N" in said[0]
    run_json = json.loads((tmp_path / "runs" / "up" / "run.json").read_text())
    assert [c for c in run_json["choices"] if "upscales" in c] == [said[0]]


def test_an_ensemble_of_a_streamed_and_a_cached_run_says_why_it_is_refused(tmp_path):
    """Their fingerprints differ by design (a streamed one names the files, a cached one hashes
    the pixels): the refusal says so and how to fix it, not "different data"."""
    from visionbench.commands.ensemble import build_ensemble
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    root = noisy_tree(tmp_path, n=4)
    base = [f"data.name=folder:{root}", "model.name=small_cnn", "model.kwargs={width: 8}", "train.epochs=1"]
    base += ["train.batch_size=8", "train.device=cpu", "data.workers=0"]
    for name, more in (("cached", []), ("streamed", ["data.stream=true"]), ("other", ["data.img_size=8"])):
        train(resolve_config([], [*base, *more, f"name={name}"]), quiet=True)
    with pytest.raises(VisionbenchError, match="'streamed' streamed its images from the files") as e:
        build_ensemble(["cached", "streamed"])
    assert "cannot be shown to share their test data" in str(e.value)
    assert e.value.fix == (
        "ensemble runs that read their data the same way: train 'streamed' again without data.stream, "
        "or 'cached' with data.stream=true"
    )
    with pytest.raises(VisionbenchError, match="data.img_size None vs 8") as e:
        build_ensemble(["cached", "other"])
    assert e.value.fix.endswith("train 'other' again with data.img_size=null")


def named_classes(root: Path, names: list[str], per_class: int = 5) -> Path:
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            (root / name / f"{j}.png").write_bytes(png((40 * i, 10 * j, 0)))
    return root


def test_a_class_name_is_one_class_however_its_accents_are_encoded(tmp_path):
    nfc, nfd = "caf\u00e9", "cafe\u0301"  # print alike: é as one code point, or e + U+0301 (macOS)
    ds = load_dataset(f"folder:{named_classes(tmp_path / 'photos', [nfc, nfd, 'tea'])}", None)
    assert ds.classes == [nfc, "tea"]
    assert sum(int((s.labels == 0).sum()) for s in ds.splits.values()) == 10
    rows = [f"images/{c}_{i}.png,{label},train" for c in COLOURS for i, label in enumerate([nfc, nfd, c, c])]
    assert load_dataset(f"csv:{write_csv(tmp_path, rows)}", None).classes == sorted([*COLOURS, nfc])


def test_class_names_that_differ_only_by_leading_zeros_are_one_warning_naming_both(tmp_path):
    from visionbench.data.report import dataset_report

    ds = load_dataset(
        f"folder:{named_classes(tmp_path / 'photos', ['01', '1', '2', 'img_07', 'img_7'])}", None
    )
    warned = [w for w in dataset_report(ds)["warnings"] if "leading zeros" in w]
    assert warned == [
        "classes '01' and '1' differ only by leading zeros: they are 2 classes; if they are one, give them one name",
        "classes 'img_07' and 'img_7' differ only by leading zeros: they are 2 classes; if they are one, give them one name",
    ]


@contextmanager
def writer_after(fifo: Path, seconds: float = 10):
    """Opening a FIFO to read waits for a writer: one comes every `seconds` and closes at once
    (the reader gets an empty file), so code that waits fails its test instead of hanging it."""
    done = threading.Event()

    def write():
        while not done.wait(seconds):
            with suppress(OSError):  # no reader yet
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=write, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def test_a_fifo_a_label_csv_lists_is_skipped_with_the_reason_never_waited_on(tmp_path):
    path = write_csv(tmp_path, tree_rows() + ["images/pipe.png,cat,train"])
    os.mkfifo(tmp_path / "images" / "pipe.png")
    with writer_after(tmp_path / "images" / "pipe.png"):
        ds = load_dataset(f"csv:{path}", None)
    assert ds.skipped == [{"file": "images/pipe.png", "reason": "not a regular file (a FIFO): not read"}]


@pytest.mark.parametrize("fmt, lossy", [("JPEG", True), ("PNG", False)])
def test_a_cifar10_image_folder_copy_is_said_to_be_one_and_lossy_when_it_is(tmp_path, fmt, lossy):
    """A figure on a copy of CIFAR-10 is not a figure on CIFAR-10: a JPEG copy scores lower
    (a write-up's number was made on the official images), so the data report says so."""
    from PIL import Image

    from visionbench.data.official import CIFAR10_CLASSES, read_cifar10

    root = tmp_path / "cifar10"
    for split in ("train", "test"):
        for i, cls in enumerate(CIFAR10_CLASSES):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(root / split / cls / f"0.{fmt.lower()}", fmt)
    notes = read_cifar10(root).notes
    assert len(notes) == 1 and "not the official distribution (cifar-10-python.tar.gz)" in notes[0]
    assert f"20 {fmt}" in notes[0]
    assert ("lossy" in notes[0]) is lossy
