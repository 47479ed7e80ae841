"""Pretrained weight files in their standard caches (torch hub's for URLs, Hugging Face's for
timm): used from there, else downloaded once, checksummed and atomically, unless offline."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..data.download import (
    DEADLINE_VAR,
    STALL_VAR,
    Expired,
    Unavailable,
    allow_again,
    fetch,
    file_problem,
    limits,
    offline,
    offline_flag,
    reason,
    set_offline,
    signals_raised,
    timed_out,
)
from ..errors import VisionbenchError

__all__ = ["offline", "set_offline"]
HF_CACHE = "the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface)"
SHA256 = re.compile(r"[0-9a-f]{64}")


class DamagedWeights(VisionbenchError):
    """A weight file in a cache that fails its checksum or cannot be read: deleting it is the fix."""


def damaged(name: str, path: Path, detail: str) -> DamagedWeights:
    """The one message for a weight file in a cache that is not what it should be, whatever
    found it (its checksum, torch.load, safetensors, timm)."""
    return DamagedWeights(
        f"the pretrained weights for {name} on disk are damaged ({detail})",
        where=str(path),
        fix=f"delete {path} (it is damaged: cut short or overwritten) and run again: it is downloaded anew",
    )


def check_cached(name: str, path: Path, expected: str | None, algo: str = "sha256") -> Path:
    """`path`, unless its digest fails `expected` (or the one remembered for it): see file_problem."""
    if problem := file_problem(path, algo, expected):
        raise damaged(name, path, problem)
    return path


def not_on_this_machine(name: str, where: str, fix: str) -> Unavailable:
    return Unavailable(
        f"pretrained weights for {name} are not on this machine and downloads are off ({offline_flag()}=1)",
        where=where,
        fix=f"{fix}; or allow downloads ({allow_again()})",
    )


def weights_fix(url: str, by_hand: str) -> str:
    return f"check the network and try again; or download {url} by hand and {by_hand}; or use model.pretrained=false"


def download_failed(
    name: str, url: str, by_hand: str, why: object, kind=VisionbenchError
) -> VisionbenchError:
    return kind(
        f"cannot download the pretrained weights for {name}: {why}", where=url, fix=weights_fix(url, by_hand)
    )


def checksum_failed(name: str, url: str, detail: str) -> VisionbenchError:
    return VisionbenchError(
        f"the downloaded weights for {name} fail their checksum ({detail}): the download was cut "
        "short or the file is not the published one; nothing was kept",
        where=url,
        fix="try again; if it persists, use model.pretrained=false",
    )


def hub_path(url: str) -> Path:
    """Where torch.hub keeps the file at `url`: $TORCH_HOME/hub/checkpoints/<its name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hub_file(name: str, url: str, check_hash: bool) -> Path:
    """`url`'s file in torch hub's cache, downloaded there first when missing (through a
    temporary file moved in place only when complete), and checked before each use: with
    check_hash, its sha256 must start with the hex after the last '-' of its name (torch.hub's
    check_hash); without, equal the one it had when downloaded."""
    path = hub_path(url)
    match = torch.hub.HASH_REGEX.search(path.name) if check_hash else None
    expected = match.group(1) if match else None
    if path.is_file():
        return check_cached(name, path, expected)
    if offline():
        fix = f"download {url} and place it at that path (or set TORCH_HOME), or use model.pretrained=false"
        raise not_on_this_machine(name, str(path), fix)
    sys.stderr.write(f'Downloading: "{url}" to {path}\n')

    def accept(got: str) -> VisionbenchError | None:
        if expected and not got.startswith(expected):
            return checksum_failed(name, url, f"sha256 {got[:16]}..., expected {expected}...")
        return None

    fetch(
        url,
        path,
        "sha256",
        f"the pretrained weights for {name}",
        weights_fix(url, f"place it at {path}"),
        accept,
    )
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


@contextmanager
def hf_timeouts(stall: float) -> Iterator[None]:
    """huggingface_hub's per-read timeout (HF_HUB_DOWNLOAD_TIMEOUT, read once at its import,
    default 10 s) set to our stall limit for one download, unless the user set it."""
    from huggingface_hub import constants

    before = constants.HF_HUB_DOWNLOAD_TIMEOUT
    if not os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT"):
        constants.HF_HUB_DOWNLOAD_TIMEOUT = stall
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = before


def hf_failure(name: str, url: str, by_hand: str, e: Exception, stall: float) -> VisionbenchError:
    """What huggingface_hub raised, as one error: a timeout, a hub that cannot be reached or
    has no such file (Unavailable), or anything else (a body cut short: httpx's
    RemoteProtocolError, which is no OSError). httpx's classes are matched by name: version 1
    of huggingface_hub uses httpx, version 2 httpx2."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cause = e.__cause__ if isinstance(e, LocalEntryNotFoundError) and e.__cause__ else e
    kinds = {c.__name__ for c in type(cause).__mro__}
    if "TimeoutException" in kinds or isinstance(cause, TimeoutError):
        what = f"the pretrained weights for {name}"
        return timed_out(what, url, f"no bytes for {stall:g} s", STALL_VAR, stall, weights_fix(url, by_hand))
    unreachable = {"ConnectError", "OfflineModeIsEnabled"} & kinds or isinstance(cause, HfHubHTTPError)
    kind = Unavailable if unreachable or isinstance(e, LocalEntryNotFoundError) else VisionbenchError
    why = reason(cause) if isinstance(cause, OSError) else f"{type(cause).__name__}: {cause}"
    return download_failed(name, url, by_hand, why, kind)


def hf_download(name: str, repo: str, file: str, by_hand: str) -> Path | None:
    """`file` of `repo` downloaded into the Hugging Face cache within limits() (the deadline
    on the main thread only: SIGALRM; elsewhere each read is bounded by the stall limit);
    None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    deadline, stall = limits()
    repo_id, revision = split_repo(repo)
    url = hf_url(repo, file)
    try:
        with hf_timeouts(stall), signals_raised(deadline):
            return Path(hf_hub_download(repo_id, file, revision=revision, etag_timeout=stall))
    except Expired:
        what = f"the pretrained weights for {name}"
        detail = f"not complete after {deadline:g} s"
        raise timed_out(what, url, detail, DEADLINE_VAR, deadline, weights_fix(url, by_hand)) from None
    except EntryNotFoundError as e:
        if isinstance(e, LocalEntryNotFoundError):  # a subclass: the hub could not be reached
            raise hf_failure(name, url, by_hand, e, stall) from None
        return None  # the repo has not this format: the next is tried, as timm does
    except Exception as e:  # noqa: BLE001 - whatever the hub or its HTTP client raise: one error
        raise hf_failure(name, url, by_hand, e, stall) from None


def hf_file(name: str, repo: str, files: tuple[str, ...]) -> Path:
    """The first of `files` that repo `repo` holds, from the Hugging Face cache, downloaded
    there first when missing (huggingface_hub writes a temporary file, checks its size and
    moves it in place), and checked against its sha256, which names the blob, before each use."""
    if path := hf_cached(repo, files):
        blob, problem = blob_problem(path)
        if problem:
            raise damaged(name, blob, problem)
        return path
    url = hf_url(repo, files[0])
    by_hand = "pass it with model.weights=PATH (--weights PATH) and model.pretrained=false"
    if offline():
        raise not_on_this_machine(name, HF_CACHE, f"download {url} and {by_hand}")
    for file in files:
        if path := hf_download(name, repo, file, by_hand):
            blob, problem = blob_problem(path)
            if problem:  # just downloaded: not kept
                blob.unlink()
                path.unlink(missing_ok=True)
                raise checksum_failed(name, hf_url(repo, file), problem)
            return path
    raise Unavailable(
        f"the Hugging Face repo {split_repo(repo)[0]} holds none of {', '.join(files)}",
        where=url,
        fix="use model.pretrained=false, or another timm model (`visionbench models timm:PATTERN`)",
    )


def blob_problem(path: Path) -> tuple[Path, str | None]:
    """The blob behind `path` and why it is damaged, or None. huggingface_hub names a large
    (LFS) file's blob by its sha256 without checking it: checked here, once per change of the
    file (see file_problem); a small file kept in git is named by its git hash instead, and
    checked against the digest it had when first used."""
    blob = path.resolve()
    return blob, file_problem(blob, "sha256", blob.name if SHA256.fullmatch(blob.name) else None)
