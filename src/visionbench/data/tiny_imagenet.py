"""Tiny ImageNet (200 ImageNet classes at 64x64) from its official layout, a folder or the zip
read in place: wnids.txt, words.txt, train/<wnid>/images/, val/ with val_annotations.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VisionbenchError
from .archive import iter_members
from .cache import Dataset, Split
from .decode import decode_all
from .download import Remote
from .images import iter_files
from .official import require_files
from .sources import Source, register

TINY = "tiny-imagenet-200"
TINY_LISTS = ("wnids.txt", "words.txt", "val/val_annotations.txt")


def tiny_lists(path: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """Where tiny-imagenet-200/ starts inside `path` (as path parts) and its three text lists."""
    if path.is_dir():  # the folder itself, or a copy unzipped into a folder of the same name
        base = path / TINY if (path / TINY / "wnids.txt").is_file() else path
        texts = {rel: (base / rel).read_bytes() for rel in TINY_LISTS if (base / rel).is_file()}
        prefix = base.relative_to(path).parts
    else:  # the zip: one pass reads the lists, at the top or under tiny-imagenet-200/
        lists = {(*top, *rel.split("/")) for top in ((), (TINY,)) for rel in TINY_LISTS}
        # refused members are listed once, by the pass over the images (`tiny_rows`)
        found = dict(iter_members(path, lists.__contains__, skipped=[]))
        prefix = (TINY,) if (TINY, "wnids.txt") in found else ()
        texts = {rel: found[key] for rel in TINY_LISTS if (key := (*prefix, *rel.split("/"))) in found}
    fix = f"expected the official {TINY} layout; download {TINY}.zip again"
    require_files(texts, TINY_LISTS, "Tiny ImageNet", path, fix)
    return prefix, {rel: blob.decode("utf-8", "replace") for rel, blob in texts.items()}


def val_labels(text: str, index: dict[str, int], where: str) -> dict[str, int]:
    """val_annotations.txt: `file <tab> wnid <tab> box...` per line, as {file: class index}."""
    labels = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise VisionbenchError(
                "val annotation names no class of wnids.txt"
                if len(fields) >= 2
                else "val annotation is not `file<TAB>wnid<TAB>...`",
                where=f"{where} line {n}: {line!r}",
                fix="the annotations and wnids.txt must come from the same download",
            )
        labels[fields[0]] = index[fields[1]]
    return labels


def member_path(path: Path, name: str) -> str:
    """A file inside a folder as a path; inside an archive as archive:member."""
    return str(path / name) if path.is_dir() else f"{path}:{name}"


def tiny_rows(path: Path, prefix: tuple[str, ...], index: dict[str, int], val: dict[str, int]):
    """(split, label, file, bytes) of each labelled image, and the images that fit no slot."""
    rows, skipped, val = [], [], dict(val)  # val: what is still to be found
    for parts, blob in iter_files(path, skipped=skipped):
        rel = parts[len(prefix) :] if parts[: len(prefix)] == prefix else ()
        name = "/".join(parts)
        # train/<wnid>/images/<file>: the class is the wnid folder; "images" is only a subfolder
        if len(rel) == 4 and rel[0] == "train" and rel[2] == "images":
            if rel[1] not in index:
                raise VisionbenchError(
                    f"training folder {rel[1]} is not in wnids.txt",
                    where=member_path(path, "/".join(parts[:-2])),
                    fix="remove the folder or use the wnids.txt of the same download",
                )
            rows.append(("train", index[rel[1]], name, blob))
        elif len(rel) == 3 and rel[:2] == ("val", "images"):
            if rel[2] not in val:
                raise VisionbenchError(
                    "validation image has no line in val/val_annotations.txt",
                    where=member_path(path, name),
                    fix="add its line or remove the image",
                )
            rows.append(("test", val.pop(rel[2]), name, blob))
        elif rel[:1] != ("test",):  # test/ is unlabeled: skipped on purpose (see the note)
            skipped.append({"file": name, "reason": f"outside the {TINY} layout"})
    if val:  # listed in the annotations, never found
        missing = "/".join((*prefix, "val", "images", sorted(val)[0]))
        raise VisionbenchError(
            f"{len(val)} files listed in val/val_annotations.txt are missing",
            where=member_path(path, missing),
            fix=f"download {TINY}.zip again",
        )
    return rows, skipped


def read_tiny_imagenet(path: Path) -> Dataset:
    prefix, texts = tiny_lists(path)
    # classes in sorted wnid order, not wnids.txt's line order: it is the order torchvision's
    # ImageFolder gives train/, so labels (and checkpoints) agree with the usual pipelines
    wnids = sorted({w.strip() for w in texts["wnids.txt"].splitlines() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    words = dict(line.split("\t", 1) for line in texts["words.txt"].splitlines() if "\t" in line)
    annotations = member_path(path, "/".join((*prefix, "val", "val_annotations.txt")))
    val = val_labels(texts["val/val_annotations.txt"], index, annotations)
    rows, skipped = tiny_rows(path, prefix, index, val)
    images = np.empty((len(rows), 3, 64, 64), np.uint8)  # filled in place, not stacked from a list
    keep = np.zeros(len(rows), bool)
    for i, (arr, (_, _, name, _)) in enumerate(zip(decode_all([r[3] for r in rows], (64, 64)), rows)):
        if isinstance(arr, str):
            skipped.append({"file": name, "reason": arr})
        else:
            images[i], keep[i] = arr.transpose(2, 0, 1), True  # a few official images are grey: now RGB
    labels = np.array([r[1] for r in rows], np.int64)
    is_split = {s: np.array([r[0] == s for r in rows], bool) & keep for s in ("train", "test")}
    splits = {s: Split(images[m], labels[m]) for s, m in is_split.items()}
    empty = [w for w, n in zip(wnids, np.bincount(splits["train"].labels, minlength=len(wnids))) if n == 0]
    if empty:
        raise VisionbenchError(
            f"no training images for {len(empty)} classes of wnids.txt: {', '.join(empty[:5])}",
            where=str(path),
            fix=f"expected train/<wnid>/images/*.JPEG for every wnid; download {TINY}.zip again",
        )
    notes = [
        "test split is the official val/ (labels from val/val_annotations.txt): the de-facto test set",
        "the official test/ images are unlabeled and were not read",
        "classes are WordNet ids in sorted order; readable names (words.txt) are in class_names",
    ]
    class_names = [words.get(w, w).strip() for w in wnids]
    return Dataset("tiny-imagenet", wnids, splits, skipped=skipped, notes=notes, class_names=class_names)


register(
    Source(
        "tiny-imagenet",
        lambda root: [root / TINY, root / f"{TINY}.zip"],
        read_tiny_imagenet,
        [Remote(f"http://cs231n.stanford.edu/{TINY}.zip", f"{TINY}.zip", "90528d7ca1a48142e341f4ef8d21d0de")],
        hint=f"{TINY}/ or {TINY}.zip (the official layout: wnids.txt, train/, val/)",
    )
)
