"""The official datasets stored as arrays, each read from the layout its authors distribute:
digits (scikit-learn), MNIST and Fashion-MNIST (IDX), CIFAR-10/100 (python pickles), SVHN (.mat).
Archives are read in place through `archive.iter_members`, never extracted."""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import VisionbenchError
from .archive import iter_members
from .cache import Dataset, Split
from .download import Remote
from .images import read_folder
from .sources import Source, register
from .split import stratified_split

T = TypeVar("T")


# --- digits: scikit-learn's bundled 8x8 digits, the embedded default --------------------------
def read_digits(_: Path) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    # no official test split: a fixed, stratified 20% (seed 0), the same on every machine
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    splits = {
        "train": Split(images[train_idx], labels[train_idx]),
        "test": Split(images[test_idx], labels[test_idx]),
    }
    return Dataset(
        "digits",
        [str(i) for i in range(10)],
        splits,
        notes=["test split: stratified 20% of scikit-learn's 1,797 digits, seed 0"],
    )


def _sklearn_path(_: Path) -> list[Path]:
    import importlib.util

    # found without importing scikit-learn (1.2-1.7 s): a warm cache then never imports it
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return [Path("<scikit-learn is not installed>")]
    return [Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"]


register(Source("digits", _sklearn_path, read_digits, hint="scikit-learn (pip install scikit-learn)"))


# --- MNIST-style IDX files --------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or raw) as a uint8 array: magic 0x0801 labels, 0x0803 images."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise VisionbenchError(
            f"cannot read IDX file: {e}",
            where=str(path),
            fix="the file is truncated or not gzip; download it again",
        ) from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise VisionbenchError("not an unsigned-byte IDX file (bad magic number)", where=str(path))
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise VisionbenchError(f"IDX file holds {body.size} bytes, header says {dims}", where=str(path))
    return body.reshape(dims)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _pick(folder: Path, stem: str) -> Path:
    gz = folder / f"{stem}.gz"
    return gz if gz.exists() else folder / stem


def idx_source(name: str, folder: str, classes: list[str], base_url: str, md5s: dict) -> Source:
    stems = [s for pair in IDX_FILES.values() for s in pair]

    def candidates(root: Path) -> list[Path]:
        # torchvision's <root>/<Folder>/raw layout first, then <root>/<name>; never the root
        # itself: MNIST and Fashion-MNIST share file names, so a bare root would be ambiguous.
        # Each file may be gzipped (as distributed) or not. A folder with some files missing
        # yields the first missing one, so the not-found message names it.
        dirs = [root / folder / "raw", root / name]
        found = [d for d in dirs if all(_pick(d, s).exists() for s in stems)]
        return found or [next(d / f"{s}.gz" for s in stems if not _pick(d, s).exists()) for d in dirs]

    def read(path: Path) -> Dataset:
        splits = {}
        for split, (img_stem, lbl_stem) in IDX_FILES.items():
            images, labels = read_idx(_pick(path, img_stem)), read_idx(_pick(path, lbl_stem))
            if images.ndim != 3 or labels.ndim != 1:
                raise VisionbenchError(
                    f"{img_stem} must hold images (3 dims) and {lbl_stem} labels (1 dim); "
                    f"found {images.ndim} and {labels.ndim} dims",
                    where=str(path),
                    fix="the files look swapped or renamed; use the official names",
                )
            if len(images) != len(labels):
                raise VisionbenchError(f"{len(images)} images but {len(labels)} labels", where=str(path))
            splits[split] = Split(images[:, None].copy(), labels.astype(np.int64))
        return Dataset(name, classes, splits)

    remotes = [Remote(base_url + f"{s}.gz", f"{s}.gz", md5s[s]) for s in stems]
    return Source(
        name,
        candidates,
        read,
        remotes,
        lambda root: root / folder / "raw",
        hint=f"{folder}/raw/*-ubyte.gz (the four official IDX files)",
    )


register(
    idx_source(
        "mnist",
        "MNIST",
        [str(i) for i in range(10)],
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    )
)


# --- CIFAR-10: the official python pickles (tarball or extracted), or an ImageFolder copy -----
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only what they contain, so no code can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from a data file")


def read_data_pickle(blob: bytes, where: str, what: str, parse: Callable[[dict], T]) -> T:
    """`parse` applied to a dataset's pickle (keys as str); only arrays and builtins may load.
    Refused classes, wrong structure and wrong sizes all become one clear "not a ..." error."""
    try:
        d = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
        return parse({k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()})
    except Exception as e:
        raise VisionbenchError(
            f"not a {what} file ({type(e).__name__}: {e})",
            where=where,
            fix="download the official python version again",
        ) from None


def cifar_split(blob: bytes, where: str, label_key: str, n_classes: int, what: str = "CIFAR") -> Split:
    """One CIFAR-10/100 batch: rows of 3072 bytes (R, G, B planes of 32x32) and their labels."""

    def parse(d: dict) -> Split:
        images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[label_key], dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {labels.size} {label_key}")
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{label_key} outside 0..{n_classes - 1}")
        return Split(images, labels)

    return read_data_pickle(blob, where, what, parse)


CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_named_files(
    path: Path, wanted: list[str], what: str, expected: str, skipped: list[dict]
) -> dict[str, bytes]:
    """The files named `wanted` (by base name) from a folder or an archive read in place (capped,
    never extracted; members it refuses go to `skipped`); any missing one is an error naming
    them and the layout `expected`."""
    if path.is_dir():
        blobs = {f: (path / f).read_bytes() for f in wanted if (path / f).is_file()}
    else:
        blobs = {parts[-1]: blob for parts, blob in iter_members(path, lambda p: p[-1] in wanted, skipped)}
    require_files(blobs, wanted, what, path, f"expected {expected}; download the official archive again")
    return blobs


def require_files(found: dict, wanted, what: str, path: Path, fix: str) -> None:
    """An error naming the `wanted` files that are not in `found`, if any."""
    missing = [f for f in wanted if f not in found]
    if missing:
        raise VisionbenchError(f"missing {what} files: {', '.join(missing)}", where=str(path), fix=fix)


LOSSY = {"JPEG", "WEBP", "MPO"}  # PIL's names of formats that are (usually) lossy


def copy_note(ds: Dataset, official: str) -> str:
    """What a dataset read from an image-folder copy is, said beside every figure made on it
    (data info, the run's data report, a study's report): e.g. CIFAR-10 saved as JPEG scores
    lower than the official lossless images, and a write-up's figure was made on those."""
    formats = ds.originals.get("formats") or {}
    lossy = {f: n for f, n in formats.items() if f in LOSSY}
    what = ", ".join(f"{n:,} {f}" for f, n in formats.items()) or "image files"
    note = f"an image-folder copy ({what}), not the official distribution ({official})"
    if lossy:
        note += ": lossy files, so accuracy can be lower than on the official images"
    return note


def read_cifar10(path: Path) -> Dataset:
    official = (
        path.name in ("cifar-10-batches-py", "cifar-10-python.tar.gz") or (path / "data_batch_1").exists()
    )
    if not official:
        # an ImageFolder tree (e.g. the JPEG copy), folder or archive
        ds = read_folder("cifar10", path)
        if ds.classes != CIFAR10_CLASSES:
            raise VisionbenchError(f"expected the 10 CIFAR-10 classes, found {ds.classes}", where=str(path))
        ds.notes.append(copy_note(ds, "cifar-10-python.tar.gz"))
        return ds
    wanted = [f for files in CIFAR10_BATCHES.values() for f in files]
    skipped: list[dict] = []
    blobs = read_named_files(
        path, wanted, "CIFAR-10", "cifar-10-batches-py/{data_batch_1..5,test_batch}", skipped
    )
    splits = {}
    for split, files in CIFAR10_BATCHES.items():
        parts = [cifar_split(blobs[f], f"{path}:{f}", "labels", 10, "CIFAR-10 batch") for f in files]
        splits[split] = Split(
            np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
        )
    return Dataset("cifar10", CIFAR10_CLASSES, splits, skipped=skipped)


register(
    Source(
        "cifar10",
        lambda root: [
            root / "cifar-10-batches-py",
            root / "cifar-10-python.tar.gz",
            root / "cifar10-jpg",
            root / "cifar10-jpg.tar.gz",
            root / "cifar10",
        ],
        read_cifar10,
        [
            Remote(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
            )
        ],
        hint="cifar-10-batches-py/ or cifar-10-python.tar.gz (official), or cifar10-jpg[.tar.gz] (ImageFolder)",
    )
)


# --- Fashion-MNIST: the same four IDX files as MNIST, other pictures ----------------------------
register(
    idx_source(
        "fashion-mnist",
        "FashionMNIST",  # torchvision's folder name: <root>/FashionMNIST/raw/*.gz
        [
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
        ],
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {  # md5s as torchvision lists them (FashionMNIST.resources)
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    )
)


# --- CIFAR-100: the official python pickles, 100 fine classes grouped into 20 coarse ones -------
CIFAR100_FILES = {"train": "train", "test": "test"}  # split -> pickle; class names live in "meta"


def cifar100_reader(name: str, level: str) -> Callable[[Path], Dataset]:
    """`level` is "fine" (100 classes) or "coarse" (20 superclasses): the same images either way."""

    def read(path: Path) -> Dataset:
        wanted, skipped = [*CIFAR100_FILES.values(), "meta"], []
        blobs = read_named_files(path, wanted, "CIFAR-100", "cifar-100-python/{train,test,meta}", skipped)
        classes = read_data_pickle(
            blobs["meta"],
            f"{path}:meta",
            "CIFAR-100",
            lambda d: [n.decode() if isinstance(n, bytes) else str(n) for n in d[f"{level}_label_names"]],
        )
        splits = {
            split: cifar_split(blobs[f], f"{path}:{f}", f"{level}_labels", len(classes), "CIFAR-100")
            for split, f in CIFAR100_FILES.items()
        }
        return Dataset(name, classes, splits, skipped=skipped)

    return read


def register_cifar100(name: str, level: str) -> None:
    register(
        Source(
            name,
            lambda root: [root / "cifar-100-python", root / "cifar-100-python.tar.gz"],
            cifar100_reader(name, level),
            [
                Remote(
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    "cifar-100-python.tar.gz",
                    "eb9058c3a382ffc7106e4002c42a8d85",
                )
            ],
            hint="cifar-100-python/ or cifar-100-python.tar.gz (the official python version)",
        )
    )


register_cifar100("cifar100", "fine")
register_cifar100("cifar100-coarse", "coarse")


# --- SVHN: cropped 32x32 digits as MATLAB files ---------------------------------------------------
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}  # extra_32x32.mat is not read
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_MD5 = {  # as torchvision lists them (SVHN.split_list)
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}


def svhn_candidates(root: Path) -> list[Path]:
    dirs = [root / "svhn", root / "SVHN", root]
    found = [d for d in dirs if (d / SVHN_FILES["train"]).is_file()]
    return found or [d / SVHN_FILES["train"] for d in dirs]


def read_svhn_split(path: Path) -> Split:
    from scipy.io import loadmat  # scipy comes with scikit-learn; only SVHN needs it

    if not path.is_file():
        raise VisionbenchError("missing SVHN file", where=str(path), fix="place the official .mat file there")
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # scipy raises many types for bad bytes, NotImplementedError for v7.3
        raise VisionbenchError(
            f"cannot read MATLAB file ({type(e).__name__}: {e})",
            where=str(path),
            fix="the file is truncated or not the official 32x32 version; download it again",
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise VisionbenchError(
            "expected uint8 X of shape (32, 32, 3, N) and labels y",
            where=str(path),
            fix="use the cropped-digits files (*_32x32.mat), not the full-number ones",
        )
    labels = y.reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise VisionbenchError(f"{x.shape[3]} images but {len(labels)} labels", where=str(path))
    labels[labels == 10] = 0  # SVHN numbers classes 1..10 (MATLAB style): 10 is the digit 0
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise VisionbenchError("labels outside 1..10", where=str(path))
    return Split(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels)  # (H, W, C, N) -> NCHW


def read_svhn(path: Path) -> Dataset:
    splits = {split: read_svhn_split(path / f) for split, f in SVHN_FILES.items()}
    notes = (
        ["extra_32x32.mat is not read: train and test only"] if (path / "extra_32x32.mat").exists() else []
    )
    return Dataset("svhn", [str(i) for i in range(10)], splits, notes=notes)


register(
    Source(
        "svhn",
        svhn_candidates,
        read_svhn,
        [Remote(SVHN_URL + f, f, md5) for f, md5 in SVHN_MD5.items()],
        lambda root: root / "svhn",
        hint="svhn/train_32x32.mat and svhn/test_32x32.mat (the cropped-digits format)",
    )
)
