"""The dataset registry: each source finds its official layout under a data root and decodes it."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import VisionbenchError, unknown_name
from . import cache
from .archive import is_archive, iter_members
from .cache import Dataset, Split
from .decode import check_resize, decode_progress
from .download import Remote, download
from .images import read_image_folder
from .labels_csv import read_label_csv
from .split import stratified_split


@dataclass
class Source:
    """How to find one dataset under a data root and decode it."""

    name: str
    candidates: Callable[[Path], list[Path]]  # where it may live under a root, best first
    read: Callable[[Path], Dataset]
    remotes: list[Remote] = field(default_factory=list)  # official files, for `data download`
    download_dir: Callable[[Path], Path] = lambda root: root
    hint: str = ""  # what to place where, for the not-found message
    options: tuple[str, ...] = ()  # keyword options `read` accepts, e.g. img_size
    key_root: Callable[[Path], Path] = lambda path: path  # the files whose change rebuilds the cache


SOURCES: dict[str, Source] = {}
T = TypeVar("T")


def register(source: Source) -> Source:
    SOURCES[source.name] = source
    return source


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """--data-dir, then $VISIONBENCH_DATA, then the user cache dir: the first given wins."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    if os.environ.get("VISIONBENCH_DATA"):
        return [Path(os.environ["VISIONBENCH_DATA"]).expanduser()]
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return [Path(xdg) / "visionbench" / "data"]


def get_source(name: str) -> Source:
    for prefix, read, hint, key_root in (
        ("folder:", read_folder, "a folder or archive of <split>/<class>/<image> files", lambda p: p),
        ("csv:", read_csv, "a CSV with file,label[,split] columns, paths relative to it", lambda p: p.parent),
    ):
        if name.startswith(prefix):
            path = Path(name.split(":", 1)[1]).expanduser()
            return Source(
                name,
                lambda root, path=path: [path],
                lambda p, read=read, **kw: read(name, p, **kw),
                hint=hint,
                options=("img_size", "resize", "stream") if prefix == "folder:" else ("img_size", "resize"),
                key_root=key_root,
            )
    if name not in SOURCES:
        raise unknown_name("dataset", name, list(SOURCES) + ["folder:PATH", "csv:PATH"])
    return SOURCES[name]


def locate(source: Source, data_dir: str | Path | None = None) -> Path:
    looked = []
    for root in data_roots(data_dir):
        for cand in source.candidates(root):
            if cand.exists():
                return cand
            looked.append(str(cand))
    fix = f"place {source.hint} there, or pass --data-dir DIR / set VISIONBENCH_DATA"
    if source.remotes:
        fix += f", or run `visionbench data download {source.name}`"
    raise VisionbenchError(
        f"dataset '{source.name}' not found", where="looked in: " + ", ".join(looked), fix=fix
    )


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    on_build: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **options,
) -> Dataset:
    """Find, decode once into the array cache, and return the dataset (memory-mapped).
    `on_build` hears one line before a first decode, which can take a while, and
    `on_progress` (images done, total) while image files decode."""
    source = get_source(name)
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        raise VisionbenchError(
            f"dataset '{name}' takes no option {', '.join(unknown)}",
            fix="data.img_size and data.resize apply to folder: and csv: datasets, data.stream to "
            "folder: datasets; leave them unset here",
        )
    path = locate(source, data_dir)
    if options.get("stream"):  # too large to cache: the files are the data
        ds = source.read(path, **options)
        ds.source = str(path)
        return ds
    folder = (
        cache.cache_root()
        / f"{name.replace(':', '_').replace('/', '_')[:40]}-{cache.source_key(name, source.key_root(path), options)}"
    )
    ds = cache.load(folder)
    if ds is None:
        if on_build is not None:
            on_build(f"decoding {name} from {path} into the array cache {folder} (once; later runs reuse it)")
        with decode_progress(on_progress):
            ds = source.read(path, **options)
        ds.source = str(path)
        ds.fingerprint = cache.fingerprint(ds)
        cache.save(ds, folder)
    ds.cache = str(folder)
    return ds


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
    missing = [f for f in wanted if f not in blobs]
    if missing:
        raise VisionbenchError(
            f"missing {what} files: {missing}",
            where=str(path),
            fix=f"expected {expected}; download the official archive again",
        )
    return blobs


def read_cifar10(path: Path) -> Dataset:
    official = (
        path.name in ("cifar-10-batches-py", "cifar-10-python.tar.gz") or (path / "data_batch_1").exists()
    )
    if not official:
        # an ImageFolder tree (e.g. the JPEG copy), folder or archive
        ds = read_folder("cifar10", path)
        if ds.classes != CIFAR10_CLASSES:
            raise VisionbenchError(f"expected the 10 CIFAR-10 classes, found {ds.classes}", where=str(path))
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


# --- any ImageFolder tree, or images listed in a label CSV -------------------------------------
def read_folder(
    name: str, path: Path, img_size: int | None = None, resize: str = "crop", stream: bool = False
) -> Dataset:
    if not (path.is_dir() or is_archive(path)):
        raise VisionbenchError("not a folder or a .zip/.tar archive", where=str(path))
    if stream and not path.is_dir():
        raise VisionbenchError(
            "data.stream reads files from a folder, not from an archive",
            where=str(path),
            fix="extract the archive and give the folder, or drop data.stream (archives are cached)",
        )
    check_resize(resize)
    ds = _with_test_split(name, *read_image_folder(path, img_size, resize, stream))
    if stream:
        from .stream import stream_fingerprint

        ds.fingerprint = stream_fingerprint(ds.classes, ds.splits)
    return ds


def read_csv(name: str, path: Path, img_size: int | None = None, resize: str = "crop") -> Dataset:
    if not path.is_file():
        raise VisionbenchError(
            "not a CSV file", where=str(path), fix="give the CSV itself: csv:path/to/labels.csv"
        )
    check_resize(resize)
    return _with_test_split(name, *read_label_csv(path, img_size, resize))


def _with_test_split(
    name: str, classes: list[str], arrays: dict, skipped: list[dict], originals: dict
) -> Dataset:
    splits = {s: Split(x, y) for s, (x, y) in arrays.items()}
    notes = []
    if "test" not in splits:  # no test split given: carve a fixed, stratified one
        train = splits.pop("train")
        tr, te = stratified_split(train.labels, 0.2, seed=0)
        splits = {
            "train": Split(train.images[tr], train.labels[tr]),
            "test": Split(train.images[te], train.labels[te]),
            **splits,
        }
        notes.append("no test split given: test split is a stratified 20% of the images, seed 0")
    splits = dict(sorted(splits.items(), key=lambda kv: cache.SPLIT_ORDER[kv[0]]))
    return Dataset(name, classes, splits, skipped=skipped, notes=notes, originals=originals)


def download_dataset(name: str, data_dir: str | Path | None = None, mirror: str | None = None) -> list[Path]:
    """Fetch the official files of a dataset into the data root, each checked by md5."""
    source = get_source(name)
    if not source.remotes:
        raise VisionbenchError(
            f"dataset '{name}' has nothing to download", fix="it is bundled or read from a path you give"
        )
    dest = source.download_dir(data_roots(data_dir)[0])
    return [
        download(r, dest, url=f"{mirror.rstrip('/')}/{r.filename}" if mirror else None)
        for r in source.remotes
    ]
