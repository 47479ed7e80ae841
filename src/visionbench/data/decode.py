"""Image bytes -> uint8 HWC arrays, the same way everywhere (EXIF, alpha, 16-bit, palette, first
frame, resize policy), the first-image size probe, and decoding a whole dataset on every core."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import VisionbenchError, unknown_name

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
RESIZE_POLICIES = ("crop", "stretch")
Image.MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as decompression bombs


def usable_cpus() -> int:
    """The cores this process may run on: its affinity (taskset, a container's cpuset), not the
    machine's count - two threads pinned to one core run slower than one."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def as_bytes(blob: bytes | str | Path) -> bytes | str:
    """A file's bytes (or why not) for a path; bytes and reasons as they are."""
    return file_bytes(blob) if isinstance(blob, Path) else blob


def unread_bytes(blobs) -> int:
    """How many bytes reading the paths among `blobs` will take."""
    return sum(b.stat().st_size for b in blobs if isinstance(b, Path) and b.is_file())


def file_bytes(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read (deleted since listing, no permission, I/O,
    not a regular file). A FIFO, socket or device is refused before it is opened - reading a
    FIFO waits for a writer for ever - and checked again on the open file (O_NONBLOCK: opening
    a FIFO does not wait either), in case it was swapped in between."""
    try:
        if reason := not_regular(os.stat(path).st_mode):
            return reason
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            return not_regular(os.fstat(f.fileno()).st_mode) or f.read()
    except OSError as e:
        return f"cannot read the file ({e.strerror or e})"


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not read (a FIFO, socket or device), or None for a file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in FILE_KINDS if test(mode)), "not a plain file")
    return f"not a regular file ({kind}): not read"


FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 pixels from numbers: floats in [0, 1] (ToTensor's, a float TIFF's) scaled to the
    full range, as 16-bit images are; other values taken as 0-255, rounded and clipped. NaN or
    infinite values are a ValueError: no pixel value stands for them."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("NaN or infinite pixel values")
        if array.size and array.max() <= 1:
            array = array * 255.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def scale_16bit(array: np.ndarray) -> np.ndarray:
    """uint8 from 16-bit pixels (0-65535, as a 16-bit PNG or TIFF stores them), scaled by the
    full range and rounded: 65535 is white, never clipped at 255."""
    return (np.asarray(array, dtype=np.float64).clip(0, 65535) * (255 / 65535)).round().astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Deterministic RGB: EXIF orientation applied, alpha composited onto black."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG/TIFF: scale by the full range
        img = Image.fromarray(scale_16bit(np.asarray(img)))
    if img.mode == "F":  # 32-bit float TIFF: PIL's convert would clip [0, 1] to black
        img = Image.fromarray(to_uint8(np.asarray(img, dtype=np.float32)))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return img.convert("RGB")


def check_resize(resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise unknown_name("resize policy", resize, RESIZE_POLICIES)


def fit_size(img: Image.Image, size: tuple[int, int], resize: str = "crop") -> Image.Image:
    """To (H, W): "crop" scales the shorter side to fit, then centre-crops (keeps the aspect,
    loses the margins); "stretch" scales each side to fit (keeps everything, distorts)."""
    if img.size == (size[1], size[0]):
        return img
    if resize == "stretch":
        return img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return ImageOps.fit(img, (size[1], size[0]), Image.Resampling.BILINEAR)


def decode(blob: bytes | str, size: tuple[int, int] | None, resize: str = "crop") -> np.ndarray | str:
    """HWC uint8 array, or the reason the bytes are not a usable image (a str `blob` is
    already such a reason: the file could not be read)."""
    return decode_with_origin(blob, size, resize)[0]


def decode_with_origin(
    blob: bytes | str, size: tuple[int, int] | None, resize: str = "crop"
) -> tuple[np.ndarray | str, str | None]:
    """`decode`, plus what the file was: "FORMAT MODE WxH" as stored (e.g. "JPEG CMYK 640x480").
    Animated GIFs and multi-page TIFFs give their first frame (PIL opens on it)."""
    if isinstance(blob, str):
        return blob, None
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x MAX_IMAGE_PIXELS: refuse those too, before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as img:
                img.load()  # truncated files fail here, not later
                origin = f"{img.format or '?'} {img.mode} {img.width}x{img.height}"
                img = to_rgb(img)
                if size is not None:
                    img = fit_size(img, size, resize)
                return np.asarray(img, dtype=np.uint8), origin
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image too large (decompression bomb guard)", None
    except UnidentifiedImageError:
        # PIL's own message names the BytesIO by its repr, address and all: a reason must read
        # the same on every run (CSV, data report), so it says what the bytes were instead
        return f"not a readable image ({unknown_format(blob)})", None
    except Exception as e:  # PIL raises many types for bad bytes
        return f"not a readable image ({type(e).__name__}: {e})", None


def no_readable(what: str, skipped: list[dict], where) -> VisionbenchError:
    """No readable `what` (a split's images, a class's), with the first skipped files' reasons."""
    seen = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
    return VisionbenchError(
        f"no readable {what}" + (f": {len(skipped):,} files skipped, e.g. {seen}" if skipped else ""),
        where=str(where),
        fix="check that the files exist and are images (Git LFS pointers need `git lfs pull`)",
    )


def unknown_format(blob: bytes) -> str:
    if not blob:
        return "an empty file"
    if blob.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the image: run `git lfs pull`"
    return f"no image format starts with {blob[:12]!r}"


STANDARD_SIZE = 224  # ImageNet's, and what pretrained networks expect
NATIVE_MAX = 256  # images of one size up to this side keep it (MNIST 28, CIFAR 32, Tiny ImageNet 64)
SAMPLE = 64  # images whose sizes decide
UPSCALE_WARN = 2  # a data.img_size past this many times a typical image's side is warned about


def stored_size(blob: bytes | str | Path) -> tuple[int, int] | None:
    """(H, W) as `decode` would give it (EXIF-rotated), from the header alone (a file's first
    bytes only); None if unreadable (a str is the reason it could not be read)."""
    if isinstance(blob, str):
        return None
    try:
        if isinstance(blob, Path) and not_regular(blob.stat().st_mode):  # a FIFO would block
            return None
        with Image.open(io.BytesIO(blob) if isinstance(blob, bytes) else blob) as img:
            w, h = img.size
            return (w, h) if img.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (h, w)
    except Exception:  # noqa: BLE001 - an unreadable file has no size; decoding names the reason
        return None


def sampled_sizes(blobs: list[bytes | str | Path]) -> list[tuple[int, int]]:
    """(H, W) of up to SAMPLE of `blobs`, spread over the list, from their headers."""
    step = max(1, len(blobs) // SAMPLE)
    return [s for s in map(stored_size, blobs[::step][:SAMPLE]) if s]


def typical_side(sizes: list[tuple[int, int]]) -> int:
    """A typical image's shorter side: the lower median, so one odd file does not decide."""
    return sorted(min(s) for s in sizes)[(len(sizes) - 1) // 2]


def auto_size(blobs: list[bytes | str | Path]) -> tuple[tuple[int, int] | None, str]:
    """The size every image is brought to when data.img_size is not set, and why: the images'
    own size when a sample of up to SAMPLE of them (spread over the list) share one no larger
    than NATIVE_MAX px; otherwise a square of a typical sampled image's shorter side, at most
    STANDARD_SIZE - never the first image's size alone, which one large photo could make
    enormous, and never 224 px for small images, which would upscale them (a folder of 33 px
    images at 224 px holds 46x the pixels, each one interpolated, and trains that much slower)."""
    sizes = sampled_sizes(blobs)
    if not sizes:
        return probe_size(map(as_bytes, blobs)), "the first image that decodes"
    if len(set(sizes)) == 1 and max(sizes[0]) <= NATIVE_MAX:
        return sizes[0], f"the images' own size ({len(sizes)} sampled alike)"
    side = min(STANDARD_SIZE, typical_side(sizes))
    shown = ", ".join(f"{w}x{h}" for h, w in sorted(set(sizes), key=sizes.count, reverse=True)[:3])
    why = "large" if len(set(sizes)) == 1 else "of varied sizes"
    return (side, side), f"images {why} ({shown}{' ...' if len(set(sizes)) > 3 else ''})"


def upscale_warning(img_size: int, blobs: list[bytes | str | Path]) -> str | None:
    """What data.img_size costs when it is more than UPSCALE_WARN times a typical image's
    shorter side (sampled as auto_size does): every image interpolated up, the cache and each
    step that many times larger for no detail gained; None when it is not."""
    sizes = sampled_sizes(blobs)
    if not sizes or img_size <= UPSCALE_WARN * (side := typical_side(sizes)):
        return None
    return (
        f"data.img_size={img_size} upscales the images (shorter sides {min(min(s) for s in sizes)}-"
        f"{max(min(s) for s in sizes)} px, typically {side}): {(img_size / side) ** 2:,.0f}x their pixels "
        "to store and compute, no detail gained; set data.img_size=N near their size, or leave it unset "
        "to choose one (model.input_size=N resizes each batch on the device instead)"
    )


def target_size(img_size: int | None, blobs: list[bytes | str | Path]) -> tuple[tuple[int, int] | None, dict]:
    """The (H, W) every image is brought to - data.img_size, else auto_size's - and what the
    dataset records about it: why that size, and a warning when data.img_size upscales them far."""
    if not img_size:
        size, why = auto_size(blobs)
        return size, {"size_chosen_for": why}
    warning = upscale_warning(img_size, blobs)
    return (img_size, img_size), {"size_chosen_for": "data.img_size"} | (
        {"upscaled": warning} if warning else {}
    )


def probe_size(blobs: Iterable[bytes | str]) -> tuple[int, int] | None:
    """(H, W) of the first of `blobs` that decodes (as `decode` gives it: EXIF-rotated), or
    None; `blobs` may be a generator that reads files lazily: it stops at the first image."""
    for blob in blobs:
        first = decode(blob, None)
        if isinstance(first, np.ndarray):
            return first.shape[:2]
    return None


def _decode_chunk(args: tuple[list[bytes], tuple[int, int] | None, str]) -> list:
    blobs, size, resize = args
    return [decode_with_origin(b, size, resize) for b in blobs]


def summarize_origins(origins: list[str | None], top: int = 5) -> dict[str, dict[str, int]]:
    """How many files had each format, each mode and each size, the `top` most common sizes by
    name."""
    formats: dict[str, int] = {}
    modes: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for o in filter(None, origins):
        fmt, mode, wh = o.split(" ")
        formats[fmt] = formats.get(fmt, 0) + 1
        modes[mode] = modes.get(mode, 0) + 1
        sizes[wh] = sizes.get(wh, 0) + 1
    common = sorted(sizes.items(), key=lambda kv: -kv[1])
    shown = dict(common[:top]) | ({"other": sum(n for _, n in common[top:])} if len(common) > top else {})
    return {
        "formats": dict(sorted(formats.items(), key=lambda kv: -kv[1])),
        "modes": dict(sorted(modes.items(), key=lambda kv: -kv[1])),
        "sizes": shown,
    }


_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("decode_progress", default=None)


@contextmanager
def decode_progress(update: Callable[[int, int], None] | None):
    """Within this block, `decode_all` reports (done, total) to `update` as chunks finish."""
    token = _PROGRESS.set(update)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def decode_all(
    blobs: list[bytes], size: tuple[int, int] | None, resize: str = "crop", origins: list | None = None
) -> list:
    """Decode on every core: the one-time cost of building a cache. Each file's "MODE WxH"
    goes to `origins` when given."""
    report = _PROGRESS.get() or (lambda done, total: None)
    workers = min(usable_cpus(), 8)
    if len(blobs) < 2000 or workers == 1:
        out = _decode_chunk((blobs, size, resize))
        report(len(out), len(blobs))
    else:
        chunk = max(256, len(blobs) // (workers * 8))
        jobs = [(blobs[i : i + chunk], size, resize) for i in range(0, len(blobs), chunk)]
        out = []
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_decode_chunk, jobs):  # in order, as each chunk is done
                out.extend(part)
                report(len(out), len(blobs))
    if origins is not None:
        origins.extend(o for _, o in out)
    return [a for a, _ in out]
