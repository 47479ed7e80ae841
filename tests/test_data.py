"""The data layer as users rely on it: official layouts found and decoded, bad files refused
with a useful message, the array cache, and checksum-verified downloads (no network).

Every dataset here is tiny and built by the test itself in exactly the official layout."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import Malicious
from PIL import Image

from visionbench.data import SOURCES, download_dataset, load_dataset
from visionbench.data.decode import decode
from visionbench.data.download import Remote, download
from visionbench.errors import VisionbenchError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The array cache lives in the test's tmp dir, never in the user's home."""
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VISIONBENCH_DATA", raising=False)


# --- MNIST: IDX files -------------------------------------------------------------------------
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_mnist(folder: Path, n_train=6, n_test=4, gz=True, seed=0) -> dict:
    """The four official IDX files in `folder`; returns {split: (images, labels)} as written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for stem, arr in zip(IDX_STEMS[split], (images, labels)):
            blob = idx_bytes(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / stem).write_bytes(blob)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "uncompressed"])
def test_mnist_idx_official_layout(tmp_path, gz):
    written = write_mnist(tmp_path / "MNIST" / "raw", n_train=7, n_test=3, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.classes == [str(i) for i in range(10)]
    assert set(ds.splits) == {"train", "test"}
    for split, (images, labels) in written.items():
        s = ds.splits[split]
        assert s.images.shape == (len(labels), 1, 28, 28)
        assert s.images.dtype == np.uint8
        np.testing.assert_array_equal(s.images[:, 0], images)
        np.testing.assert_array_equal(s.labels, labels.astype(np.int64))
    assert ds.shape == (1, 28, 28)


def test_mnist_other_documented_folder(tmp_path):
    """<root>/mnist/ is also searched; the bare root is not (Fashion-MNIST has the same file names)."""
    written = write_mnist(tmp_path / "mnist", seed=3)
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.splits["test"].labels, written["test"][1])
    write_mnist(tmp_path / "bare", seed=3)
    with pytest.raises(VisionbenchError, match="not found"):
        load_dataset("mnist", tmp_path / "bare")


def test_mnist_partial_folder_names_the_missing_file(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(VisionbenchError) as e:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz") in str(e.value)


@pytest.mark.parametrize(
    "stem, corrupt",
    [
        ("t10k-labels-idx1-ubyte.gz", "bad_magic"),
        ("train-images-idx3-ubyte.gz", "truncated_gzip"),
        ("train-labels-idx1-ubyte.gz", "not_gzip"),
        ("t10k-images-idx3-ubyte.gz", "short_body"),
    ],
)
def test_mnist_corrupt_file_names_the_file(tmp_path, stem, corrupt):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    f = raw / stem
    blob = gzip.decompress(f.read_bytes())
    if corrupt == "bad_magic":  # 0x0B: int32 data, not unsigned bytes
        f.write_bytes(gzip.compress(b"\x00\x00\x0b" + blob[3:]))
    elif corrupt == "truncated_gzip":
        whole = f.read_bytes()
        f.write_bytes(whole[: len(whole) // 2])
    elif corrupt == "not_gzip":
        f.write_bytes(b"<html>404 Not Found</html>" * 10)
    else:  # the header promises more bytes than there are
        f.write_bytes(gzip.compress(blob[:-100]))
    with pytest.raises(VisionbenchError) as err:
        load_dataset("mnist", tmp_path)
    assert stem in str(err.value)


def test_mnist_images_labels_count_mismatch(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(VisionbenchError, match="6 images but 5 labels"):
        load_dataset("mnist", tmp_path)


def test_mnist_swapped_image_and_label_files_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    img, lbl = raw / "train-images-idx3-ubyte.gz", raw / "train-labels-idx1-ubyte.gz"
    a, b = img.read_bytes(), lbl.read_bytes()
    img.write_bytes(b)
    lbl.write_bytes(a)
    with pytest.raises(VisionbenchError, match=r"(?s)found 1 and 3 dims.*the files look swapped"):
        load_dataset("mnist", tmp_path)


# --- missing / unknown datasets -------------------------------------------------------------------
def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VisionbenchError) as err:
        load_dataset("mnist", empty)
    msg = str(err.value)
    assert "not found" in msg
    assert str(empty / "MNIST" / "raw") in msg
    assert str(empty / "mnist") in msg
    assert "--data-dir" in msg
    assert "visionbench data download mnist" in msg


def test_unknown_dataset_suggests_nearest(tmp_path):
    with pytest.raises(VisionbenchError) as err:
        load_dataset("mnst", tmp_path)
    assert "Did you mean 'mnist'?" in str(err.value)
    assert "cifar10" in str(err.value)  # the valid choices are listed


# --- CIFAR-10: official python pickles -------------------------------------------------------------
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_batches(n=2, seed=0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    out = {}
    for f in CIFAR_FILES:
        out[f] = {
            b"batch_label": f"batch {f}".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{f}_{i}.png".encode() for i in range(n)],
        }
    return out


def write_cifar(root: Path, batches: dict, as_tar: bool, blobs: dict | None = None) -> None:
    blobs = {f: pickle.dumps(d, protocol=2) for f, d in batches.items()} | (blobs or {})
    if as_tar:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tf:
            for f, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{f}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for f, blob in blobs.items():
            (folder / f).write_bytes(blob)


@pytest.mark.parametrize("as_tar", [False, True], ids=["extracted", "tar.gz"])
def test_cifar10_official_pickles_nchw(tmp_path, as_tar):
    batches = cifar_batches(n=3)
    write_cifar(tmp_path, batches, as_tar)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and len(ds.classes) == 10
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.images.dtype == np.uint8
    want_train = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == want_train
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    # a row is the R plane, then G, then B, each 32x32 row-major
    row = batches["data_batch_2"][b"data"][1]
    img = train.images[3 + 1]
    for c, i, j in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (1, 5, 7), (2, 31, 31), (2, 17, 3)]:
        assert img[c, i, j] == row[c * 1024 + i * 32 + j]
    np.testing.assert_array_equal(img, row.reshape(3, 32, 32))
    np.testing.assert_array_equal(
        test.images[2, 1], batches["test_batch"][b"data"][2, 1024:2048].reshape(32, 32)
    )


@pytest.mark.parametrize("how", ["os.system", "exec"])
@pytest.mark.parametrize("as_tar", [False, True], ids=["extracted", "tar.gz"])
def test_cifar10_malicious_pickle_refused(tmp_path, how, as_tar):
    sentinel = tmp_path / "pwned"
    if how == "os.system":
        evil = Malicious(os.system, f"touch '{sentinel}'")
    else:
        evil = Malicious(exec, f"open({str(sentinel)!r}, 'w').write('x')")
    payload = {b"data": evil, b"labels": [0, 1]}
    blob = pickle.dumps(payload, protocol=2)
    write_cifar(tmp_path / "data", cifar_batches(), as_tar, blobs={"data_batch_3": blob})
    with pytest.raises(VisionbenchError) as err:
        load_dataset("cifar10", tmp_path / "data")
    assert "data_batch_3" in str(err.value)
    assert not sentinel.exists()
    # the payload is live: a plain pickle.loads would have run it
    pickle.loads(blob)
    assert sentinel.exists()


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        {b"labels": [0, 1]},
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]},
    ],
    ids=["not-a-dict", "no-data", "wrong-row-size", "label-count-mismatch"],
)
def test_cifar10_malformed_batch_is_a_user_error(tmp_path, bad):
    write_cifar(tmp_path, cifar_batches(), False, blobs={"test_batch": pickle.dumps(bad, protocol=2)})
    with pytest.raises(VisionbenchError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_tar_missing_batch(tmp_path):
    batches = cifar_batches()
    del batches["data_batch_4"]
    write_cifar(tmp_path, batches, True)
    with pytest.raises(VisionbenchError, match="data_batch_4"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_extracted_missing_batch(tmp_path):
    write_cifar(tmp_path, cifar_batches(), False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(VisionbenchError, match="data_batch_4"):
        load_dataset("cifar10", tmp_path)


# --- ImageFolder trees ---------------------------------------------------------------------------
COLOURS = {"dog": (200, 10, 10), "cat": (10, 200, 10), "bird": (10, 10, 200)}
N_TRAIN, N_TEST = 3, 2


def png(colour, size=8, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()[: buf.tell() // 2]


def image_tree() -> dict[str, bytes]:
    """relative path -> bytes of a train/test tree with the usual junk a real one has."""
    files = {}
    for cls, colour in COLOURS.items():
        for i in range(N_TRAIN):
            files[f"train/{cls}/{i}.png"] = png(colour)
        for i in range(N_TEST):
            files[f"test/{cls}/{i}.png"] = png(colour)
    files.update(
        {
            ".DS_Store": b"\0\0\0\1Bud1",
            "train/cat/.DS_Store": b"\0\0\0\1Bud1",
            "train/cat/._0.png": b"\0\5\26\7 AppleDouble resource fork",
            "train/dog/notes.txt": b"not an image",
            "test/bird/labels.csv": b"a,b\n",
            "train/dog/broken.jpg": truncated_jpeg(),
            "test/cat/garbage.jpg": b"this is not a jpeg at all" * 20,
        }
    )
    return files


def materialise(files: dict[str, bytes], tmp_path: Path, kind: str, wrapper: str = "") -> Path:
    prefix = f"{wrapper}/" if wrapper else ""
    if kind == "dir":
        root = tmp_path / "tree"
        for rel, blob in files.items():
            p = root / prefix / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
        return root
    if kind == "zip":
        root = tmp_path / "tree.zip"
        with zipfile.ZipFile(root, "w") as zf:
            for rel, blob in files.items():
                zf.writestr(prefix + rel, blob)
            zf.writestr("__MACOSX/train/cat/._1.png", b"resource fork")
        return root
    root = tmp_path / "tree.tar.gz"
    with tarfile.open(root, "w:gz") as tf:
        for rel, blob in files.items():
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return root


@pytest.mark.parametrize(
    "kind, wrapper",
    [("dir", ""), ("zip", ""), ("zip", "mydata"), ("tar.gz", "mydata"), ("dir", "mydata")],
)
def test_image_folder_layouts(tmp_path, kind, wrapper):
    path = materialise(image_tree(), tmp_path, kind, wrapper)
    ds = load_dataset(f"folder:{path}", None)
    assert ds.classes == ["bird", "cat", "dog"]
    assert set(ds.splits) == {"train", "test"}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        s = ds.splits[split]
        assert s.images.shape == (3 * n, 3, 8, 8) and s.images.dtype == np.uint8
        assert np.bincount(s.labels, minlength=3).tolist() == [n, n, n]
        for img, label in zip(s.images, s.labels):  # label follows the class folder's name
            colour = COLOURS[ds.classes[label]]
            assert (img == np.array(colour, np.uint8).reshape(3, 1, 1)).all()
    # junk is ignored; only the two unreadable images are reported, by name
    skipped = sorted(s["file"] for s in ds.skipped)
    assert len(skipped) == 2, ds.skipped
    assert skipped[0].endswith("test/cat/garbage.jpg") and skipped[1].endswith("train/dog/broken.jpg")
    assert all(s["reason"] for s in ds.skipped)
    assert ds.notes == []


def test_image_folder_class_only_in_test_is_refused(tmp_path):
    files = {
        "train/cat/0.png": png((1, 2, 3)),
        "test/cat/0.png": png((1, 2, 3)),
        "test/cow/0.png": png((3, 2, 1)),
    }
    with pytest.raises(VisionbenchError, match="cow"):
        load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None)


@pytest.mark.parametrize("kind, wrapper", [("dir", ""), ("zip", "mydata")])
@pytest.mark.parametrize("split", ["test", "val"])
def test_image_folder_with_no_train_split_is_refused_not_read_as_classes(tmp_path, kind, wrapper, split):
    files = {f"{split}/{cls}/{i}.png": png(COLOURS[cls]) for cls in ("cat", "dog") for i in range(2)}
    path = materialise(files, tmp_path, kind, wrapper)
    with pytest.raises(VisionbenchError, match=f"no train/ split: the folder has {split}/ only") as e:
        load_dataset(f"folder:{path}", None)
    assert f"put the training images in train/<class>/<image> beside {split}/" in e.value.fix


def test_image_folder_with_train_split_alone_is_the_training_set(tmp_path):
    files = {f"train/{cls}/{i}.png": png(COLOURS[cls]) for cls in ("cat", "dog") for i in range(5)}
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None)
    assert ds.classes == ["cat", "dog"] and len(ds.splits["train"]) + len(ds.splits["test"]) == 10


def test_image_folder_without_splits_carves_stratified_test(tmp_path):
    counts = {"a": 10, "b": 5, "c": 20}
    files = {}
    for ci, (cls, n) in enumerate(counts.items()):
        for i in range(n):  # each image a unique colour, so train/test can be told apart
            files[f"{cls}/{i:02d}.png"] = png((ci * 50, i * 10, 7))
    path = materialise(files, tmp_path, "dir")
    ds = load_dataset(f"folder:{path}", None)
    assert ds.classes == ["a", "b", "c"]
    train, test = ds.splits["train"], ds.splits["test"]
    assert np.bincount(test.labels).tolist() == [2, 1, 4]  # 20% of each class
    assert np.bincount(train.labels).tolist() == [8, 4, 16]
    seen = {
        (int(x[0, 0, 0]), int(x[1, 0, 0]), int(y)) for s in (train, test) for x, y in zip(s.images, s.labels)
    }
    want = {(ci * 50, i * 10, ci) for ci, n in enumerate(counts.values()) for i in range(n)}
    assert seen == want  # disjoint and complete, labels by folder name
    assert len(ds.notes) == 1 and "test" in ds.notes[0] and "20%" in ds.notes[0]
    again = load_dataset(f"folder:{path}", None)  # the carved split is fixed
    np.testing.assert_array_equal(again.splits["test"].images, test.images)


def test_image_folder_stray_top_level_image_keeps_splits(tmp_path):
    files = {k: v for k, v in image_tree().items() if k.endswith(".png") and "/." not in k}
    files["preview.png"] = png((0, 0, 0))
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None)
    assert len(ds.splits["train"]) == 3 * N_TRAIN and len(ds.splits["test"]) == 3 * N_TEST
    assert ds.notes == []


def test_image_folder_img_size_option(tmp_path):
    files = {
        "train/a/0.png": png((9, 9, 9), size=12),
        "train/a/1.png": png((9, 9, 9), size=20),
        "test/a/0.png": png((9, 9, 9), size=16),
        "train/b/0.png": png((1, 1, 1), size=14),
    }
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None, img_size=10)
    assert ds.splits["train"].images.shape == (3, 3, 10, 10)
    assert ds.splits["test"].images.shape == (1, 3, 10, 10)


def test_image_folder_mixed_sizes_use_a_typical_size(tmp_path):
    """Without img_size, images of varied sizes are fitted to a typical one: the lower median of
    their shorter sides (12 here, of 12, 12, 14, 20), at most 224."""
    files = {
        "train/a/0.png": png((9, 9, 9), size=12),
        "train/a/1.png": png((9, 9, 9), size=20),
        "test/a/0.png": png((9, 9, 9), size=12),
        "train/b/0.png": png((1, 1, 1), size=14),
    }
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None)
    assert ds.splits["train"].images.shape == (3, 3, 12, 12)
    assert ds.splits["test"].images.shape == (1, 3, 12, 12)


def _png_of(arr: np.ndarray, mode: str | None = None, palette: list[int] | None = None, **save) -> bytes:
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    if palette is not None:
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def test_colour_modes_convert_to_rgb():
    # RGBA: alpha composited onto black
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)
    rgba[0, 1] = (200, 100, 50, 0)
    rgba[1, 0] = (200, 100, 50, 128)
    out = decode(_png_of(rgba), None)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [200, 100, 50]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert np.abs(out[1, 0].astype(int) - [100, 50, 25]).max() <= 1
    # L: grey replicated to three channels
    grey = decode(_png_of(np.array([[0, 77], [128, 255]], np.uint8)), None)
    assert grey[:, :, 0].tolist() == [[0, 77], [128, 255]]
    assert (grey == grey[:, :, :1]).all()
    # P: palette looked up; a transparent palette entry becomes black
    palette = [10, 20, 30, 40, 50, 60] + [0] * (768 - 6)
    p = np.array([[0, 1], [1, 0]], np.uint8)
    out = decode(_png_of(p, "P", palette), None)
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [40, 50, 60]
    out = decode(_png_of(p, "P", palette, transparency=1), None)
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [0, 0, 0]
    # deterministic
    assert np.array_equal(decode(_png_of(rgba), None), decode(_png_of(rgba), None))


def test_16bit_png_scaled_not_saturated():
    arr = np.array([[0, 32768], [65535, 25600]], np.uint16)
    blob = _png_of(arr)
    assert Image.open(io.BytesIO(blob)).mode.startswith("I")  # really a 16-bit image
    out = decode(blob, None)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[1, 0].tolist() == [255, 255, 255]
    assert abs(int(out[0, 1, 0]) - 128) <= 1
    assert abs(int(out[1, 1, 0]) - 100) <= 1


def test_dark_16bit_png_stays_dark():
    out = decode(_png_of(np.array([[0, 100], [200, 255]], np.uint16)), None)
    assert out.max() <= 1


def test_float_tiff_in_0_1_is_scaled_like_16_bit_not_black():
    arr = np.array([[0.0, 0.5], [1.0, 0.1]], np.float32)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "F"  # really 32-bit floats
    out = decode(buf.getvalue(), None)
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 128], [255, 26]]
    arr[0, 0] = np.nan  # no pixel value stands for NaN: a reason, never a silent black pixel
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "TIFF")
    assert "NaN or infinite pixel values" in decode(buf.getvalue(), None)


def test_folder_of_mixed_modes(tmp_path):
    files = {
        "train/a/rgb.png": png((30, 60, 90)),
        "train/a/grey.png": png(77, mode="L"),
        "train/b/rgba.png": png((30, 60, 90, 0), mode="RGBA"),
        "train/b/p16.png": _png_of(np.full((8, 8), 65535, np.uint16)),
        "test/a/0.png": png((1, 2, 3)),
    }
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'dir')}", None)
    x = ds.splits["train"].images
    assert x.shape == (4, 3, 8, 8) and ds.skipped == []
    # sorted: a/grey, a/rgb, b/p16, b/rgba
    assert [x[i, :, 0, 0].tolist() for i in range(4)] == [[77] * 3, [30, 60, 90], [255] * 3, [0, 0, 0]]


# --- the real data --------------------------------------------------------------------------------
def shared_data() -> Path:
    here = Path(__file__).resolve().parents[2] / "shared" / "data"
    if here.is_dir():
        return here
    env = os.environ.get("VISIONBENCH_SHARED_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    pytest.skip(f"real data not available: no {here} and VISIONBENCH_SHARED_DATA not set to a folder")


def test_real_mnist():
    root = shared_data()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST/raw/*.gz under {root}")
    ds = load_dataset("mnist", root)
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(train.labels).tolist()[:2] == [5923, 6742]


# --- the array cache ------------------------------------------------------------------------------
def _is_memmap(a: np.ndarray) -> bool:
    return isinstance(a, np.memmap) or isinstance(a.base, np.memmap) or not a.flags.writeable


def test_cache_second_load_is_memory_mapped_and_equal(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    first = load_dataset("mnist", tmp_path)
    assert not _is_memmap(first.splits["train"].images)  # decoded, not from the cache
    cache_dirs = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(cache_dirs) == 1
    second = load_dataset("mnist", tmp_path)
    assert _is_memmap(second.splits["train"].images)
    assert second.fingerprint == first.fingerprint and len(first.fingerprint) == 64
    assert second.classes == first.classes
    assert second.source == first.source == str(tmp_path / "MNIST" / "raw")
    for split in ("train", "test"):
        np.testing.assert_array_equal(second.splits[split].images, first.splits[split].images)
        np.testing.assert_array_equal(second.splits[split].labels, first.splits[split].labels)
        assert second.splits[split].labels.dtype == np.int64


def test_cache_invalidated_when_source_changes(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    old = write_mnist(raw, seed=1)
    first = load_dataset("mnist", tmp_path)
    new = write_mnist(raw, seed=2)  # same sizes, different content
    second = load_dataset("mnist", tmp_path)
    assert second.fingerprint != first.fingerprint
    np.testing.assert_array_equal(second.splits["train"].images[:, 0], new["train"][0])
    assert not np.array_equal(old["train"][0], new["train"][0])
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_cache_keeps_skipped_and_notes(tmp_path):
    files = {
        "a/0.png": png((1, 1, 1)),
        "a/1.png": png((2, 2, 2)),
        "b/0.png": png((3, 3, 3)),
        "b/1.png": png((4, 4, 4)),
        "b/bad.png": b"nope",
    }
    path = materialise(files, tmp_path, "dir")
    first = load_dataset(f"folder:{path}", None)
    second = load_dataset(f"folder:{path}", None)
    assert _is_memmap(second.splits["train"].images)
    assert second.skipped == first.skipped and len(first.skipped) == 1
    assert second.notes == first.notes and len(first.notes) == 1


# --- downloads, with file:// URLs -----------------------------------------------------------------
def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed: conftest forbids them (VISIONBENCH_OFFLINE=1), and so may the user's HF_HUB_OFFLINE."""
    monkeypatch.setenv("VISIONBENCH_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_download_file_url_checksum_ok(tmp_path, online):
    src = tmp_path / "src" / "thing.bin"
    src.parent.mkdir()
    src.write_bytes(b"official bytes" * 1000)
    dest = tmp_path / "dest"
    path = download(Remote(src.as_uri(), "thing.bin", md5(src.read_bytes())), dest)
    assert path == dest / "thing.bin"
    assert path.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["thing.bin"]
    # present with the right checksum: not fetched again (the source may be gone)
    src.unlink()
    assert download(Remote(src.as_uri(), "thing.bin", md5(path.read_bytes())), dest) == path


def test_download_wrong_md5_leaves_nothing(tmp_path, online):
    src = tmp_path / "thing.bin"
    src.write_bytes(b"tampered bytes")
    dest = tmp_path / "dest"
    with pytest.raises(VisionbenchError, match="checksum mismatch"):
        download(Remote(src.as_uri(), "thing.bin", md5(b"official bytes")), dest)
    assert list(dest.iterdir()) == []


def test_download_missing_url_leaves_nothing(tmp_path, online):
    dest = tmp_path / "dest"
    with pytest.raises(VisionbenchError, match="cannot download") as err:
        download(Remote((tmp_path / "nope.bin").as_uri(), "nope.bin", md5(b"")), dest)
    assert str(dest / "nope.bin") in str(err.value)  # tells where to put it by hand
    assert list(dest.iterdir()) == []


def test_download_replaces_corrupt_existing_file(tmp_path, online):
    src = tmp_path / "thing.bin"
    src.write_bytes(b"good")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "thing.bin").write_bytes(b"half a downl")
    download(Remote(src.as_uri(), "thing.bin", md5(b"good")), dest)
    assert (dest / "thing.bin").read_bytes() == b"good"


def test_download_dataset_from_local_mirror(tmp_path, monkeypatch, online):
    mirror = tmp_path / "mirror"
    written = write_mnist(mirror, seed=5)  # four small, valid .gz IDX files
    source = SOURCES["mnist"]
    remotes = [
        Remote(
            f"https://unreachable.invalid/{r.filename}", r.filename, md5((mirror / r.filename).read_bytes())
        )
        for r in source.remotes
    ]
    assert len(remotes) == 4
    monkeypatch.setattr(source, "remotes", remotes)
    root = tmp_path / "data"
    paths = download_dataset("mnist", root, mirror=mirror.as_uri() + "/")
    raw = root / "MNIST" / "raw"
    assert sorted(paths) == sorted(raw / r.filename for r in remotes)
    assert sorted(p.name for p in raw.iterdir()) == sorted(r.filename for r in remotes)
    for p in paths:
        assert p.read_bytes() == (mirror / p.name).read_bytes()
    # what was downloaded is found where load_dataset looks
    ds = load_dataset("mnist", root)
    np.testing.assert_array_equal(ds.splits["train"].labels, written["train"][1])


def test_download_dataset_bad_mirror_file(tmp_path, monkeypatch, online):
    mirror = tmp_path / "mirror"
    write_mnist(mirror)
    source = SOURCES["mnist"]
    monkeypatch.setattr(
        source, "remotes", [Remote("https://x.invalid/a", r.filename, "0" * 32) for r in source.remotes]
    )
    with pytest.raises(VisionbenchError, match="checksum mismatch"):
        download_dataset("mnist", tmp_path / "data", mirror=mirror.as_uri())
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []


def test_download_dataset_nothing_to_download(tmp_path):
    with pytest.raises(VisionbenchError, match="nothing to download"):
        download_dataset("digits", tmp_path)


def test_cifar10_extracted_missing_first_batch_names_it(tmp_path):
    write_cifar(tmp_path, cifar_batches(), False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    with pytest.raises(VisionbenchError, match=r"missing CIFAR-10 files: data_batch_1\n"):
        load_dataset("cifar10", tmp_path)


def test_download_bad_url_is_a_clear_error_and_leaves_nothing(tmp_path, online):
    remote = Remote("not-a-url/x.gz", "x.gz", "0" * 32)
    with pytest.raises(VisionbenchError, match="cannot download"):
        download(remote, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []
