"""Label images with a run or an ensemble: a folder (or archive) of files, one CSV row per file
(`visionbench predict`), or image files, PIL images and arrays (the Python API)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..analysis.predictor import Predictor
from ..data.archive import is_archive
from ..data.cache import check_fits
from ..data.decode import IMAGE_EXTS, as_bytes, decode_all, file_bytes, to_uint8, unread_bytes
from ..data.images import iter_files
from ..data.split import to_channels
from ..errors import VisionbenchError

CSV_HEADER = ["file", "label", "confidence", "top_k", "error"]


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
    in sorted order of relative path. Files that are not readable images are listed in `skipped`."""
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
    (paths), PIL images, or arrays / tensors - one image (HW, CHW, HWC) or a batch (NHW, NCHW,
    NHWC), uint8 or floats in [0, 1]. Arrays of the run's size are taken as they are; anything
    else goes through the decoder, so it is resized and converted as the run's data was."""
    from PIL import Image

    if hasattr(inputs, "detach"):  # a torch tensor
        inputs = inputs.detach().cpu().numpy()
    if isinstance(inputs, (str, Path, Image.Image)):
        inputs = [inputs]
    if not isinstance(inputs, (np.ndarray, Iterable)):
        raise cannot_predict(inputs)
    if isinstance(inputs, np.ndarray):
        batch = as_batch(inputs, shape)
        if batch.shape[2:] == shape[1:]:
            return list(range(len(batch))), to_channels(batch, shape[0]), []
        inputs = [Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)) for img in batch]
    inputs = list(inputs)  # a generator is read once
    names = [str(x) if isinstance(x, (str, Path)) else i for i, x in enumerate(inputs)]
    return decode_images(names, [encoded(x) for x in inputs], shape, resize)


def encoded(item) -> bytes | str:
    """The bytes `decode` reads: a file's (or why it cannot be read), a PIL image as PNG."""
    import io

    if isinstance(item, (str, Path)):
        return file_bytes(Path(item))
    if not hasattr(item, "save"):
        raise cannot_predict(item)
    buf = io.BytesIO()
    item.save(buf, "PNG")
    return buf.getvalue()


def cannot_predict(item) -> VisionbenchError:
    return VisionbenchError(
        f"cannot read {item!r:.60} ({type(item).__name__}) as an image",
        fix="give a folder, image files (paths), PIL images, or an array or tensor of images",
    )


def as_batch(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 NCHW from one image or a batch, channels first or last, uint8 or [0, 1] floats."""
    if array.ndim == 2 or (array.ndim == 3 and (array.shape in (shape, shape[1:] + shape[:1]))):
        array = array[None]  # one image
    if array.ndim == 3:
        array = array[:, None]  # a batch of grey images
    if array.ndim != 4 or not (array.shape[1] in (1, 3) or array.shape[3] in (1, 3)):
        raise VisionbenchError(
            f"cannot read an array of shape {array.shape} as images",
            fix=f"give (N, C, H, W) or (N, H, W, C) with 1 or 3 channels; the run's images are {shape}",
        )
    if array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(1))
        raise VisionbenchError(
            f"{len(bad)} of the {len(array)} images given have NaN or infinite pixel values",
            where=f"image{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}",
            fix="replace those values (e.g. np.nan_to_num(images)) or leave those images out",
        )
    return np.ascontiguousarray(to_uint8(array))


def label_rows(
    predictor: Predictor, images: np.ndarray, top_k: int = 5, tta: str | None = None
) -> list[dict]:
    """Per image: the predicted label, its confidence, and the top-k classes as "class:prob"."""
    if not len(images):
        return []
    out = predictor.outputs(images, tta)
    classes = predictor.classes
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
    shape, resize = predictor.spec.shape, predictor.cfg.data.resize
    names, images, skipped = (read_images if is_folder(inputs) else as_images)(inputs, shape, resize)
    if not names and not skipped:
        raise VisionbenchError(
            "no image files found", where=str(inputs), fix="point --images at a folder of images"
        )
    rows = [
        {"file": s["file"], "label": "", "confidence": None, "top_k": "", "error": s["reason"]}
        for s in skipped
    ]
    rows += [{"file": n, **r, "error": ""} for n, r in zip(names, label_rows(predictor, images, top_k, tta))]
    return sorted(rows, key=lambda r: str(r["file"])) if is_folder(inputs) else rows


def write_predictions(rows: list[dict], out_csv: Path) -> None:
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for r in rows:
            confidence = f"{r['confidence']:.4f}" if r["confidence"] is not None else ""
            w.writerow([r["file"], r["label"], confidence, r["top_k"], r["error"]])


def predict_folder(
    predictor: Predictor, path: Path, out_csv: Path, top_k: int = 5, tta: str | None = None
) -> dict:
    """Write `out_csv` (file, label, confidence, top_k, error; sorted by file) for a folder, an
    archive or one image file, and return counts."""
    require_images(path)
    rows = predict_rows(predictor, path, top_k, tta)
    write_predictions(rows, out_csv)
    skipped = [{"file": r["file"], "reason": r["error"]} for r in rows if r["error"]]
    return {"predicted": len(rows) - len(skipped), "skipped": skipped, "csv": str(out_csv)}
