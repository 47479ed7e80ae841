"""The dataset registry: names -> sources (where a dataset lives under a data root and the
function that reads it), `folder:`/`csv:` paths, and `load_dataset` through the array cache.
The readers live with their formats: official.py, tiny_imagenet.py, images.py, labels_csv.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import source_path
from ..errors import VisionbenchError, unknown_name
from . import cache
from .cache import Dataset
from .decode import decode_progress, no_readable
from .download import Remote, download
from .images import read_folder
from .labels_csv import read_csv


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
            path = Path(source_path(name).split(":", 1)[1])
            return Source(
                name,
                lambda root, path=path: [path],
                lambda p, read=read, **kw: read(name, p, **kw),
                hint=hint,
                options=("img_size", "resize", "task", "stream")
                if prefix == "folder:"
                else ("img_size", "resize", "task"),
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
            fix="data.img_size, data.resize and data.task=single apply to folder: and csv: datasets, "
            "data.stream to folder: datasets; leave them unset here",
        )
    path = locate(source, data_dir)
    if options.get("stream"):  # too large to cache: the files are the data
        ds = source.read(path, **options)
        ds.source = str(path)
        return checked(ds)
    folder = (
        cache.cache_root()
        / f"{name.replace(':', '_').replace('/', '_')[:40]}-{cache.source_key(name, source.key_root(path), options)}"
    )
    say = on_build or (lambda line: None)
    ds = cache.load(folder, on_damage=on_build)
    if ds is not None:
        ds.cache = str(folder)
        return checked(ds)
    say(f"decoding {name} from {path} into the array cache {folder} (once; later runs reuse it)")
    with decode_progress(on_progress):
        ds = checked(source.read(path, **options), str(path))
    ds.source = str(path)
    ds.fingerprint = cache.fingerprint(ds)
    try:
        cache.save(ds, folder)
        ds.cache = str(folder)
    except OSError as e:  # a read-only or full disk: this run still has its data
        say(f"cannot write the array cache ({e.strerror or e}): the data stays in memory for this run")
    return ds


def checked(ds: Dataset, where: str | None = None) -> Dataset:
    """The one guard on what any source gives (or the cache gives back) before anything uses
    it: at least two classes, train and test splits with images (a split whose every file was
    unreadable is named, with the reasons), one image shape, labels naming the classes."""
    where = where or ds.source
    if len(ds.classes) < 2:
        raise VisionbenchError(f"{len(ds.classes)} class(es): a classifier needs two", where=where)

    for split in ["train", "test"] + [s for s in ds.splits if s not in ("train", "test")]:
        if len(ds.splits.get(split, ())) == 0:
            raise no_readable(f"{split} images", ds.skipped, where)
    shapes = {tuple(s.images.shape[1:]) for s in ds.splits.values()}
    if len(shapes) > 1 or any(len(shape) != 3 for shape in shapes):
        raise VisionbenchError(f"splits of different image shapes: {sorted(shapes)}", where=where)
    for split, s in ds.splits.items():
        labels = np.asarray(s.labels)
        # class indices (N,), or multi-hot rows (N, C) of 0 and 1
        top = 1 if labels.ndim == 2 else len(ds.classes) - 1
        if labels.ndim == 2 and labels.shape[1] != len(ds.classes):
            top = -1
        if len(labels) != len(s.images) or labels.min() < 0 or labels.max() > top:
            raise VisionbenchError(
                f"the {split} labels do not match its images and {len(ds.classes)} classes", where=where
            )
    return ds


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
