"""Fetch a file once, verified by checksum, within a deadline and a stall limit, never
leaving a partial file (not even on SIGTERM), and never when offline. Used by `data
download` and by the weight caches (models/hub.py)."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import VisionbenchError, write_error

OFFLINE_VARS = ("VISIONBENCH_OFFLINE", "HF_HUB_OFFLINE")
TRUE = ("1", "ON", "YES", "TRUE")  # what huggingface_hub reads as true in HF_HUB_OFFLINE
# A whole download must end within DEADLINE_S and never go STALL_S without a byte: a
# drip-feeding mirror kept a download at 0% until it was killed (a per-read timeout alone never
# fires while bytes trickle in). Both are raised on a slow link by these variables.
DEADLINE_VAR, STALL_VAR = "VISIONBENCH_DOWNLOAD_DEADLINE", "VISIONBENCH_DOWNLOAD_STALL"
DEADLINE_S, STALL_S = 3600.0, 60.0
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)  # said by write_error


@dataclass(frozen=True)
class Remote:
    """One file of an official distribution: where it lives and what it must hash to."""

    url: str
    filename: str
    md5: str


class Unavailable(VisionbenchError):
    """The file cannot be had here: offline, or the server cannot be reached or has no such
    file. Unlike a download that timed out or came back damaged, nothing is wrong to fix."""


class TimedOut(VisionbenchError):
    """A download that passed its deadline or its stall limit."""


class Expired(BaseException):
    """The deadline, raised from SIGALRM: a BaseException, so that no library's `except
    Exception` around a socket read swallows it."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP during a download, raised so that the temp file is removed on the way
    out; the process then dies of the signal as it would have."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def set_offline(flag: bool = True) -> None:
    """Forbid downloads (what `--offline` sets), or allow them again. An environment
    variable, so that the processes this one starts (torchrun workers) inherit it;
    HF_HUB_OFFLINE=1 set by the user still forbids them."""
    if flag:
        os.environ["VISIONBENCH_OFFLINE"] = "1"
    else:
        os.environ.pop("VISIONBENCH_OFFLINE", None)


def offline_flag() -> str | None:
    """The variable that forbids downloads (VISIONBENCH_OFFLINE or HF_HUB_OFFLINE set true), or None."""
    return next((v for v in OFFLINE_VARS if os.environ.get(v, "").strip().upper() in TRUE), None)


def offline() -> bool:
    return offline_flag() is not None


def allow_again() -> str:
    """How to allow downloads again, naming what forbids them."""
    flag = offline_flag()
    return "drop --offline / unset VISIONBENCH_OFFLINE" if flag == "VISIONBENCH_OFFLINE" else f"unset {flag}"


def seconds(var: str, default: float) -> float:
    text = os.environ.get(var, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise VisionbenchError(
            f"{var}={text!r} is not a number of seconds", fix=f"set {var} to e.g. {default:g}"
        )
    return value


def limits() -> tuple[float, float]:
    """(deadline, stall limit) in seconds for one download."""
    return seconds(DEADLINE_VAR, DEADLINE_S), seconds(STALL_VAR, STALL_S)


def timed_out(name: str, where: str, detail: str, var: str, value: float, by_hand: str) -> TimedOut:
    return TimedOut(
        f"the download of {name} timed out: {detail}",
        where=where,
        fix=f"on a slow link allow more time ({var}=SECONDS, now {value:g}); or {by_hand}",
    )


def file_digest(path: Path, algo: str = "md5", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- digests of files on disk, remembered by size and mtime ----------------------------------
def digest_record(path: Path, algo: str) -> Path:
    """Where the digest of `path` is remembered: our cache, not beside the file (the standard
    caches belong to torch hub and huggingface_hub)."""
    from .cache import cache_root

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return cache_root() / "digests" / f"{key}.{algo}.json"


def remember_digest(path: Path, algo: str, digest: str) -> None:
    st = path.stat()
    record = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest}
    try:
        out = digest_record(path, algo)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, out)
    except OSError:
        pass  # a read-only cache: the file is hashed again next time, nothing worse


def file_problem(path: Path, algo: str, expected: str | None) -> str | None:
    """Why the file at `path` is damaged, or None: its digest must start with `expected`, or,
    with none published, equal the one remembered when it was downloaded (or first used). The
    digest is remembered with the file's size and mtime, so a 100 MB file unchanged since is
    not hashed again on every run."""
    try:
        record = json.loads(digest_record(path, algo).read_text())
    except (OSError, ValueError):
        record = {}
    st = path.stat()
    if (record.get("size"), record.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
        got = record["digest"]
    else:
        got = file_digest(path, algo)
        expected = expected or record.get("digest")
        if not expected or got.startswith(expected):
            remember_digest(path, algo, got)
    if expected and not got.startswith(expected):
        return f"{algo} {got[:16]}..., expected {expected[:16]}... ({st.st_size} bytes)"
    return None


# --- one download ----------------------------------------------------------------------------
@contextmanager
def signals_raised(deadline: float) -> Iterator[None]:
    """While a download runs on the main thread: the deadline as SIGALRM, and SIGTERM/SIGHUP,
    where they would kill the process outright, as exceptions that unwind through the
    `finally` blocks that remove temp files; the process then dies of the signal. Signals
    someone else handles (the training loop's) are left to them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGTERM", "SIGHUP")
    kill = {getattr(signal, n) for n in names if hasattr(signal, n)}
    kill = {s for s in kill if signal.getsignal(s) == signal.SIG_DFL}
    alarm = hasattr(signal, "SIGALRM") and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)

    def expire(*_):
        raise Expired()

    def interrupt(signum, _):
        raise Interrupted(signum)

    old = {s: signal.signal(s, interrupt) for s in kill}
    if alarm:
        old[signal.SIGALRM] = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield
    except Interrupted as e:
        restore(old, alarm)
        signal.raise_signal(e.signum)  # default action restored: the process ends here
        raise
    finally:
        restore(old, alarm)


def restore(old: dict, alarm: bool) -> None:
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, 0)
    for s, h in old.items():
        signal.signal(s, h)


def reason(e: BaseException) -> str:
    """urllib's '<urlopen error [Errno 111] Connection refused>' without the wrapping."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def stream(url: str, out, digest, stall: float, stop_at: float) -> int:
    """`url`'s body into `out` and `digest`, a read at a time (read1: a drip-fed body returns
    what came, so the deadline is checked between reads on any thread); returns the bytes
    written, checked against Content-Length (http.client's read1 ends a cut body silently)."""
    got = 0
    with urllib.request.urlopen(url, timeout=stall) as resp:
        read = getattr(resp, "read1", resp.read)
        bar = progress_bar(resp.headers.get("Content-Length"))
        while block := read(1 << 20):
            if time.monotonic() > stop_at:
                raise Expired()
            out.write(block)
            digest.update(block)
            got += len(block)
            bar(got)
        length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and got != int(length):
        raise ConnectionError(f"the body was cut short: {got} of {length} bytes")
    return got


def progress_bar(length: str | None) -> Callable[[int], None]:
    """Bytes so far on stderr, at most every 10%, where stderr is a terminal."""
    total = int(length) if length and length.isdigit() else 0
    if not total or not sys.stderr.isatty():
        return lambda got: None
    shown = [0]

    def show(got: int) -> None:
        if got * 10 // total > shown[0] or got == total:
            shown[0] = got * 10 // total
            sys.stderr.write(f"\r  {got / 1e6:.1f} of {total / 1e6:.1f} MB")
            sys.stderr.write("\n" if got == total else "")

    return show


def fetch(
    url: str,
    dest: Path,
    algo: str,
    name: str,
    by_hand: str,
    accept: Callable[[str], VisionbenchError | None] = lambda digest: None,
) -> str:
    """`url` into `dest` through DEST.<random>.partial in the same folder, moved in place only
    when whole and accepted (`accept` gets its `algo` digest and returns the error to raise, or
    None); within limits(). Failures say `name` and offer `by_hand`. Returns the digest."""
    deadline, stall = limits()
    with signals_raised(deadline):  # outside the try: a signal unwinds through its finally
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent)
        except OSError as e:
            raise write_error(e, name, dest.parent, "run again") from None
        tmp, digest, start = Path(tmp_name), hashlib.new(algo), time.monotonic()
        try:
            with os.fdopen(fd, "wb") as out:
                stream(url, out, digest, stall, start + deadline)
            if error := accept(digest.hexdigest()):
                raise error
            os.replace(tmp, dest)
        except Expired:
            detail = f"not complete after {deadline:g} s"
            raise timed_out(name, url, detail, DEADLINE_VAR, deadline, by_hand) from None
        except (TimeoutError, urllib.error.URLError) as e:
            if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
                raise timed_out(name, url, f"no bytes for {stall:g} s", STALL_VAR, stall, by_hand) from None
            raise Unavailable(f"cannot download {name}: {reason(e)}", where=url, fix=by_hand) from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # cut short, bad URL, disk
            if getattr(e, "errno", None) in DISK_ERRORS:
                raise write_error(e, name, dest.parent, "run again") from None
            raise VisionbenchError(f"cannot download {name}: {reason(e)}", where=url, fix=by_hand) from None
        finally:
            tmp.unlink(missing_ok=True)
    remember_digest(dest, algo, digest.hexdigest())
    return digest.hexdigest()


def download(remote: Remote, dest_dir: Path, url: str | None = None) -> Path:
    """dest_dir/filename, downloaded unless already there with the right md5; never offline.

    `url` overrides the remote's (a mirror, or a file:// URL in tests)."""
    dest = dest_dir / remote.filename
    url = url or remote.url
    if dest.is_file() and file_problem(dest, "md5", remote.md5) is None:
        return dest
    if offline():
        raise Unavailable(
            f"{remote.filename} is not on this machine and downloads are off ({offline_flag()}=1)",
            where=f"looked for {dest}",
            fix=f"allow downloads ({allow_again()}); or download {url} and place it at {dest}",
        )
    by_hand = f"try again, use --mirror URL, or download it by hand and place it at {dest}"

    def accept(got: str) -> VisionbenchError | None:
        if got == remote.md5:
            return None
        return VisionbenchError(
            f"checksum mismatch for {remote.filename}: md5 {got}, expected {remote.md5}",
            where=url,
            fix="the file is corrupt or not the official one; try again or use another mirror",
        )

    fetch(url, dest, "md5", remote.filename, by_hand, accept)
    return dest
