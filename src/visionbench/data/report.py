"""What a dataset holds and what looks wrong with it: counts, imbalance, gaps, leaks, skips."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from ..errors import VisionbenchError
from .cache import Dataset
from .split import class_counts

IMBALANCE_RATIO = 3.0  # largest / smallest class in a split above this gets a warning
IMBALANCE_ADVICE = (
    "with imbalanced classes, train with train.class_weights=balanced (a weighted loss) or "
    "data.sampler=balanced (class-balanced batches), and judge runs by balanced accuracy and "
    "macro-F1 (summary.json balanced_acc, macro_f1): top-1 hides a class never predicted"
)


def image_hashes(images: np.ndarray) -> np.ndarray:
    """A 64-bit digest per image (exact-duplicate detection; blake2b, not Python's hash)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat], dtype="S8")


def dataset_report(ds: Dataset, carved: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Counts per class and split, with warnings a person should read before training. With
    `carved` (train indices kept, train indices held out for validation), "train" counts the
    images trained on and "val" those held out, and leaks between the two are looked for too."""
    n_classes = len(ds.classes)
    parts: dict[str, tuple[str, np.ndarray | None]] = {s: (s, None) for s in ds.splits}  # (split, indices)
    if carved is not None and len(carved[1]) and "val" not in ds.splits:
        parts = {"train": ("train", carved[0]), "val": ("train", carved[1])} | {
            s: (s, None) for s in ds.splits if s != "train"
        }
    pick = lambda values, idx: values if idx is None else values[idx]
    counts = {
        p: class_counts(pick(ds.splits[s].labels, idx), n_classes).tolist() for p, (s, idx) in parts.items()
    }
    warnings = zero_padded_twins(ds.classes)
    for split, per_class in counts.items():
        missing = [ds.classes[i] for i, n in enumerate(per_class) if n == 0]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            warnings.append(f"{len(missing)} classes have no {split} images: {shown}")
        present = [n for n in per_class if n]
        if present and max(present) > IMBALANCE_RATIO * min(present):
            big, small = int(np.argmax(per_class)), int(np.argmin([n or np.inf for n in per_class]))
            warnings.append(
                f"class imbalance in {split}: {ds.classes[big]} has {per_class[big]:,} images, "
                f"{ds.classes[small]} {per_class[small]:,}"
            )
    streamed = not isinstance(ds.splits["train"].images, np.ndarray)  # files, read per batch
    whole = {} if streamed else {s: image_hashes(v.images) for s, v in ds.splits.items()}
    hashes = {p: pick(whole[s], idx) for p, (s, idx) in parts.items()} if whole else {}
    duplicates = {}
    splits = sorted(hashes)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            n = int(np.isin(hashes[b], hashes[a]).sum())
            if n:
                duplicates[f"{a}/{b}"] = n
                warnings.append(f"{n:,} {b} images are exact copies of {a} images (a leak between splits)")
    if ds.skipped:
        warnings.append(f"{len(ds.skipped):,} files were skipped (each listed with its reason)")
    return {
        "classes": ds.classes,
        "shape": list(ds.shape),
        "counts": counts,
        "duplicates_across_splits": duplicates,
        "skipped": ds.skipped,
        "notes": ds.notes
        + (["streamed from files: duplicates across splits not checked"] if streamed else []),
        "warnings": warnings,
    }


def zero_padded_twins(classes: list[str]) -> list[str]:
    """A warning per group of class names that differ only by leading zeros ("01" and "1",
    "img_007" and "img_7"): to the model they are two classes, to a person likely one (a
    spreadsheet drops the zero of "01")."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(re.sub(r"\d+", lambda m: str(int(m.group())), c), []).append(c)
    return [
        f"classes {' and '.join(repr(n) for n in names)} differ only by leading zeros: they are "
        f"{len(names)} classes; if they are one, give them one name"
        for names in groups.values()
        if len(names) > 1
    ]


def with_advice(warnings: list[str]) -> list[str]:
    """The warnings, with what to do after the imbalance ones (added after the memo, so a
    report cached before it says it too)."""
    last = max((i for i, w in enumerate(warnings) if w.startswith("class imbalance")), default=None)
    return warnings if last is None else [*warnings[: last + 1], IMBALANCE_ADVICE, *warnings[last + 1 :]]


def check_skipped(ds: Dataset, strict: bool, max_bad_fraction: float) -> None:
    """Skipped files are fine in small numbers; `strict` or too many make them an error."""
    if not ds.skipped:
        return
    total = len(ds.skipped) + sum(len(s) for s in ds.splits.values())
    fraction = len(ds.skipped) / total
    if strict or fraction > max_bad_fraction:
        listed = "; ".join(f"{s['file']}: {s['reason']}" for s in ds.skipped[:5])
        more = f" (and {len(ds.skipped) - 5} more)" if len(ds.skipped) > 5 else ""
        why = "data.strict is on" if strict else f"more than {max_bad_fraction:.0%} of the files"
        raise VisionbenchError(
            f"{len(ds.skipped)} files skipped ({fraction:.1%}; {why}): {listed}{more}",
            where=ds.source,
            fix="remove or replace those files, or raise data.max_bad_fraction",
        )
