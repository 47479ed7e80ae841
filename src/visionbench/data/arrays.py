"""Arrays and tensors a Python caller gives as images -> uint8 NCHW, in the layouts stated in
LAYOUTS; an array whose layout or pixel range cannot be told is refused, never guessed."""

from __future__ import annotations

import numpy as np

from ..errors import VisionbenchError
from .decode import scale_16bit

CHANNELS = (1, 3, 4)  # grey, RGB, RGBA (alpha composited onto black, as the file decoder does)
LAYOUTS = (
    "(H, W) one grey image; (C, H, W) or (H, W, C) one image; (N, C, H, W) or (N, H, W, C) a batch; "
    "C is 1, 3 or 4; pixels uint8 (0-255), uint16 (0-65535, scaled as a 16-bit PNG is) or floats "
    "in [0, 1]; a list of images, each any of these, a file or a PIL image"
)


def array_of(item) -> np.ndarray | None:
    """A numpy array of a numpy array or a torch tensor (bfloat16 as float32); None otherwise."""
    if hasattr(item, "detach"):  # a torch tensor
        item = item.detach().cpu()
        try:
            return item.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return item.float().numpy()
    return item if isinstance(item, np.ndarray) else None


def refused(array: np.ndarray, why: str, fix: str = "", shape: tuple | None = None) -> VisionbenchError:
    shape = tuple(array.shape) if shape is None else shape
    return VisionbenchError(
        f"cannot read an array of shape {shape} ({array.dtype}) as images: {why}",
        fix=(fix + "; " if fix else "") + f"accepted: {LAYOUTS}",
    )


def channels_first(array: np.ndarray, size: tuple[int, int], tensor: bool) -> bool:
    """Whether a 3-D image or 4-D batch has its channels before (C, H, W) or after (H, W, C)
    its rows and columns. Where both read as channels (an (N, 3, 4, 4) batch), a torch tensor
    is channels first (torch's convention), an array the reading whose H x W is the run's."""
    lead = array.shape[-3] in CHANNELS
    last = array.shape[-1] in CHANNELS
    if lead != last:
        return lead
    if not lead:
        grey = "; a batch of N grey images is images[:, None] (N, 1, H, W)" if array.ndim == 3 else ""
        raise refused(array, "no axis holds 1, 3 or 4 channels", f"give channels first or last{grey}")
    if tensor:
        return True
    fits = [array.shape[-2:] == size, array.shape[-3:-1] == size]
    if fits.count(True) != 1:
        raise refused(
            array,
            "channels could be first or last",
            "give a torch tensor (read channels first) or a list of images, or transpose it to "
            "channels last with at least 5 columns",
        )
    return fits[0]


def as_nchw(array: np.ndarray, size: tuple[int, int], tensor: bool = False) -> np.ndarray:
    """The array as a batch (N, C, H, W), still in its own dtype: a 2-D array is one grey
    image, a 3-D one one image (never a batch of grey images: (3, 8, 8) is one RGB image),
    a 4-D one a batch."""
    if array.ndim == 2:
        return array[None, None]
    if array.ndim not in (3, 4):
        raise refused(array, f"{array.ndim} dimensions")
    batch = array if array.ndim == 4 else array[None]
    return batch if channels_first(array, size, tensor) else batch.transpose(0, 3, 1, 2)


def to_pixels(batch: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 pixels: uint8 as they are; uint16 scaled by the full range as the decoder scales
    a 16-bit file; other integers as 0-255; floats in [0, 1] scaled (floats above 1 up to 255
    are taken as 0-255). Values outside these ranges (normalised images, 12-bit in int32) and
    NaN are an error: clipping them would label a different image."""
    if batch.dtype == np.uint8:
        return batch
    if batch.dtype == np.uint16:
        return scale_16bit(batch)
    if batch.dtype == np.bool_ or not np.issubdtype(batch.dtype, np.number):
        raise refused(batch, f"{batch.dtype} pixels", "give uint8 (0-255) or floats in [0, 1]", shape)
    floats = np.issubdtype(batch.dtype, np.floating)
    if floats:
        check_finite(batch)
    if batch.size and (batch.min() < 0 or batch.max() > 255):
        hint = "normalised images?" if floats else "integers other than uint16 are read as 0-255"
        raise refused(
            batch,
            f"pixel values from {batch.min():.4g} to {batch.max():.4g} ({hint})",
            "give the images before normalisation: uint8 0-255, uint16 0-65535 or floats in [0, 1]",
            shape,
        )
    if floats and batch.size and batch.max() <= 1:
        batch = batch * 255.0
    return np.rint(batch).astype(np.uint8)


def check_finite(batch: np.ndarray) -> None:
    if np.isfinite(batch).all():
        return
    bad = np.flatnonzero(~np.isfinite(batch).reshape(len(batch), -1).all(1))
    shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
    raise VisionbenchError(
        f"{len(bad)} of the {len(batch)} images given have NaN or infinite pixel values",
        where=f"image{'s' if len(bad) > 1 else ''} {shown}",
        fix="replace those values (e.g. np.nan_to_num(images)) or leave those images out",
    )


def image_batch(item, size: tuple[int, int]) -> np.ndarray | None:
    """uint8 (N, C, H, W), C in CHANNELS, of an array or tensor (see LAYOUTS); None for
    anything else."""
    array = array_of(item)
    if array is None:
        return None
    batch = as_nchw(array, size, tensor=hasattr(item, "detach"))
    return np.ascontiguousarray(to_pixels(batch, tuple(array.shape)))


def one_image(item, size: tuple[int, int]) -> np.ndarray | None:
    """uint8 HWC of one image given as an array or tensor (a list's item); None for anything else."""
    batch = image_batch(item, size)
    if batch is not None and len(batch) != 1:
        raise refused(batch, "a list's item is one image", "give the batch itself, not in a list")
    return None if batch is None else batch[0].transpose(1, 2, 0)
