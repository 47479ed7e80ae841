"""Pretrained weight files in torch hub's cache: used from there, else downloaded once,
checksummed and atomically, unless offline."""

from __future__ import annotations

import http.client
import os
import socket
import sys
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import VisionbenchError

OFFLINE_VARS = ("VISIONBENCH_OFFLINE", "HF_HUB_OFFLINE")
TRUE = ("1", "ON", "YES", "TRUE")  # what huggingface_hub reads as true in HF_HUB_OFFLINE
TIMEOUT_S = 60.0  # torch.hub opens URLs with no timeout: a stalled connection would hang forever


def set_offline(flag: bool = True) -> None:
    """Forbid weight downloads (what `--offline` sets), or allow them again. An environment
    variable, so that the processes this one starts (torchrun workers) inherit it;
    HF_HUB_OFFLINE=1 set by the user still forbids them."""
    if flag:
        os.environ["VISIONBENCH_OFFLINE"] = "1"
    else:
        os.environ.pop("VISIONBENCH_OFFLINE", None)


def offline() -> bool:
    """True when downloads are forbidden: VISIONBENCH_OFFLINE or HF_HUB_OFFLINE is set true."""
    return any(os.environ.get(v, "").strip().upper() in TRUE for v in OFFLINE_VARS)


def not_on_this_machine(name: str, where: str, fix: str) -> VisionbenchError:
    return VisionbenchError(f"pretrained weights for {name} are not on this machine", where=where, fix=fix)


def download_failed(name: str, url: str, by_hand: str, reason: object) -> VisionbenchError:
    return VisionbenchError(
        f"cannot download the pretrained weights for {name}: {reason}",
        where=url,
        fix=f"check the network and try again; or download {url} by hand and {by_hand}; "
        "or use model.pretrained=false",
    )


def checksum_failed(name: str, url: str, detail: str) -> VisionbenchError:
    return VisionbenchError(
        f"the downloaded weights for {name} fail their checksum ({detail}): the download was cut "
        "short or the file is not the published one; nothing was kept",
        where=url,
        fix="try again; if it persists, use model.pretrained=false",
    )


def reason(e: BaseException) -> str:
    """urllib's '<urlopen error [Errno 111] Connection refused>' without the wrapping."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """A default timeout for the sockets opened inside (only where none is set already):
    process-wide while it lasts, which is one download on the thread building the model."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(before if before is not None else seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def hub_path(url: str) -> Path:
    """Where torch.hub keeps the file at `url`: $TORCH_HOME/hub/checkpoints/<its name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hub_file(name: str, url: str, check_hash: bool) -> Path:
    """`url`'s file in torch hub's cache, downloaded there first when missing: with a progress
    bar, into a temporary file moved in place only when complete (torch.hub's
    download_url_to_file) and, with check_hash, only when its sha256 starts with the hex after
    the last '-' of its name (torch.hub's check_hash)."""
    path = hub_path(url)
    if path.is_file():
        return path
    if offline():
        fix = f"download {url} and place it at that path (or set TORCH_HOME), or use model.pretrained=false"
        raise not_on_this_machine(name, str(path), fix)
    match = torch.hub.HASH_REGEX.search(path.name) if check_hash else None
    sys.stderr.write(f'Downloading: "{url}" to {path}\n')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with socket_timeout(TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
    except RuntimeError as e:  # torch.hub raises this (only) for a hash that does not match
        raise checksum_failed(name, url, str(e)) from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # no network, refused, timed out, cut
        raise download_failed(name, url, f"place it at {path}", reason(e)) from None
    return path
