"""The one archive reader: every cap for zip and tar, refused members listed with their reason,
and the official archives (CIFAR pickles, Tiny ImageNet zip) read through it."""

from __future__ import annotations

import io
import pickle
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_data import COLOURS, cifar_batches, png, write_cifar
from test_official import WNIDS, write_tiny, zip_tree

from visionbench.data import archive, load_dataset
from visionbench.data.images import iter_files
from visionbench.errors import VisionbenchError

# (name, bytes, kind): kind is file, symlink, hardlink or device; a link's bytes are its target
Entry = tuple[str, bytes, str]


def write_archive(path: Path, entries: list[Entry]) -> Path:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, blob, kind in entries:
                info = zipfile.ZipInfo(name)
                mode = {"file": stat.S_IFREG, "symlink": stat.S_IFLNK, "device": stat.S_IFCHR}[kind]
                info.external_attr = (mode | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, blob)
        return path
    with tarfile.open(path, "w:gz") as tf:
        for name, blob, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}[
                kind
            ]
            info.linkname = blob.decode()
            tf.addfile(info)
    return path


KINDS = ["zip", "tar.gz"]
CAPS = {  # cap -> (small value, words the error must say)
    "MAX_MEMBERS": (5, "member-count cap"),
    "MAX_TOTAL_BYTES": (400_000, "total-size cap"),
    "MAX_MEMBER_BYTES": (50_000, "per-member size cap"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cap", list(CAPS))
def test_archive_over_each_cap_is_a_clear_error(tmp_path, monkeypatch, kind, cap):
    zeros = b"\0" * 100_000  # compresses to almost nothing: a small zip bomb
    names = [f"train/{c}/{i}.png" for c in ("a", "b") for i in range(3)]
    bomb = write_archive(tmp_path / f"bomb.{kind}", [(n, zeros, "file") for n in names])
    assert bomb.stat().st_size < 10_000
    value, words = CAPS[cap]
    monkeypatch.setattr(archive, cap, value)
    if kind == "zip" and cap != "MAX_MEMBER_BYTES":  # a zip's index is checked before any read
        monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a: pytest.fail("read before the caps"))
    with pytest.raises(VisionbenchError, match=words) as err:
        load_dataset(f"folder:{bomb}", None)
    limit = f"{value:,} members" if cap == "MAX_MEMBERS" else archive.size(value)
    assert err.value.where == str(bomb) and f"(cap: {limit}" in err.value.what
    assert "extract it" in err.value.fix


REFUSED = {  # name -> (kind, target, words the reason must say)
    "../escape.png": ("file", b"", "(..)"),
    "/etc/absolute.png": ("file", b"", "absolute path"),
    "train/a/link.png": ("symlink", b"../../../etc/passwd", "symbolic link"),
    "train/b/dev.png": ("device", b"", "device"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_unsafe_members_are_refused_and_listed_with_their_reason(tmp_path, kind):
    refused = dict(REFUSED)
    if kind != "zip":  # zip has no hard links
        refused["train/b/hard.png"] = ("hardlink", b"train/b/0.png", "hard link")
    good = [(f"train/{c}/{i}.png", png(COLOURS["cat"]), "file") for c in ("a", "b") for i in range(2)]
    unsafe = [
        (name, png(COLOURS["dog"]) if k == "file" else target, k) for name, (k, target, _) in refused.items()
    ]
    path = write_archive(tmp_path / f"tree.{kind}", good + unsafe)
    ds = load_dataset(f"folder:{path}", None)
    assert ds.classes == ["a", "b"] and sum(len(s) for s in ds.splits.values()) == 4
    reasons = {s["file"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == set(refused)
    for name, (_, _, words) in refused.items():
        assert words in reasons[name] and reasons[name].startswith("refused"), (name, reasons[name])


def test_without_a_skipped_list_refused_members_come_back_as_reasons(tmp_path):
    """What `visionbench predict` reads: a refused member is a row with its reason, not silence."""
    path = write_archive(
        tmp_path / "photos.zip", [("x.png", png((1, 2, 3)), "file"), ("../y.png", png((1, 2, 3)), "file")]
    )
    got = dict(("/".join(parts), blob) for parts, blob in iter_files(path))
    assert isinstance(got["x.png"], bytes) and "(..)" in got["../y.png"]


@pytest.mark.parametrize("cap", ["MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_MEMBER_BYTES"])
def test_cifar_python_tarball_is_read_under_the_caps(tmp_path, monkeypatch, cap):
    write_cifar(tmp_path, cifar_batches(n=40), as_tar=True)  # 6 members of ~123 KB each
    monkeypatch.setattr(archive, cap, {"MAX_MEMBERS": 5, "MAX_TOTAL_BYTES": 500_000}.get(cap, 100_000))
    with pytest.raises(VisionbenchError, match=CAPS[cap][1]) as err:
        load_dataset("cifar10", tmp_path)
    assert err.value.where == str(tmp_path / "cifar-10-python.tar.gz")


def test_cifar_python_tarball_lists_refused_members(tmp_path):
    batches = [
        (f"cifar-10-batches-py/{f}", pickle.dumps(d, protocol=2), "file") for f, d in cifar_batches().items()
    ]
    unsafe = [
        ("cifar-10-batches-py/readme.html", b"/etc/passwd", "symlink"),
        ("../data_batch_1", b"bad", "file"),  # its base name is wanted: still never read
    ]
    write_archive(tmp_path / "cifar-10-python.tar.gz", batches + unsafe)
    ds = load_dataset("cifar10", tmp_path)
    assert len(ds.splits["train"]) == 10
    assert {s["file"]: s["reason"] for s in ds.skipped} == {
        "cifar-10-batches-py/readme.html": "refused: a symbolic link, not a regular file",
        "../data_batch_1": "refused: a path that climbs out of the archive (..)",
    }


@pytest.mark.parametrize("cap", ["MAX_MEMBERS", "MAX_MEMBER_BYTES"])
def test_tiny_imagenet_zip_is_read_under_the_caps(tmp_path, monkeypatch, cap):
    archive_path = zip_tree(write_tiny(tmp_path))
    monkeypatch.setattr(archive, cap, {"MAX_MEMBERS": 10, "MAX_MEMBER_BYTES": 100}[cap])
    with pytest.raises(VisionbenchError, match=CAPS[cap][1]) as err:
        load_dataset("tiny-imagenet", tmp_path)
    assert err.value.where == str(archive_path)


def test_tiny_imagenet_zip_lists_refused_members(tmp_path):
    archive_path = zip_tree(write_tiny(tmp_path))
    with zipfile.ZipFile(archive_path, "a") as zf:
        info = zipfile.ZipInfo("tiny-imagenet-200/train/n01443537/images/link.JPEG")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.classes == sorted(WNIDS) and len(ds.splits["train"]) == 6
    assert ds.skipped == [
        {
            "file": "tiny-imagenet-200/train/n01443537/images/link.JPEG",
            "reason": "refused: a symbolic link, not a regular file",
        }
    ]
