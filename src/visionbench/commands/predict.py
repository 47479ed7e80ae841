"""Label images with a run or an ensemble: a folder (or archive) of files, one CSV row per file
(`visionbench predict`), or image files, PIL images and arrays (the Python API)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..analysis.predictor import Predictor
from ..data.archive import is_archive
from ..data.arrays import LAYOUTS, image_batch, one_image
from ..data.cache import check_fits
from ..data.decode import IMAGE_EXTS, as_bytes, decode_all, file_bytes, to_rgb, unread_bytes
from ..data.images import iter_files, left_out
from ..data.multilabel import SEPARATOR
from ..data.split import to_channels
from ..errors import VisionbenchError

CSV_HEADER = ["file", "label", "confidence", "top_k", "error"]
# multi-label runs: `label` holds the predicted set as a labels CSV does ("a;b", so the file can
# be read back as csv: data) and `probabilities` every class's, highest first ("a:0.97 b:0.81 c:0.02")
MULTILABEL_CSV_HEADER = ["file", "label", "probabilities", "error"]


def decode_images(
    names: list,
    blobs: list[bytes | str | Path],
    shape: tuple[int, int, int],
    resize: str,
    where: str | Path = "the images given",
) -> tuple[list, np.ndarray, list[dict]]:
    """(names, uint8 NCHW images, skipped) for encoded images, decoded as the run's data was
    (images.decode: EXIF, alpha, 16-bit; the run's size, resize policy and channels). A blob
    that is not a readable image (or a str: why its file could not be read) is skipped; a
    path is read once the files and the arrays are known to fit in memory."""
    c, h, w = shape
    fix = "label the images a folder of them at a time"
    check_fits(len(blobs), (3, h, w), where, unread_bytes(blobs), fix=fix)
    kept, arrays, skipped = [], [], []
    for name, arr in zip(names, decode_all([as_bytes(b) for b in blobs], (h, w), resize)):
        if isinstance(arr, str):  # the decoder's reason
            skipped.append({"file": name, "reason": arr})
            continue
        kept.append(name)
        arrays.append(arr)
    # decoded as RGB; a greyscale run (MNIST, data.channels=1) gets their luma, as training did
    images = (
        to_channels(np.stack(arrays).transpose(0, 3, 1, 2).copy(), c)
        if arrays
        else np.zeros((0, c, h, w), np.uint8)
    )
    return kept, images, skipped


def read_images(
    path: Path, shape: tuple[int, int, int], resize: str
) -> tuple[list[str], np.ndarray, list[dict]]:
    """(files, uint8 NCHW images, skipped) for the images under `path` (see `decode_images`),
    in sorted order of relative path. Files that are not readable images are listed in
    `skipped`, and in a folder so is every other file but hidden ones: other file types, FIFOs
    and devices, broken symlinks and symlinks out of the folder, each with the reason."""
    entries = sorted(("/".join(parts), blob) for parts, blob in iter_files(path, read=False))
    skipped = left_out(path) if path.is_dir() else []
    files, images, bad = decode_images([n for n, _ in entries], [b for _, b in entries], shape, resize, path)
    return files, images, sorted(skipped + bad, key=lambda s: s["file"])


def is_folder(path) -> bool:
    return isinstance(path, (str, Path)) and (Path(path).is_dir() or is_archive(Path(path)))


def require_images(path: Path) -> None:
    """What `--images` takes: a folder, a .zip/.tar archive of images, or one image file."""
    kinds = "a folder, a .zip/.tar archive of images, or an image file"
    if not path.exists():
        raise VisionbenchError("does not exist", where=str(path), fix=f"check the --images path: {kinds}")
    if not (is_folder(path) or (path.is_file() and path.suffix.lower() in IMAGE_EXTS)):
        raise VisionbenchError(
            f"not {kinds} ({', '.join(sorted(IMAGE_EXTS))})",
            where=str(path),
            fix="give the folder the images are in, or an image file",
        )


def as_images(inputs, shape: tuple[int, int, int], resize: str) -> tuple[list, np.ndarray, list[dict]]:
    """(names, uint8 NCHW images, skipped) from what a Python caller has at hand: image files
    (paths), PIL images, or arrays / tensors in the layouts data.arrays.LAYOUTS states (one
    image or a batch), or a list of any of these. Arrays of the run's size and channels are
    taken as they are; anything else goes through the decoder, so it is resized and converted
    (mode, alpha, 16-bit) as the run's data was."""
    c, h, w = shape
    batch = image_batch(inputs, (h, w))
    if batch is not None:
        if batch.shape[1:] in ((1, h, w), (3, h, w)):
            return list(range(len(batch))), to_channels(batch, c), []
        inputs = [batch_image(img) for img in batch]
    if isinstance(inputs, (str, Path, Image.Image)):
        inputs = [inputs]
    if not isinstance(inputs, Iterable):
        raise cannot_predict(inputs)
    inputs = list(inputs)  # a generator is read once
    names = [str(x) if isinstance(x, (str, Path)) else i for i, x in enumerate(inputs)]
    return decode_images(names, [encoded(x, (h, w)) for x in inputs], shape, resize)


def batch_image(chw: np.ndarray) -> Image.Image:
    """One uint8 (C, H, W) image, C 1, 3 or 4, as a PIL image: L, RGB or RGBA."""
    return Image.fromarray(chw[0] if len(chw) == 1 else chw.transpose(1, 2, 0))


def encoded(item, size: tuple[int, int]) -> bytes | str:
    """The bytes `decode` reads: a file's (or why it cannot be read); a PIL image (or one array
    or tensor, see data.arrays) converted to RGB as the decoder converts a file's (EXIF, alpha,
    16-bit, float, CMYK), then as PNG - which cannot hold modes F or CMYK themselves."""
    if isinstance(item, (str, Path)):
        return file_bytes(Path(item))
    array = one_image(item, size)
    if array is not None:
        item = batch_image(array.transpose(2, 0, 1))
    if not isinstance(item, Image.Image):
        raise cannot_predict(item)
    try:
        rgb = to_rgb(item)
    except (OSError, ValueError) as e:  # a mode PIL cannot convert to RGB, a truncated file
        return f"cannot convert the image (mode {item.mode}) to RGB: {e}"
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    return buf.getvalue()


def cannot_predict(item) -> VisionbenchError:
    return VisionbenchError(
        f"cannot read {item!r:.60} ({type(item).__name__}) as an image",
        fix=f"give a folder, image files (paths), PIL images, or arrays or tensors: {LAYOUTS}",
    )


def label_rows(
    predictor: Predictor, images: np.ndarray, top_k: int = 5, tta: str | None = None
) -> list[dict]:
    """Per image: the predicted label, its confidence, and the top-k classes as "class:prob"."""
    if not len(images):
        return []
    out = predictor.outputs(images, tta)
    classes = predictor.classes
    if out.thresholds is not None:  # multi-label: the label set, every class's probability
        return [
            {
                "label": SEPARATOR.join(classes[c] for c in np.flatnonzero(chosen)),
                "probabilities": " ".join(f"{classes[c]}:{p[c]:.4f}" for c in np.argsort(-p, kind="stable")),
            }
            for chosen, p in zip(out.preds, out.probs)
        ]
    return [
        {
            "label": classes[out.preds[i]],
            "confidence": float(out.probs[i, out.preds[i]]),
            "top_k": " ".join(f"{classes[j]}:{out.probs[i, j]:.4f}" for j in top),
        }
        for i, top in enumerate(out.top_classes(top_k))
    ]


def predict_rows(predictor: Predictor, inputs, top_k: int = 5, tta: str | None = None) -> list[dict]:
    """One row per image (file, label, confidence, top_k, error): a folder or archive's files
    sorted by name, unreadable ones with the reason in `error`; other inputs in their order."""
    check_top_k(top_k, len(predictor.classes))
    shape, resize = predictor.spec.shape, predictor.cfg.data.resize
    folder = is_folder(inputs)
    if folder:  # a str too: the README's run.predict("photos/")
        inputs = Path(inputs)
    names, images, skipped = (read_images if folder else as_images)(inputs, shape, resize)
    if not names and not skipped:
        raise VisionbenchError(
            "no image files found", where=str(inputs), fix="point --images at a folder of images"
        )
    blank = {"probabilities": ""} if predictor.multilabel else {"confidence": None, "top_k": ""}
    rows = [{"file": s["file"], "label": "", **blank, "error": s["reason"]} for s in skipped]
    rows += [{"file": n, **r, "error": ""} for n, r in zip(names, label_rows(predictor, images, top_k, tta))]
    return sorted(rows, key=lambda r: str(r["file"])) if folder else rows


def check_top_k(top_k, classes: int) -> None:
    """top_k is a whole number from 1 (a bool is not one); more than the classes lists them all."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise VisionbenchError(
            f"top_k is how many classes each row lists, a whole number from 1, not {top_k!r}",
            fix=f"give top_k=5, or top_k={classes} to list all {classes} classes",
        )


def check_out(out: Path) -> None:
    """Refuse a CSV path that cannot be written - a folder, or a path below a file - before an
    image is predicted, not after."""
    if out.is_dir():
        raise VisionbenchError(
            "the output is a folder, not a CSV file",
            where=str(out),
            fix=f"give a file in it: {out / 'predictions.csv'}",
        )
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise VisionbenchError(
            f"cannot write the CSV below {blocker}: it is a file, not a folder",
            where=str(out),
            fix=f"give a path in a folder, e.g. {blocker.parent / 'predictions.csv'}",
        )


def write_predictions(rows: list[dict], out_csv: Path, multilabel: bool = False) -> None:
    """The CSV: CSV_HEADER's columns, or a multi-label run's MULTILABEL_CSV_HEADER."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    cell = lambda v: "" if v is None else f"{v:.4f}" if isinstance(v, float) else v
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        header = MULTILABEL_CSV_HEADER if multilabel else CSV_HEADER
        w.writerow(header)
        w.writerows([cell(r.get(k)) for k in header] for r in rows)


def predict_folder(
    predictor: Predictor, path: Path, out_csv: Path, top_k: int = 5, tta: str | None = None
) -> dict:
    """Write `out_csv` (file, label, confidence, top_k, error; sorted by file) for a folder, an
    archive or one image file, and return counts."""
    require_images(path)
    check_out(out_csv)
    rows = predict_rows(predictor, path, top_k, tta)
    write_predictions(rows, out_csv, predictor.multilabel)
    skipped = [{"file": r["file"], "reason": r["error"]} for r in rows if r["error"]]
    return {"predicted": len(rows) - len(skipped), "skipped": skipped, "csv": str(out_csv)}
