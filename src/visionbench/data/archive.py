"""The one archive reader: .zip and .tar[.gz|.bz2|.xz] members streamed one at a time, under
caps, never extracted; members that could escape a folder or are not plain files are refused."""

from __future__ import annotations

import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from ..errors import VisionbenchError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")

# Caps on every archive read (tests monkeypatch them smaller). A folder archive's image bytes
# are all held until they decode, so the total bounds memory too: 4 GiB is ~16x the largest
# official archive read here (Tiny ImageNet, ~0.25 GB uncompressed) and a sixth of a 24 GiB
# machine, which leaves room for the decoded arrays. Larger datasets: extract, give the folder.
MAX_MEMBERS = 1_000_000  # Tiny ImageNet has ~120,000 members; a zip's index is read whole
MAX_TOTAL_BYTES = 4 * 2**30  # uncompressed, every member counted (a tar is decompressed whole)
# one member is in memory at a time: CIFAR-100's train pickle is 155 MB, and even an
# uncompressed 64-megapixel image (the decode limit, 192 MB as 8-bit RGB) fits
MAX_MEMBER_BYTES = 256 * 2**20

READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,  # gzip.BadGzipFile, bz2's errors, a file that vanished
    NotImplementedError,  # a zip compression method Python lacks
    RuntimeError,  # an encrypted zip member
)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def iter_members(
    path: Path, want: Callable[[tuple[str, ...]], bool], skipped: list[dict]
) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path parts, bytes) of each plain-file member whose parts `want` accepts, one member in
    memory at a time (zip: in sorted name order; tar: in stored order, one pass).

    Over a cap (MAX_MEMBERS, MAX_TOTAL_BYTES, MAX_MEMBER_BYTES) is an error naming the archive
    and the cap: a zip's from its index before anything is read, a tar's as it streams. A
    member with `..` or an absolute path, a link or a device is never read; each goes to
    `skipped` ({"file", "reason"}) whatever `want` says. A broken archive is one clear error.
    """
    try:
        if path.name.lower().endswith(".zip"):
            yield from _zip_members(path, want, skipped)
        else:
            yield from _tar_members(path, want, skipped)
    except READ_ERRORS as e:
        raise VisionbenchError(
            f"cannot read the archive: {type(e).__name__}: {e}",
            where=str(path),
            fix="the file is truncated or not a zip/tar; download or pack it again",
        ) from None


def _zip_members(path: Path, want, skipped: list[dict]):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        check_totals(path, len(infos), sum(i.file_size for i in infos))  # before reading any
        for info in sorted(infos, key=lambda i: i.filename):
            if info.is_dir():
                continue
            parts = _accepted(info.filename, _zip_kind(info), skipped)
            if parts and want(parts):
                check_member(path, info.filename, info.file_size)
                yield parts, zf.read(info)  # never more than the declared size: zipfile stops there


def _tar_members(path: Path, want, skipped: list[dict]):
    members, total = 0, 0
    with tarfile.open(path, "r|*") as tf:  # a stream: one forward pass through the compressed file
        while (m := tf.next()) is not None:
            tf.members.clear()  # tarfile keeps every header it has read; we need none of them
            members, total = members + 1, total + m.size
            check_totals(path, members, total)  # as it goes: a tar has no index
            if m.isdir():
                continue
            parts = _accepted(m.name, _tar_kind(m), skipped)
            if parts and want(parts):
                check_member(path, m.name, m.size)
                yield parts, tf.extractfile(m).read()


def _accepted(name: str, kind: str | None, skipped: list[dict]) -> tuple[str, ...] | None:
    """The member's path parts, or None once it is listed in `skipped` with why it is refused.
    Nothing is extracted, so nothing could escape; but such members only come from a crafted
    or broken archive, and a person should hear of them."""
    reason = None
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        reason = "refused: an absolute path inside the archive"
    elif ".." in re.split(r"[/\\]", name):
        reason = "refused: a path that climbs out of the archive (..)"
    elif kind is not None:
        reason = f"refused: a {kind}, not a regular file"
    if reason:
        skipped.append({"file": name, "reason": reason})
        return None
    return PurePosixPath(name).parts


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16  # the Unix mode, for zips made on Unix; else 0
    return _special_kind(mode) if stat.S_IFMT(mode) not in (0, stat.S_IFREG) else None


def _tar_kind(m: tarfile.TarInfo) -> str | None:
    if m.isfile():
        return None
    if m.islnk():
        return "hard link"
    return _special_kind(
        stat.S_IFLNK if m.issym() else stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else 0
    )


def _special_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file (FIFO, socket or unknown type)"


def check_totals(path: Path, members: int, total: int) -> None:
    if members > MAX_MEMBERS:
        raise over_cap(path, "member-count", f"{members:,} members or more", f"{MAX_MEMBERS:,} members")
    if total > MAX_TOTAL_BYTES:
        raise over_cap(
            path, "total-size", f"{size(total)} or more uncompressed", f"{size(MAX_TOTAL_BYTES)} in all"
        )


def check_member(path: Path, name: str, nbytes: int) -> None:
    if nbytes > MAX_MEMBER_BYTES:
        raise over_cap(
            path,
            "per-member size",
            f"{name} is {size(nbytes)} uncompressed",
            f"{size(MAX_MEMBER_BYTES)} per member",
        )


def over_cap(path: Path, cap: str, found: str, limit: str) -> VisionbenchError:
    return VisionbenchError(
        f"archive over its {cap} cap: {found} (cap: {limit})",
        where=str(path),
        fix="this looks like a zip bomb; if the archive is genuine, extract it yourself and give "
        "the folder instead (folder:PATH, or the official folder name under the data root)",
    )


def size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"
