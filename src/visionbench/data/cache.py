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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VisionbenchError

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
# bump when the decoded bytes, or what is kept of the files, change (2: float TIFFs scaled;
# 3: file formats kept)
CACHE_VERSION = 3


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
    # files as stored: {"formats": {...}, "modes": {...}, "sizes": {...}}
    originals: dict = field(default_factory=dict)
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


# Decoding holds every image twice for a moment (decoded, then in the array), beside the
# file bytes: arrays larger than this share of the memory are refused before decoding starts
# (a folder decoded at 3000x3000 px was killed by the kernel at 24 GB).
MEMORY_SHARE = 0.25
STREAM_BATCH = 128  # images a streamed batch holds (the default batch size)


def memory_total() -> int | None:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return total


def memory_available() -> int | None:
    """Bytes of memory free for this process now: the kernel's MemAvailable (free memory and
    page cache it can drop), or what is left under its cgroup's limit if less (its usage counts
    the page cache too: the inactive part is added back, as MemAvailable does)."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        stat = Path("/sys/fs/cgroup/memory.stat").read_text().split()
        cache = dict(zip(stat[::2], stat[1::2])).get("inactive_file", "0")  # page cache it can drop
        free = min(free, int(limit) - used + int(cache)) if limit.isdigit() else free
    except (OSError, ValueError):
        pass
    return free


def check_fits(
    n: int,
    shape: tuple[int, int, int],
    where: str | Path,
    files: int = 0,
    streamable: bool = False,
    fix: str | None = None,
) -> None:
    """Refuse, before anything is read, `n` images decoded to `shape` (C, H, W) - after `files`
    bytes of image files are read into memory - when that is more than the memory allows."""
    total, arrays = memory_total(), n * int(np.prod(shape))
    budget = MEMORY_SHARE * (total or 0)
    if not total or arrays + files <= budget:
        return
    fixes = []
    side = int((max(0, budget - files) / (n * shape[0])) ** 0.5) // 8 * 8  # the largest that fits
    if side >= 8:
        fixes.append(f"set a smaller data.img_size (at most {min(side, 224)})")
    if streamable and STREAM_BATCH * arrays / n <= budget:  # streaming holds a batch at a time
        fixes.append("data.stream=true to decode each batch from the files")
    read = f" after {size_text(files)} of files are read" if files else ""
    raise VisionbenchError(
        f"{n:,} images at {shape[1]}x{shape[2]} px need {size_text(arrays)} as arrays{read}, more than "
        f"{MEMORY_SHARE:.0%} of the {size_text(total)} of memory here",
        where=str(where),
        fix=fix or ", or ".join(fixes) or "use fewer or smaller image files",
    )


def size_text(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


# A run or array-cache folder inside a data folder (`folder:.` where runs/ is) is never read
# as images, and what a run writes there never changes the data's cache key. Each is known by
# its own files, seen while walking (no extra file system calls, no marker to leave around).
RUN_RECORD = {"run.json", "environment.json", "metrics.jsonl"}


def is_tool_folder(filenames: list[str]) -> bool:
    names = set(filenames)
    run = "config.yaml" in names and bool(names & RUN_RECORD)
    return run or any(n.endswith(("_images.npy", "_labels.npy")) for n in names)


def data_files(path: Path, tool_folders: list[Path] | None = None) -> list[Path]:
    """Every file under a data folder (symlinked folders not followed), the run and cache
    folders in it left out - and appended to `tool_folders` when given."""
    found = []
    for depth, (dirpath, dirnames, filenames) in enumerate(os.walk(path)):
        dirnames.sort()
        if depth and is_tool_folder(filenames):
            dirnames[:] = []
            if tool_folders is not None:
                tool_folders.append(Path(dirpath))
            continue
        found += [Path(dirpath, f) for f in sorted(filenames)]
    return found


def source_key(name: str, path: Path, options: dict) -> str:
    """Identity of what would be decoded: source name, files (path, size, mtime), options."""
    files = data_files(path) if path.is_dir() else [path]
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
    """The dataset's arrays and what was read into `folder`, whole or absent (write_arrays)."""
    arrays = {}
    for split, s in ds.splits.items():
        arrays[f"{split}_images"] = s.images
        arrays[f"{split}_labels"] = s.labels.astype(np.int64)
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
    write_arrays(folder, arrays, meta)


def write_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write each array as <name>.npy, and meta.json with every file's size and sha256, into a
    temp folder, then rename it to `folder`: whole or absent (the array cache, cached features)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(folder.parent)
    prefix = f"{folder.name}.tmp-{os.getpid()}-{_host()}-"
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=prefix))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        files = {f.name: file_record(f) for f in sorted(tmp.glob("*.npy"))}
        (tmp / "meta.json").write_text(json.dumps({"files": files, **meta}, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_record(path: Path) -> dict:
    """What a cached array file must be when read back: its size and sha256. A full hash costs
    0.13 s for CIFAR-10's 180 MB (measured; SHA extensions), little beside a run, and a sampled
    one would miss a zeroed page; the size alone catches a truncated file first."""
    with open(path, "rb") as f:
        return {"bytes": os.fstat(f.fileno()).st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def damage(folder: Path, meta: dict) -> str | None:
    """Why the cache's files are not what was written (truncated, changed, missing), or None."""
    expected = meta.get("files")
    if not expected:
        return "written by an older version, without file hashes"
    for name, want in expected.items():
        size = (folder / name).stat().st_size
        if size != want["bytes"]:
            return f"damaged: {name} has {size:,} bytes, {want['bytes']:,} were written"
        if file_record(folder / name)["sha256"] != want["sha256"]:
            return f"damaged: {name} changed since it was written (its sha256 differs)"
    return None


def discard(folder: Path) -> None:
    """Remove a cache that cannot be used: renamed away first (atomic: of processes that found
    it damaged one removes it, and a rebuild landing meanwhile is never touched; the name is
    one `remove_stale_builds` knows, should the removal be cut short), then deleted."""
    trash = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{_host()}-damaged_")
    try:
        os.rename(folder, trash)
    except OSError:  # another process removed it first, or a read-only cache: rebuilt in memory
        return
    shutil.rmtree(trash, ignore_errors=True)


def load(folder: Path, on_damage: Callable[[str], None] | None = None) -> Dataset | None:
    """The cached dataset, its files checked against what was written; None when absent or
    damaged (then removed, and `on_damage` told why in one line: the caller rebuilds it)."""
    return load_checked(folder, read_arrays, "array cache", "decoding the data again", on_damage)


def load_checked(
    folder: Path,
    read: Callable[[Path, dict], Any],
    what: str,
    then: str,
    on_damage: Callable[[str], None] | None = None,
) -> Any:
    """`read(folder, meta)` once the files written by write_arrays are checked against their
    sizes and hashes; None when absent or damaged (then removed, and `on_damage` told why)."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_bytes())
        why = damage(folder, meta)
        if why is None:
            return read(folder, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # any damage at all
        why = f"damaged: {type(e).__name__}: {e}"
    discard(folder)
    (on_damage or warnings.warn)(f"{what} {folder}: {why}; {then}")
    return None


def read_arrays(folder: Path, meta: dict) -> Dataset:
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
