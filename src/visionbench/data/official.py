"""More official datasets: Fashion-MNIST, CIFAR-100 (fine and coarse), SVHN and Tiny ImageNet,
each read from the layout its authors distribute, archives read in place (archive.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import VisionbenchError
from .archive import iter_members
from .cache import Dataset, Split
from .decode import decode_all
from .download import Remote
from .images import iter_files
from .sources import Source, cifar_split, idx_source, read_data_pickle, read_named_files, register

# --- Fashion-MNIST: the same four IDX files as MNIST, other pictures ----------------------------
register(
    idx_source(
        "fashion-mnist",
        "FashionMNIST",  # torchvision's folder name: <root>/FashionMNIST/raw/*.gz
        [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {  # md5s as torchvision lists them (FashionMNIST.resources)
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    )
)


# --- CIFAR-100: the official python pickles, 100 fine classes grouped into 20 coarse ones -------
CIFAR100_FILES = {"train": "train", "test": "test"}  # split -> pickle; class names live in "meta"


def cifar100_reader(name: str, level: str) -> Callable[[Path], Dataset]:
    """`level` is "fine" (100 classes) or "coarse" (20 superclasses): the same images either way."""

    def read(path: Path) -> Dataset:
        wanted, skipped = [*CIFAR100_FILES.values(), "meta"], []
        blobs = read_named_files(path, wanted, "CIFAR-100", "cifar-100-python/{train,test,meta}", skipped)
        classes = read_data_pickle(
            blobs["meta"],
            f"{path}:meta",
            "CIFAR-100",
            lambda d: [n.decode() if isinstance(n, bytes) else str(n) for n in d[f"{level}_label_names"]],
        )
        splits = {
            split: cifar_split(blobs[f], f"{path}:{f}", f"{level}_labels", len(classes), "CIFAR-100")
            for split, f in CIFAR100_FILES.items()
        }
        return Dataset(name, classes, splits, skipped=skipped)

    return read


def register_cifar100(name: str, level: str) -> None:
    register(
        Source(
            name,
            lambda root: [root / "cifar-100-python", root / "cifar-100-python.tar.gz"],
            cifar100_reader(name, level),
            [
                Remote(
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    "cifar-100-python.tar.gz",
                    "eb9058c3a382ffc7106e4002c42a8d85",
                )
            ],
            hint="cifar-100-python/ or cifar-100-python.tar.gz (the official python version)",
        )
    )


register_cifar100("cifar100", "fine")
register_cifar100("cifar100-coarse", "coarse")


# --- SVHN: cropped 32x32 digits as MATLAB files ---------------------------------------------------
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}  # extra_32x32.mat is not read
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_MD5 = {  # as torchvision lists them (SVHN.split_list)
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}


def svhn_candidates(root: Path) -> list[Path]:
    dirs = [root / "svhn", root / "SVHN", root]
    found = [d for d in dirs if (d / SVHN_FILES["train"]).is_file()]
    return found or [d / SVHN_FILES["train"] for d in dirs]


def read_svhn_split(path: Path) -> Split:
    from scipy.io import loadmat  # scipy comes with scikit-learn; only SVHN needs it

    if not path.is_file():
        raise VisionbenchError("missing SVHN file", where=str(path), fix="place the official .mat file there")
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # scipy raises many types for bad bytes, NotImplementedError for v7.3
        raise VisionbenchError(
            f"cannot read MATLAB file ({type(e).__name__}: {e})",
            where=str(path),
            fix="the file is truncated or not the official 32x32 version; download it again",
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise VisionbenchError(
            "expected uint8 X of shape (32, 32, 3, N) and labels y",
            where=str(path),
            fix="use the cropped-digits files (*_32x32.mat), not the full-number ones",
        )
    labels = y.reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise VisionbenchError(f"{x.shape[3]} images but {len(labels)} labels", where=str(path))
    labels[labels == 10] = 0  # SVHN numbers classes 1..10 (MATLAB style): 10 is the digit 0
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise VisionbenchError("labels outside 1..10", where=str(path))
    return Split(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels)  # (H, W, C, N) -> NCHW


def read_svhn(path: Path) -> Dataset:
    splits = {split: read_svhn_split(path / f) for split, f in SVHN_FILES.items()}
    notes = (
        ["extra_32x32.mat is not read: train and test only"] if (path / "extra_32x32.mat").exists() else []
    )
    return Dataset("svhn", [str(i) for i in range(10)], splits, notes=notes)


register(
    Source(
        "svhn",
        svhn_candidates,
        read_svhn,
        [Remote(SVHN_URL + f, f, md5) for f, md5 in SVHN_MD5.items()],
        lambda root: root / "svhn",
        hint="svhn/train_32x32.mat and svhn/test_32x32.mat (the cropped-digits format)",
    )
)


# --- Tiny ImageNet: 200 ImageNet classes at 64x64 -----------------------------------------------
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
    missing = [rel for rel in TINY_LISTS if rel not in texts]
    if missing:
        raise VisionbenchError(
            f"missing Tiny ImageNet files: {', '.join(missing)}",
            where=str(path),
            fix=f"expected the official {TINY} layout; download {TINY}.zip again",
        )
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
