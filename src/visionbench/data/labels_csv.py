"""Datasets described by a label CSV: one row per image, `file,label[,split]`, the way Kaggle
and most annotation tools hand them out. Paths are relative to the CSV's folder."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import VisionbenchError
from .cache import Dataset
from .decode import check_resize
from .images import SPLIT_NAMES, check_classes, class_name, decode_rows, is_hidden, with_test_split
from .multilabel import SEPARATOR, label_set

FILE_COLUMNS = ("file", "filename", "path", "image", "image_path", "image_name", "fname")
LABEL_COLUMNS = ("label", "class", "category", "target", "labels", "tags")  # the last two: multi-label CSVs


def _column(header: list[str], names: tuple[str, ...], what: str, path: Path) -> str:
    found = next((h for h in header if h.strip().lower() in names), None)
    if found is None:
        raise VisionbenchError(
            f"the label CSV has no {what} column (its header: {', '.join(header) or 'empty'})",
            where=str(path),
            fix=f"name the column one of: {', '.join(names)}",
        )
    return found


def read_label_csv(path: Path, img_size: int | None = None, resize: str = "crop", task: str = "auto"):
    """(classes, {split: (images, labels)}, skipped, originals) like `read_image_folder`. A listed file
    that is missing or unreadable is skipped with the reason (the data report lists it, and
    data.strict / data.max_bad_fraction decide whether that is an error). Unless `task` is
    "single", a label column with any `a;b` cell makes every label a set (multilabel.label_set);
    an empty cell is then an image with no labels, where single-label data needs one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VisionbenchError(f"cannot read the label CSV: {e}", where=str(path)) from None
    file_col = _column(header, FILE_COLUMNS, "file", path)
    label_col = _column(header, LABEL_COLUMNS, "label", path)
    split_col = next((h for h in header if h.strip().lower() == "split"), None)
    base, rows, skipped, seen = path.parent.resolve(), [], [], {}
    sets = task != "single" and any(SEPARATOR in (rec.get(label_col) or "") for rec in records)
    for line, rec in enumerate(records, start=2):  # line 1 is the header
        raw = (rec.get(label_col) or "").strip()
        name, label = (rec.get(file_col) or "").strip(), label_set(raw) if sets else class_name(raw)
        split = (rec.get(split_col) or "train").strip().lower() if split_col else "train"
        where = f"{path}:{line}"
        if not name or not (sets or label):
            raise VisionbenchError(
                "a row without a file or a label", where=where, fix="fill it in or delete it"
            )
        if split not in SPLIT_NAMES:
            raise VisionbenchError(
                f"unknown split '{split}'", where=where, fix=f"use one of: {', '.join(sorted(SPLIT_NAMES))}"
            )
        if name in seen:
            if seen[name] != (split, label):
                raise VisionbenchError(
                    f"{name} is listed twice, as {seen[name]} and as {(split, label)}",
                    where=where,
                    fix="keep one row per file",
                )
            continue
        seen[name] = (split, label)
        file = (base / name).resolve()
        if not file.is_relative_to(base) or is_hidden(Path(name).parts):
            skipped.append({"file": name, "reason": "outside the CSV's folder or hidden: not read"})
            continue
        blob: Path | str = file  # read later, once the memory it takes is known to fit
        try:
            file.stat()
        except OSError as e:
            blob = f"listed in {path.name} but cannot be read ({e.strerror or e})"
        rows.append((SPLIT_NAMES[split], label, name, blob))
    if not rows:
        raise VisionbenchError("the label CSV lists no readable images", where=str(path))
    classes = check_classes(rows, path)
    return classes, *decode_rows(rows, classes, img_size, resize, skipped, path)


def read_csv(
    name: str, path: Path, img_size: int | None = None, resize: str = "crop", task: str = "auto"
) -> Dataset:
    """A `csv:PATH` dataset: `read_label_csv`, with a fixed test split carved if none."""
    if not path.is_file():
        raise VisionbenchError(
            "not a CSV file", where=str(path), fix="give the CSV itself: csv:path/to/labels.csv"
        )
    check_resize(resize)
    return with_test_split(name, *read_label_csv(path, img_size, resize, task))
