"""Pretrained weight files in their standard caches (torch hub's for URLs, Hugging Face's for
timm): used from there, else downloaded once, checksummed and atomically, unless offline."""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..data.download import file_digest
from ..errors import VisionbenchError

OFFLINE_VARS = ("VISIONBENCH_OFFLINE", "HF_HUB_OFFLINE")
TRUE = ("1", "ON", "YES", "TRUE")  # what huggingface_hub reads as true in HF_HUB_OFFLINE
TIMEOUT_S = 60.0  # torch.hub opens URLs with no timeout: a stalled connection would hang forever
HF_CACHE = "the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface)"
SHA256 = re.compile(r"[0-9a-f]{64}")


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


def split_repo(repo: str) -> tuple[str, str | None]:
    """timm's 'id@revision' (or 'id') as huggingface_hub's repo_id and revision."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def hf_cached(repo: str, files: tuple[str, ...]) -> Path | None:
    """The first of `files` of Hugging Face repo `repo` in the local Hugging Face cache,
    without touching the network; None when none is there."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = split_repo(repo)
    for file in files:
        path = try_to_load_from_cache(repo_id, file, revision=revision)
        if isinstance(path, str):  # else None or the "known not to exist" marker
            return Path(path)
    return None


def hf_url(repo: str, file: str) -> str:
    from huggingface_hub import hf_hub_url

    repo_id, revision = split_repo(repo)
    return hf_hub_url(repo_id, file, revision=revision)


def hf_file(name: str, repo: str, files: tuple[str, ...]) -> Path:
    """The first of `files` that repo `repo` holds, from the Hugging Face cache, downloaded
    there first when missing (huggingface_hub writes a temporary file, checks its size and
    moves it in place) and then checked against its sha256, which names the blob."""
    if path := hf_cached(repo, files):
        return path
    url = hf_url(repo, files[0])
    by_hand = "pass it with model.weights=PATH (--weights PATH) and model.pretrained=false"
    if offline():
        raise not_on_this_machine(name, HF_CACHE, f"download {url} and {by_hand}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, revision = split_repo(repo)
    for file in files:
        try:
            path = Path(hf_hub_download(repo_id, file, revision=revision))
        except LocalEntryNotFoundError as e:  # huggingface_hub's answer when it cannot reach the hub
            raise download_failed(name, hf_url(repo, file), by_hand, reason(e.__cause__ or e)) from None
        except EntryNotFoundError:
            continue  # the repo has not this format: try the next, as timm does
        except (OSError, ValueError) as e:  # HTTP errors, unknown repo, disk
            raise download_failed(name, hf_url(repo, file), by_hand, reason(e)) from None
        check_blob(name, hf_url(repo, file), path)
        return path
    raise VisionbenchError(
        f"the Hugging Face repo {repo_id} holds none of {', '.join(files)}",
        where=url,
        fix="use model.pretrained=false, or another timm model (`visionbench models timm:PATTERN`)",
    )


def check_blob(name: str, url: str, path: Path) -> None:
    """huggingface_hub names a large (LFS) file's blob by its sha256 without checking it: check
    it once, after the download, and remove the file when it does not match."""
    blob = path.resolve()
    if not SHA256.fullmatch(blob.name):
        return  # a small file kept in git: its name is a git hash
    got = file_digest(blob, "sha256")
    if got != blob.name:
        blob.unlink()
        path.unlink(missing_ok=True)
        raise checksum_failed(name, url, f"sha256 {got}, expected {blob.name}")
