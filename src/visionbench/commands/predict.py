"""Label a folder (or archive) of images with a run or an ensemble: one CSV row per file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..analysis.predictor import Predictor
from ..data.archive import is_archive
from ..data.cache import check_fits
from ..data.decode import IMAGE_EXTS, as_bytes, decode_all, unread_bytes
from ..data.images import iter_files
from ..data.split import to_channels
from ..errors import VisionbenchError

CSV_HEADER = ["file", "label", "confidence", "top_k", "error"]


def read_images(
    path: Path, shape: tuple[int, int, int], resize: str
) -> tuple[list[str], np.ndarray, list[dict]]:
    """(files, uint8 NCHW images, skipped) for the images under `path`, decoded as the run's
    data was (images.decode: EXIF, alpha, 16-bit; the run's size, resize policy, channels), in
    sorted order of relative path. Files that are not readable images are listed in `skipped`."""
    if not (path.is_dir() or is_archive(path)):
        raise VisionbenchError(
            "not a folder or a .zip/.tar archive of images", where=str(path), fix="check the --images path"
        )
    entries = sorted(("/".join(parts), blob) for parts, blob in iter_files(path, read=False))
    skipped = []
    if path.is_dir():  # files iter_files passes over for their extension are listed too
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path)
            if (
                f.is_file()
                and f.suffix.lower() not in IMAGE_EXTS
                and not any(p.startswith(".") for p in rel.parts)
            ):
                skipped.append(
                    {
                        "file": rel.as_posix(),
                        "reason": f"not an image file type ({f.suffix or 'no extension'})",
                    }
                )
    c, h, w = shape
    files = unread_bytes(b for _, b in entries)
    check_fits(len(entries), (3, h, w), path, files, fix="label the images a folder of them at a time")
    files, arrays = [], []
    for (name, _), arr in zip(entries, decode_all([as_bytes(b) for _, b in entries], (h, w), resize)):
        if isinstance(arr, str):  # the decoder's reason
            skipped.append({"file": name, "reason": arr})
            continue
        files.append(name)
        arrays.append(arr)
    # decoded as RGB; a greyscale run (MNIST, data.channels=1) gets their luma, as training did
    images = (
        to_channels(np.stack(arrays).transpose(0, 3, 1, 2).copy(), c)
        if arrays
        else np.zeros((0, c, h, w), np.uint8)
    )
    return files, images, sorted(skipped, key=lambda s: s["file"])


def predict_folder(
    predictor: Predictor, path: Path, out_csv: Path, top_k: int = 5, tta: str | None = None
) -> dict:
    """Write `out_csv` (file, label, confidence, top_k, error; sorted by file) and return counts."""
    cfg = predictor.cfg
    files, images, skipped = read_images(path, predictor.spec.shape, cfg.data.resize)
    if not files and not skipped:
        raise VisionbenchError(
            "no image files found", where=str(path), fix="point --images at a folder of images"
        )
    classes = predictor.classes
    rows = [[s["file"], "", "", "", s["reason"]] for s in skipped]
    if files:
        out = predictor.outputs(images, tta)
        for i, (name, top) in enumerate(zip(files, out.top_classes(top_k))):
            topk = " ".join(f"{classes[j]}:{out.probs[i, j]:.4f}" for j in top)
            rows.append([name, classes[out.preds[i]], f"{out.probs[i, out.preds[i]]:.4f}", topk, ""])
    rows.sort(key=lambda r: r[0])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows(rows)
    return {"predicted": len(files), "skipped": skipped, "csv": str(out_csv)}
