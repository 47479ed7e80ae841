"""Folders too large to cache (`data.stream=true`): files stay on disk and DataLoader workers
decode each batch; the batch is then augmented on the device exactly as the tensor-resident
loader does it (same per-epoch plan: same order, flips and crops for the same seed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import VisionbenchError
from .decode import decode, file_bytes, target_size, usable_cpus
from .loader import TensorLoader


class FileImages:
    """uint8 (N, C, H, W) images that stay files until read: indexing with an array or slice
    gives a subset, an int gives one decoded image, `np.asarray` decodes them all."""

    def __init__(self, files: list[Path], size: tuple[int, int], resize: str = "crop"):
        self.files, self.size, self.resize = list(files), tuple(size), resize

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, *self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.read(int(idx))
        picked = np.arange(len(self.files))[idx]
        return FileImages([self.files[i] for i in picked], self.size, self.resize)

    def __array__(self, dtype=None, copy=None):
        out = (
            np.stack([self.read(i) for i in range(len(self))])
            if len(self)
            else np.zeros(self.shape, np.uint8)
        )
        return out if dtype is None else out.astype(dtype)

    def read(self, i: int) -> np.ndarray:
        arr = self.try_read(i)
        if isinstance(arr, str):
            raise unusable(self.files[i], arr)
        return arr

    def try_read(self, i: int) -> np.ndarray | str:
        """CHW uint8, or why the file cannot be used."""
        arr = decode(file_bytes(self.files[i]), self.size, self.resize)
        return arr if isinstance(arr, str) else np.ascontiguousarray(arr.transpose(2, 0, 1))

    def identity(self) -> list:
        """What the files are: path, size and mtime (hashing every image would read them all)."""
        return [(str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in self.files]


def file_splits(
    rows: list[tuple], classes: list[str], img_size: int | None, resize: str
) -> tuple[dict, dict]:
    """(split, class, file, path) rows -> {split: (FileImages, labels)}, and what decode.target_size
    records about the size every image is brought to: `img_size`, else one chosen from the
    files' headers."""
    size, chosen = target_size(img_size, [r[3] for r in rows])
    if size is None:
        raise VisionbenchError("no file decodes as an image", where=str(rows[0][3].parent))
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == split]
        out[split] = (
            FileImages([r[3] for r in mine], size, resize),
            np.array([index[r[1]] for r in mine], dtype=np.int64),
        )
    return out, chosen


def stream_fingerprint(classes: list[str], splits: dict) -> str:
    h = hashlib.sha256(json.dumps(classes).encode())
    for name in sorted(splits):
        s = splits[name]
        h.update(json.dumps([name, s.images.identity(), s.images.size, s.images.resize]).encode())
        h.update(np.ascontiguousarray(s.labels).data)
    return h.hexdigest()


def unusable(path: Path, reason: str) -> VisionbenchError:
    return VisionbenchError(
        f"a streamed image cannot be used: {reason}",
        where=str(path),
        fix="remove or replace the file, then resume the run; or drop data.stream to cache the "
        "folder (caching skips bad files and lists them)",
    )


class _Reader(torch.utils.data.Dataset):
    """What the workers run: a bad file comes back as its reason, raised in the main process."""

    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return i, self.images.try_read(i)


def _stack(items: list[tuple[int, np.ndarray | str]]):
    bad = next(((i, a) for i, a in items if isinstance(a, str)), None)
    return bad if bad is not None else torch.from_numpy(np.stack([a for _, a in items]))


class StreamLoader(TensorLoader):
    """A TensorLoader whose images are files: each epoch, DataLoader workers decode the plan's
    batches ahead of the training step; augmentation then runs on the device as usual."""

    def __init__(
        self, images: FileImages, labels: np.ndarray, batch_size: int, *, workers: int | None = None, **kw
    ):
        self.workers = min(8, usable_cpus()) if workers is None else workers
        super().__init__(images, labels, batch_size, **kw)

    def _place(self, images: FileImages) -> FileImages:
        return images  # files stay files

    def epoch(self, epoch: int = 0, start_batch: int = 0):
        order = self._epoch_plan(epoch)["order"].cpu()
        batches = [order[sel].tolist() for _, sel in self._slices(start_batch)]
        self._pending = iter(
            torch.utils.data.DataLoader(
                _Reader(self.images),
                batch_sampler=batches,
                num_workers=self.workers,
                collate_fn=_stack,
                timeout=300 if self.workers else 0,  # a stuck worker is an error, not a hang
                pin_memory=self.device.type == "cuda",
            )
        )
        yield from super().epoch(epoch, start_batch)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        batch = next(self._pending)
        if isinstance(batch, tuple):
            raise unusable(self.images.files[batch[0]], batch[1])
        return batch.to(self.device, non_blocking=True).float()
