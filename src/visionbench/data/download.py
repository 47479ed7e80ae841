"""Fetch a file once, verified by checksum; never at run time unless asked."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import VisionbenchError


@dataclass(frozen=True)
class Remote:
    """One file of an official distribution: where it lives and what it must hash to."""

    url: str
    filename: str
    md5: str


def file_digest(path: Path, algo: str = "md5", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(remote: Remote, dest_dir: Path, url: str | None = None) -> Path:
    """Download to dest_dir/filename via a temp file; keep it only if the md5 matches.

    `url` overrides the remote's (a mirror, or a file:// URL in tests). A file already
    present with the right checksum is not fetched again.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.filename
    if dest.is_file() and file_digest(dest) == remote.md5:
        return dest
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url or remote.url, timeout=60) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (OSError, ValueError, http.client.HTTPException) as e:  # no network, bad URL, cut short
        tmp.unlink(missing_ok=True)
        raise VisionbenchError(
            f"download failed: {e}",
            where=url or remote.url,
            fix=f"download it by hand and place it at {dest}",
        ) from None
    got = file_digest(tmp)
    if got != remote.md5:
        tmp.unlink()
        raise VisionbenchError(
            f"checksum mismatch for {remote.filename}: md5 {got}, expected {remote.md5}",
            where=url or remote.url,
            fix="the file is corrupt or not the official one; try again or use another mirror",
        )
    os.replace(tmp, dest)
    return dest
