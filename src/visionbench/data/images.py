"""Image folders (`<split>/<class>/<file>` or `<class>/<file>`, in a directory or an archive)
read into uint8 arrays, or into files streamed per batch (`folder:PATH` datasets)."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import VisionbenchError
from . import cache
from .archive import is_archive, iter_members
from .cache import Dataset, Split
from .decode import (
    IMAGE_EXTS,
    as_bytes,
    check_resize,
    decode_all,
    file_bytes,
    no_readable,
    not_regular,
    summarize_origins,
    target_size,
    unread_bytes,
)
from .multilabel import all_classes, label_array, labels_of, merge_duplicates
from .split import stratified_split

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def class_name(raw: str) -> str:
    """A class's name from a folder name or a CSV label, in Unicode NFC: "café" typed on Linux
    (NFC) and named by macOS (NFD, é as e + U+0301) print alike and are one class."""
    return unicodedata.normalize("NFC", raw)


def is_hidden(parts: tuple[str, ...]) -> bool:
    # .DS_Store, ._resource forks, .ipynb_checkpoints, Thumbs.db: never images, never classes
    return any(p.startswith(".") or p == "Thumbs.db" or p == "__MACOSX" for p in parts)


def is_image_file(parts: tuple[str, ...]) -> bool:
    return os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTS and not is_hidden(parts)


def iter_files(
    path: Path, read: bool = True, skipped: list[dict] | None = None
) -> Iterator[tuple[tuple[str, ...], bytes | str | Path]]:
    """(relative path parts, bytes) of every candidate image file, in a directory or archive;
    for a file that cannot be read, the reason (str) instead of its bytes; with `read` off
    (directories only), the file's path instead of its bytes.

    Archives are streamed by `archive.iter_members` (capped, never extracted); the members it
    refuses (`..`, absolute paths, links, devices) go to `skipped`, or without it come last as
    ((name,), reason). In folders, directory symlinks are not followed (no loops) and file
    symlinks that leave the root are ignored.
    """
    if path.is_dir():
        yield from _folder_files(path, read)
        return
    refused: list[dict] = [] if skipped is None else skipped
    yield from iter_members(path, is_image_file, refused)
    if skipped is None:  # nowhere to list them: they come back as files that cannot be used
        yield from (((r["file"],), r["reason"]) for r in refused)


def _folder_files(path: Path, read: bool) -> Iterator[tuple[tuple[str, ...], bytes | str | Path]]:
    root = path.resolve()
    for full in cache.data_files(path):  # runs/ and cache folders left out
        parts = full.relative_to(path).parts
        if is_image_file(parts) and not passed_over(full, root):
            yield parts, file_bytes(full) if read else full


def passed_over(full: Path, root: Path) -> str | None:
    """Why a file in the folder `root` is not read, whatever its name: a broken symlink, a
    symlink out of the folder, a FIFO, socket or device (reading a FIFO waits for ever); None
    for a file that is read."""
    if full.is_symlink():
        target = full.resolve()
        if not target.exists():
            return "a broken symlink (its target does not exist)"
        if not target.is_relative_to(root):
            return "a symlink to a file outside the folder: not followed"
    try:
        return not_regular(full.stat().st_mode)
    except OSError as e:  # deleted since listing
        return f"cannot read the file ({e.strerror or e})"


def left_out(path: Path) -> list[dict]:
    """{"file", "reason"} for each file in the folder `path` that `iter_files` passes over, but
    hidden ones (.DS_Store, Thumbs.db): not an image file type, or a reason `passed_over` gives."""
    root, out = path.resolve(), []
    for full in cache.data_files(path):
        parts = full.relative_to(path).parts
        if is_hidden(parts):
            continue
        reason = passed_over(full, root)
        if reason is None and not is_image_file(parts):
            reason = f"not an image file type ({full.suffix or 'no extension'})"
        if reason:
            out.append({"file": "/".join(parts), "reason": reason})
    return out


def check_no_empty_class_folders(path: Path, has_splits: bool) -> None:
    """An empty class folder is an error: a class with no images cannot be learned or scored.
    A folder holding only runs or array caches (runs/ in `folder:.`) is no class at all."""
    parents = (
        [d for d in path.iterdir() if d.is_dir() and d.name.lower() in SPLIT_NAMES] if has_splits else [path]
    )
    for parent in parents:
        for d in sorted(parent.iterdir()):
            if not d.is_dir() or is_hidden((d.name,)):
                continue
            tools: list[Path] = []
            if any(is_image_file(f.relative_to(d).parts) for f in cache.data_files(d, tools)) or tools:
                continue
            raise VisionbenchError(
                "empty class folder: no images in it", where=str(d), fix="add images or remove the folder"
            )


def read_image_folder(
    path: Path, img_size: int | None = None, resize: str = "crop", stream: bool = False, task: str = "auto"
):
    """Read `<split>/<class>/<file>` (or `<class>/<file>`) trees, in a folder or an archive.

    Returns (classes, {split: (images NCHW, labels)}, skipped, originals: modes and sizes of the
    files as stored; see `summarize_origins`). Labels follow the sorted
    class names of the training split; a class found only outside train is an error.
    With `stream` (folders only) nothing is decoded: images are `FileImages`, read per batch.
    Unless `task` is "single", one file filed under several class folders (same name, same
    bytes) is one image with that set of labels, and every label a multi-hot row.
    """
    skipped: list[dict] = []  # refused archive members first, then files that fit no folder
    entries = list(iter_files(path, read=False, skipped=skipped))  # folders: paths, read once sized
    if not entries:
        raise VisionbenchError(
            "no images found",
            where=str(path),
            fix="expected <split>/<class>/<image> or <class>/<image> image files",
        )
    # strip a common wrapper folder (e.g. cifar10-jpg/) shared by every file - never a split
    # folder: test/<class>/ alone is a test split without training images, not a wrapper
    while (
        len(tops := {p[0] for p, _ in entries}) == 1
        and min(len(p) for p, _ in entries) > 2
        and tops.pop().lower() not in SPLIT_NAMES
    ):
        entries = [(p[1:], b) for p, b in entries]
    # split folders (train/ val/ test/) when any top-level folder is one; stray files are reported
    has_splits = any(len(p) >= 3 and p[0].lower() in SPLIT_NAMES for p, _ in entries)
    rows = []  # (split, class, file, blob)
    for parts, blob in entries:
        if has_splits and len(parts) >= 3 and parts[0].lower() in SPLIT_NAMES:
            rows.append((SPLIT_NAMES[parts[0].lower()], class_name(parts[1]), "/".join(parts), blob))
        elif not has_splits and len(parts) >= 2:
            rows.append(("train", class_name(parts[0]), "/".join(parts), blob))  # the top folder is the class
        else:
            where = "<split>/<class>/" if has_splits else "<class>/"
            skipped.append({"file": "/".join(parts), "reason": f"not inside a {where} folder"})
    if task != "single":
        rows, _ = merge_duplicates(rows, 2 if has_splits else 1)
    train_classes = check_classes(rows, path)
    if path.is_dir():
        check_no_empty_class_folders(path, has_splits)
    if stream:
        from .stream import file_splits

        if rows and isinstance(rows[0][1], tuple):
            raise VisionbenchError(
                "data.stream reads single-label folders; this one files images under several classes",
                where=str(path),
                fix="drop data.stream (multi-label folders are cached), or data.task=single",
            )

        splits, chosen = file_splits(rows, train_classes, img_size, resize)
        return train_classes, splits, skipped, chosen
    return train_classes, *decode_rows(rows, train_classes, img_size, resize, skipped, path, path.is_dir())


def check_classes(rows: list[tuple], path: Path) -> list[str]:
    """The sorted training classes of (split, class, ...) rows: at least two, no case clash,
    and no class that only other splits have (labels go by class name, never by index)."""
    train_classes = sorted(all_classes(c for s, c, _, _ in rows if s == "train"))
    others = sorted({f"{s}/" for s, _, _, _ in rows})
    if not train_classes and others:
        raise VisionbenchError(
            f"no train/ split: the folder has {' and '.join(others)} only",
            where=str(path),
            fix="put the training images in train/<class>/<image> beside "
            f"{' and '.join(others)}, or give the class folders alone (<class>/<image>: "
            "a 20% test split is carved from them)",
        )
    if not train_classes:
        raise VisionbenchError(
            "no training images (expected a train/ folder or class folders)", where=str(path)
        )
    extra = sorted(all_classes(c for s, c, _, _ in rows if s != "train") - set(train_classes))
    if extra:
        raise VisionbenchError(
            f"classes found outside train but not in train: {', '.join(extra)}",
            where=str(path),
            fix="every class needs training images; rename or remove those folders",
        )
    if len(train_classes) < 2:
        raise VisionbenchError(
            f"only one class ({train_classes[0]}): a classifier needs at least two",
            where=str(path),
            fix="put each class's images in a folder of its own",
        )
    folded: dict[str, list[str]] = {}
    for c in train_classes:
        folded.setdefault(c.casefold(), []).append(c)
    clash = [names for names in folded.values() if len(names) > 1]
    if clash:
        raise VisionbenchError(
            f"class folders differ only by case: {', '.join('/'.join(n) for n in clash)}",
            where=str(path),
            fix="merge or rename them: on macOS and Windows they would be one folder",
        )
    return train_classes


def decode_rows(
    rows: list[tuple],
    classes: list[str],
    img_size: int | None,
    resize: str,
    skipped: list,
    source: Path,
    streamable: bool = False,
):
    """(split, class, file, blob) rows -> ({split: (images NCHW, labels)}, skipped, originals),
    decoded on every core; a blob is the file's bytes, its path (read here) or why it cannot
    be read. A file that does not decode is appended to `skipped` with the reason; a split
    whose every file failed is there, empty (load_dataset names it); a class whose every file
    failed is an error. Without `img_size`, decode.auto_size chooses one size for all; the
    files read and the arrays must fit in memory (cache.check_fits) before a byte is read."""
    size, chosen = target_size(img_size, [r[3] for r in rows])
    files = unread_bytes(r[3] for r in rows)
    cache.check_fits(len(rows), (3, *(size or (0, 0))), source, files, streamable)
    origins: list[str | None] = []
    arrays = decode_all([as_bytes(r[3]) for r in rows], size, resize, origins)
    picked: dict[str, list[tuple[np.ndarray, str | tuple]]] = {split: [] for split, *_ in rows}
    failed: dict[str, list[dict]] = {}  # per class
    for (split, cls, name, _), arr in zip(rows, arrays):
        if isinstance(arr, str):
            skipped.append({"file": name, "reason": arr})
            for c in labels_of(cls):
                failed.setdefault(c, []).append(skipped[-1])
        else:
            picked[split].append((arr, cls))
    decoded = all_classes(label for items in picked.values() for _, label in items)
    dead = [c for c in failed if decoded and c not in decoded]  # as good as an empty folder
    if dead:
        raise no_readable(
            f"images of class {', '.join(dead[:5])}", [s for c in dead for s in failed[c]], source
        )
    shape = (3, *(size or (0, 0)))
    out = {}
    for split, items in picked.items():
        images = np.empty((len(items), *shape), np.uint8)  # filled in place: no stacked copy
        for i, (arr, _) in enumerate(items):
            images[i] = arr.transpose(2, 0, 1)
        out[split] = (images, label_array([label for _, label in items], classes))
    return out, skipped, {**summarize_origins(origins), **chosen}


def read_folder(
    name: str,
    path: Path,
    img_size: int | None = None,
    resize: str = "crop",
    stream: bool = False,
    task: str = "auto",
) -> Dataset:
    """A `folder:PATH` dataset: `read_image_folder`, with a fixed test split carved if none."""
    if not (path.is_dir() or is_archive(path)):
        raise VisionbenchError("not a folder or a .zip/.tar archive", where=str(path))
    if stream and not path.is_dir():
        raise VisionbenchError(
            "data.stream reads files from a folder, not from an archive",
            where=str(path),
            fix="extract the archive and give the folder, or drop data.stream (archives are cached)",
        )
    check_resize(resize)
    ds = with_test_split(name, *read_image_folder(path, img_size, resize, stream, task))
    if stream:
        from .stream import stream_fingerprint

        ds.fingerprint = stream_fingerprint(ds.classes, ds.splits)
    return ds


def with_test_split(
    name: str, classes: list[str], arrays: dict, skipped: list[dict], originals: dict
) -> Dataset:
    """The Dataset of read splits; without a test split, a fixed stratified 20% of train."""
    splits = {s: Split(x, y) for s, (x, y) in arrays.items()}
    notes = []
    if "test" not in splits and len(splits.get("train", ())):  # none given: carve a fixed one
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
