"""Decode once: datasets become uint8 arrays on disk, memory-mapped on every later run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
CACHE_VERSION = 1  # bump when the decoded bytes of any source would change


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """A decoded dataset: official splits as uint8 arrays, plus what was read and skipped."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    source: str = ""  # the file or folder it was read from
    fingerprint: str = ""  # sha256 of the decoded arrays: identical data, identical hash
    skipped: list[dict] = field(default_factory=list)  # [{"file": ..., "reason": ...}]
    notes: list[str] = field(default_factory=list)  # e.g. how a test split was carved
    class_names: list[str] = field(default_factory=list)  # readable names when classes are ids (wnids)
    originals: dict = field(default_factory=dict)  # image files as stored: {"modes": {...}, "sizes": {...}}
    cache: str = ""  # the array cache folder it was loaded from (not saved)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])


def cache_root() -> Path:
    env = os.environ.get("VISIONBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "visionbench" / "arrays"


def source_key(name: str, path: Path, options: dict) -> str:
    """Identity of what would be decoded: source name, files (path, size, mtime), options."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    stats = [(str(f), st.st_size, st.st_mtime_ns) for f in files if f.is_file() and (st := f.stat())]
    blob = json.dumps([CACHE_VERSION, name, str(path.resolve()), stats, options], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def fingerprint(ds: Dataset) -> str:
    h = hashlib.sha256(json.dumps(ds.classes).encode())
    for split in sorted(ds.splits):
        s = ds.splits[split]
        h.update(split.encode())
        h.update(np.ascontiguousarray(s.images).data)
        h.update(np.ascontiguousarray(s.labels).data)
    return h.hexdigest()


# A build writes into <cache folder>.tmp-<pid>-<host>-<random> and renames it when whole; one
# killed (kill -9, OOM, power) leaves it behind: 177 MB for CIFAR-10. Each later build removes
# those whose process is gone (same host), and any older than this (another host's, a PID
# reused since, or named before the pid was in the name): no build takes a day to write.
STALE_AFTER_S = 24 * 3600
_TMP_NAME = re.compile(r"-[0-9a-f]{20}\.tmp(?:-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-)?[a-z0-9_]{8}$")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows: trust the age only
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        pass
    return True


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove the temp folders that killed builds left in `root` (see STALE_AFTER_S); a build
    still running keeps its own. Returns what was removed."""
    removed = []
    for d in root.glob("*.tmp*") if root.is_dir() else []:
        m = _TMP_NAME.search(d.name)
        if m is None or not d.is_dir():
            continue
        try:
            age = time.time() - d.stat().st_mtime
        except OSError:  # removed meanwhile by another build
            continue
        orphan = m["pid"] is not None and m["host"] == _host() and not _alive(int(m["pid"]))
        if orphan or age > STALE_AFTER_S:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def save(ds: Dataset, folder: Path) -> None:
    """Write arrays + meta.json into a temp folder, then rename: a cache is whole or absent."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(folder.parent)
    prefix = f"{folder.name}.tmp-{os.getpid()}-{_host()}-"
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=prefix))
    try:
        for split, s in ds.splits.items():
            np.save(tmp / f"{split}_images.npy", np.ascontiguousarray(s.images))
            np.save(tmp / f"{split}_labels.npy", s.labels.astype(np.int64))
        meta = dict(
            name=ds.name,
            classes=ds.classes,
            splits=sorted(ds.splits),
            source=ds.source,
            fingerprint=ds.fingerprint,
            skipped=ds.skipped,
            notes=ds.notes,
            class_names=ds.class_names,
            originals=ds.originals,
        )
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(folder: Path) -> Dataset | None:
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    splits = {
        s: Split(
            np.load(folder / f"{s}_images.npy", mmap_mode="r"),
            np.load(folder / f"{s}_labels.npy"),
        )
        for s in sorted(meta["splits"], key=SPLIT_ORDER.get)
    }
    return Dataset(
        meta["name"],
        meta["classes"],
        splits,
        meta["source"],
        meta["fingerprint"],
        meta["skipped"],
        meta["notes"],
        meta.get("class_names", []),  # caches written before the field existed have none
        meta.get("originals", {}),
    )


def memo(ds: Dataset, key: str, compute: Callable[[], Any]) -> Any:
    """A JSON value computed once per cached dataset and kept beside its arrays (the report,
    channel statistics): later runs read it instead of scanning the images again. The file is
    named for the arrays it describes (fingerprint and shape), so a class subset or a
    channel-converted copy of the cached dataset never reads the whole one's values."""
    if not ds.cache:
        return compute()
    arrays = hashlib.sha256(json.dumps([ds.fingerprint, list(ds.shape)]).encode()).hexdigest()[:12]
    path = Path(ds.cache) / f"{key}-{arrays}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except OSError:  # a read-only cache still works, it just does not remember
        pass
    return value
