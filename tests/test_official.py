"""The official layouts of Fashion-MNIST, CIFAR-100, SVHN and Tiny ImageNet, as users download them.

Every dataset here is a miniature built by the test itself in exactly the official layout:
the same file names, pickle keys, MATLAB variable names and folder structure, fewer images."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import Malicious
from PIL import Image
from scipy.io import savemat

from visionbench.data import SOURCES, download_dataset, load_dataset
from visionbench.data.download import Remote
from visionbench.errors import VisionbenchError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The array cache lives in the test's tmp dir, never in the user's home."""
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VISIONBENCH_DATA", raising=False)


def _is_memmap(a: np.ndarray) -> bool:
    return isinstance(a, np.memmap) or isinstance(a.base, np.memmap) or not a.flags.writeable


# --- Fashion-MNIST: IDX files under FashionMNIST/raw ---------------------------------------------
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_gz(arr: np.ndarray) -> bytes:
    """A gzipped unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian dims, the bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + np.ascontiguousarray(arr, np.uint8).tobytes())


def write_idx(folder: Path, seed=0) -> dict:
    """The four official .gz files in `folder`; returns {split: (images, labels)} as written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", 6), ("test", 4)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for stem, arr in zip(IDX_STEMS[split], (images, labels)):
            (folder / f"{stem}.gz").write_bytes(idx_gz(arr))
        written[split] = (images, labels)
    return written


def test_fashion_mnist_torchvision_layout(tmp_path):
    written = write_idx(tmp_path / "FashionMNIST" / "raw", seed=1)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.classes == FASHION_CLASSES
    assert ds.source == str(tmp_path / "FashionMNIST" / "raw")
    for split, (images, labels) in written.items():
        np.testing.assert_array_equal(ds.splits[split].images[:, 0], images)
        np.testing.assert_array_equal(ds.splits[split].labels, labels.astype(np.int64))
    assert ds.shape == (1, 28, 28)


def test_fashion_mnist_does_not_read_mnist(tmp_path):
    """Same file names as MNIST: the folder is what tells them apart."""
    write_idx(tmp_path / "MNIST" / "raw")
    with pytest.raises(VisionbenchError, match="'fashion-mnist' not found") as err:
        load_dataset("fashion-mnist", tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)


# --- CIFAR-100: python pickles, fine and coarse labels --------------------------------------------
FINE = [f"fine_{i:02d}" for i in range(100)]
COARSE = [f"coarse_{i:02d}" for i in range(20)]


def cifar100_pickles(n_train=5, n_test=3, seed=0) -> dict[str, dict]:
    """train, test and meta as the official pickles hold them: bytes keys, bytes names."""
    rng = np.random.default_rng(seed)
    superclass = rng.integers(0, 20, 100)  # each fine class belongs to one coarse class
    out = {}
    for f, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        out[f] = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{f} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [int(superclass[v]) for v in fine],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
    out["meta"] = {
        b"fine_label_names": [c.encode() for c in FINE],
        b"coarse_label_names": [c.encode() for c in COARSE],
    }
    return out


def write_cifar100(root: Path, pickles: dict, as_tar: bool, blobs: dict | None = None) -> None:
    blobs = {f: pickle.dumps(d, protocol=2) for f, d in pickles.items()} | (blobs or {})
    blobs["file.txt~"] = b""  # the official archive carries this stray editor backup
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tf:
            for f, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-100-python/{f}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    else:
        (root / "cifar-100-python").mkdir()
        for f, blob in blobs.items():
            (root / "cifar-100-python" / f).write_bytes(blob)


@pytest.mark.parametrize("as_tar", [False, True], ids=["extracted", "tar.gz"])
def test_cifar100_fine_and_coarse(tmp_path, as_tar):
    pickles = cifar100_pickles()
    write_cifar100(tmp_path, pickles, as_tar)
    fine, coarse = load_dataset("cifar100", tmp_path), load_dataset("cifar100-coarse", tmp_path)
    assert fine.classes == FINE and coarse.classes == COARSE
    for split in ("train", "test"):
        assert fine.splits[split].labels.tolist() == pickles[split][b"fine_labels"]
        assert coarse.splits[split].labels.tolist() == pickles[split][b"coarse_labels"]
        np.testing.assert_array_equal(fine.splits[split].images, coarse.splits[split].images)
    assert fine.splits["train"].images.shape == (5, 3, 32, 32)
    # a row is the R plane, then G, then B, each 32x32 row-major
    row, img = pickles["test"][b"data"][2], fine.splits["test"].images[2]
    for c, i, j in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (1, 5, 7), (2, 31, 31)]:
        assert img[c, i, j] == row[c * 1024 + i * 32 + j]


@pytest.mark.parametrize("target", ["train", "meta"])
@pytest.mark.parametrize("as_tar", [False, True], ids=["extracted", "tar.gz"])
def test_cifar100_malicious_pickle_refused(tmp_path, target, as_tar):
    sentinel = tmp_path / "pwned"
    key = b"data" if target == "train" else b"fine_label_names"
    evil = cifar100_pickles()[target] | {key: Malicious(os.system, f"touch '{sentinel}'")}
    blob = pickle.dumps(evil, protocol=2)
    write_cifar100(tmp_path / "data", cifar100_pickles(), as_tar, blobs={target: blob})
    with pytest.raises(VisionbenchError, match="not a CIFAR-100 file") as err:
        load_dataset("cifar100", tmp_path / "data")
    assert f"cifar-100-python{'.tar.gz' if as_tar else ''}:{target}" in str(err.value)
    assert not sentinel.exists()
    pickle.loads(blob)  # the payload is live: a plain pickle.loads would have run it
    assert sentinel.exists()


def test_cifar100_missing_meta_and_bad_labels(tmp_path):
    pickles = cifar100_pickles()
    write_cifar100(tmp_path / "a", {f: d for f, d in pickles.items() if f != "meta"}, as_tar=True)
    with pytest.raises(VisionbenchError, match=r"missing CIFAR-100 files: meta\n"):
        load_dataset("cifar100", tmp_path / "a")
    pickles["test"][b"coarse_labels"][0] = 20  # one past the 20 superclasses
    write_cifar100(tmp_path / "b", pickles, as_tar=False)
    assert load_dataset("cifar100", tmp_path / "b").splits["test"].labels[0] >= 0  # fine is fine
    with pytest.raises(VisionbenchError, match="coarse_labels outside 0..19") as err:
        load_dataset("cifar100-coarse", tmp_path / "b")
    assert "cifar-100-python:test" in str(err.value)


# --- SVHN: MATLAB files, X (32, 32, 3, N), y (N, 1) with 10 for the digit 0 ------------------------
def write_svhn(folder: Path, n_train=7, n_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0], y[1, 0] = 10, 3  # at least one zero digit and one other
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x, y)
    return written


def test_svhn_official_mat_files(tmp_path):
    written = write_svhn(tmp_path / "svhn")
    ds = load_dataset("svhn", tmp_path)
    assert ds.classes == [str(d) for d in range(10)]
    for split, (x, y) in written.items():
        s = ds.splits[split]
        assert s.images.shape == (x.shape[3], 3, 32, 32) and s.images.dtype == np.uint8
        assert s.labels.tolist() == [0 if v == 10 else int(v) for v in y[:, 0]]
        assert s.labels[0] == 0 and s.labels[1] == 3 and s.labels.max() <= 9
        for i, c, h, w in [(0, 0, 0, 1), (1, 2, 5, 30), (4, 1, 31, 0)]:  # h != w: no transposed image
            assert s.images[i, c, h, w] == x[h, w, c, i]
    assert ds.notes == []


def test_svhn_missing_test_file_and_extra_note(tmp_path):
    folder = tmp_path / "svhn"
    write_svhn(folder)
    (folder / "extra_32x32.mat").write_bytes(b"")
    assert load_dataset("svhn", tmp_path).notes == ["extra_32x32.mat is not read: train and test only"]
    (folder / "test_32x32.mat").unlink()
    with pytest.raises(VisionbenchError, match="missing SVHN file") as err:
        load_dataset("svhn", tmp_path)
    assert str(folder / "test_32x32.mat") in str(err.value)


def test_svhn_not_a_mat_file(tmp_path):
    folder = tmp_path / "svhn"
    write_svhn(folder)
    (folder / "train_32x32.mat").write_bytes(b"<html>404</html>")
    with pytest.raises(VisionbenchError, match="cannot read MATLAB file") as err:
        load_dataset("svhn", tmp_path)
    assert "train_32x32.mat" in str(err.value)


# --- Tiny ImageNet: tiny-imagenet-200/{wnids.txt, words.txt, train/, val/, test/} ----------------
WNIDS = ["n09246464", "n01443537", "n02124075"]  # wnids.txt order, not sorted
WORDS = {
    "n00001740": "entity",  # words.txt covers all of WordNet, not only these 200 (here 3)
    "n01443537": "goldfish, Carassius auratus",
    "n02124075": "Egyptian cat",
    "n09246464": "cliff, drop, drop-off",
}
COLOUR = {"n01443537": (220, 40, 40), "n02124075": (40, 200, 60), "n09246464": (100, 100, 100)}
VAL = {"val_0.JPEG": "n09246464", "val_1.JPEG": "n01443537", "val_2.JPEG": "n02124075"} | {
    "val_3.JPEG": "n01443537",
    "val_4.JPEG": "n09246464",
}


def jpeg(colour: tuple[int, int, int], grey: bool = False) -> bytes:
    img = Image.new("RGB", (64, 64), colour)
    buf = io.BytesIO()
    (img.convert("L") if grey else img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def write_tiny(root: Path, n_train=2) -> Path:
    """The official tree, unzipped: root/tiny-imagenet-200/..."""
    base = root / "tiny-imagenet-200"
    files = {
        "wnids.txt": "".join(f"{w}\n" for w in WNIDS),
        "words.txt": "".join(f"{w}\t{name}\n" for w, name in WORDS.items()),
        "val/val_annotations.txt": "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in VAL.items()),
        "test/images/test_0.JPEG": jpeg((255, 255, 255)),  # unlabeled: must not be read
        "test/images/test_1.JPEG": jpeg((255, 255, 255)),
    }
    for w in WNIDS:
        files[f"train/{w}/{w}_boxes.txt"] = "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(n_train))
        for i in range(n_train):  # the grey class is stored as greyscale JPEGs, as some real ones are
            files[f"train/{w}/images/{w}_{i}.JPEG"] = jpeg(COLOUR[w], grey=w == "n09246464")
    for f, w in VAL.items():
        files[f"val/images/{f}"] = jpeg(COLOUR[w])
    for rel, content in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(content.encode() if isinstance(content, str) else content)
    return base


def zip_tree(base: Path) -> Path:
    """tiny-imagenet-200.zip beside the folder, with its directory entries; the folder goes."""
    out = base.with_name(base.name + ".zip")
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(base.rglob("*")):
            zf.write(p, p.relative_to(base.parent).as_posix())
    shutil.rmtree(base)
    return out


def assert_colour(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    for img, label in zip(images, labels):
        want = np.array(COLOUR[classes[label]])[:, None, None]
        assert np.abs(img.astype(int) - want).max() <= 6, (classes[label], img.mean(axis=(1, 2)))


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_tiny_imagenet_official_layout(tmp_path, as_zip):
    base = write_tiny(tmp_path)
    if as_zip:
        zip_tree(base)
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.source == str(tmp_path / ("tiny-imagenet-200.zip" if as_zip else "tiny-imagenet-200"))
    assert ds.classes == sorted(WNIDS) and "images" not in ds.classes
    assert ds.class_names == [WORDS[w] for w in sorted(WNIDS)]
    assert sorted(ds.splits) == ["test", "train"]  # official val is the test split; nothing carved
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.images.shape == (6, 3, 64, 64) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [2, 2, 2]
    # val labels come from val_annotations.txt (files in name order), and match the pixels
    assert test.labels.tolist() == [ds.classes.index(VAL[f]) for f in sorted(VAL)]
    assert_colour(train.images, train.labels, ds.classes)
    assert_colour(test.images, test.labels, ds.classes)
    assert not any(img.min() > 240 for img in np.concatenate([train.images, test.images]))  # no test/
    assert ds.skipped == []
    assert any("test/ images are unlabeled and were not read" in n for n in ds.notes)
    assert any("official val/" in n for n in ds.notes)
    again = load_dataset("tiny-imagenet", tmp_path)  # from the cache: the readable names survive
    assert _is_memmap(again.splits["train"].images)
    assert again.class_names == ds.class_names and again.notes == ds.notes


def unknown_wnid(base: Path) -> None:
    ann = base / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[2] = "val_2.JPEG\tn99999999\t0\t0\t63\t63"
    ann.write_text("\n".join(lines) + "\n")


BAD_TREES = {
    # a broken tree, and what the error must name (the line, or the file)
    "unknown-wnid": (
        unknown_wnid,
        r"names no class of wnids.txt",
        "val/val_annotations.txt line 3: 'val_2.JPEG\\tn99999999",
    ),
    "missing-val-file": (
        lambda b: (b / "val" / "images" / "val_3.JPEG").unlink(),
        "1 files listed in val/val_annotations.txt are missing",
        "val/images/val_3.JPEG",
    ),
    "unlisted-val-file": (
        lambda b: (b / "val" / "images" / "val_9.JPEG").write_bytes(jpeg((1, 2, 3))),
        "has no line in val/val_annotations.txt",
        "val/images/val_9.JPEG",
    ),
    "train-folder-not-in-wnids": (
        lambda b: shutil.copytree(b / "train" / "n01443537", b / "train" / "n00000001"),
        "training folder n00000001 is not in wnids.txt",
        "train/n00000001",
    ),
    "class-without-train-images": (
        lambda b: shutil.rmtree(b / "train" / "n02124075"),
        "no training images for 1 classes of wnids.txt: n02124075",
        "tiny-imagenet-200",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_TREES))
@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_tiny_imagenet_inconsistent_tree_is_a_user_error(tmp_path, bad, as_zip):
    breaks, message, names = BAD_TREES[bad]
    base = write_tiny(tmp_path)
    breaks(base)
    if as_zip:
        zip_tree(base)
    with pytest.raises(VisionbenchError, match=message) as err:
        load_dataset("tiny-imagenet", tmp_path)
    assert names in str(err.value)


def test_tiny_imagenet_stray_and_unreadable_images_are_reported(tmp_path):
    base = write_tiny(tmp_path)
    (base / "train" / "n01443537" / "loose.JPEG").write_bytes(jpeg((9, 9, 9)))  # not under images/
    (base / "val" / "images" / "val_4.JPEG").write_bytes(b"not a jpeg")
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.classes == sorted(WNIDS)
    assert len(ds.splits["train"]) == 6 and len(ds.splits["test"]) == len(VAL) - 1
    assert [s["file"] for s in ds.skipped] == [
        "train/n01443537/loose.JPEG",
        "val/images/val_4.JPEG",
    ]
    assert "outside the tiny-imagenet-200 layout" in ds.skipped[0]["reason"]
    assert "not a readable image" in ds.skipped[1]["reason"]


def test_tiny_imagenet_unzipped_into_its_own_name(tmp_path):
    """Unzipping into tiny-imagenet-200/ nests the tree one level deeper: still found."""
    write_tiny(tmp_path / "tiny-imagenet-200")
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.classes == sorted(WNIDS) and len(ds.splits["test"]) == len(VAL)


def test_tiny_imagenet_missing_list_file(tmp_path):
    (write_tiny(tmp_path) / "wnids.txt").unlink()
    with pytest.raises(VisionbenchError, match="missing Tiny ImageNet files: wnids.txt"):
        load_dataset("tiny-imagenet", tmp_path)


# --- downloads: what `data download` fetches is what `load_dataset` finds -----------------------
def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def mirror_cifar100(folder: Path, key: bytes) -> list[int]:
    pickles = cifar100_pickles()
    write_cifar100(folder, pickles, as_tar=True)
    return pickles["train"][key]


def mirror_tiny(folder: Path) -> list[int]:
    zip_tree(write_tiny(folder))
    return [0, 0, 1, 1, 2, 2]  # two training images per class, classes in sorted wnid order


MIRRORS = {  # name -> build the official files in a folder, return the train labels they hold
    "fashion-mnist": lambda d: write_idx(d)["train"][1].tolist(),
    "cifar100": lambda d: mirror_cifar100(d, b"fine_labels"),
    "cifar100-coarse": lambda d: mirror_cifar100(d, b"coarse_labels"),
    "svhn": lambda d: [0 if v == 10 else int(v) for v in write_svhn(d)["train"][1][:, 0]],
    "tiny-imagenet": mirror_tiny,
}


@pytest.mark.parametrize("name", list(MIRRORS))
def test_download_lands_where_load_looks(tmp_path, monkeypatch, name):
    monkeypatch.setenv("VISIONBENCH_OFFLINE", "0")  # conftest forbids downloads: this one is asked for
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    want = MIRRORS[name](mirror)
    source = SOURCES[name]
    remotes = [Remote(r.url, r.filename, md5(mirror / r.filename)) for r in source.remotes]
    assert sorted(r.filename for r in remotes) == sorted(p.name for p in mirror.iterdir())
    monkeypatch.setattr(source, "remotes", remotes)
    download_dataset(name, tmp_path / "data", mirror=mirror.as_uri())
    assert load_dataset(name, tmp_path / "data").splits["train"].labels.tolist() == want


def test_remotes_match_torchvision():
    """The official URLs and md5s, as torchvision (which many users already have) lists them."""
    tv = pytest.importorskip("torchvision.datasets")
    fashion = {r.filename: r for r in SOURCES["fashion-mnist"].remotes}
    assert {f: r.md5 for f, r in fashion.items()} == dict(tv.FashionMNIST.resources)
    assert all(r.url == tv.FashionMNIST.mirrors[0] + f for f, r in fashion.items())
    for name in ("cifar100", "cifar100-coarse"):
        (r,) = SOURCES[name].remotes
        assert (r.url, r.filename, r.md5) == (tv.CIFAR100.url, tv.CIFAR100.filename, tv.CIFAR100.tgz_md5)
    svhn = {(r.url, r.filename, r.md5) for r in SOURCES["svhn"].remotes}
    assert svhn == {tuple(tv.SVHN.split_list[s]) for s in ("train", "test")}
    (tiny,) = SOURCES["tiny-imagenet"].remotes
    assert tiny.url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert tiny.md5 == "90528d7ca1a48142e341f4ef8d21d0de"
