"""One owner per run: the process that trains a run holds an exclusive `flock` on RUN/.lock for
as long as it owns the folder. The kernel drops the lock when the process dies, however it
dies, so a `kill -9` never leaves a run stuck; a second process that would train, resume or
overwrite the run is refused with the owner's pid and host (written in the lock file).
Without fcntl (Windows) nothing is locked and `visionbench runs` falls back to the pid."""

from __future__ import annotations

import errno
import json
import os
import platform
import time
from pathlib import Path

from ..errors import VisionbenchError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there (said in the README)
    fcntl = None

LOCK_FILE = ".lock"  # hidden: never a run file, never listed
# A failed try is retried this long: `visionbench runs` holds a shared lock for a moment while
# it looks, which must not refuse a resume started in that moment. A live owner holds it for
# the whole run, so a refusal comes this much later, never wrongly.
PATIENCE_S = 1.0
# filesystems that cannot lock (some network mounts): the run trains unlocked, as on Windows
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLocked(VisionbenchError):
    """The run is owned by another live process. Sweeps and studies stop on it, rather than
    train the next cells beside the process that owns this one (a second copy of the sweep)."""


class RunLock:
    """This process's hold on a run folder; `release` (or leaving the `with`) lets it go."""

    held: dict[int, RunLock] = {}  # by file descriptor: closed in forked children (see below)

    def __init__(self, fd: int | None = None):
        self.fd = fd
        if fd is not None:
            RunLock.held[fd] = self

    @classmethod
    def take(cls, folder: Path, run_id: str) -> RunLock:
        """The lock on `folder`, or RunLocked naming its owner."""
        if fcntl is None:
            return cls()
        path = folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file: flock works on a read-only one too
            fd = os.open(path, os.O_RDONLY)
        try:
            got = exclusive(fd)
        except OSError:
            os.close(fd)
            raise
        if not got:
            os.close(fd)
            if got is None:
                return cls()
            raise locked(folder, run_id)
        try:  # who owns it, for the refusal another process may print
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": platform.node()}).encode())
        except OSError:  # read-only: the refusal says "another process"
            pass
        return cls(fd)

    def release(self) -> None:
        if self.fd is not None:
            RunLock.held.pop(self.fd, None)
            os.close(self.fd)  # the last descriptor of the lock closed: the lock is gone
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def exclusive(fd: int) -> bool | None:
    """Whether `fd` got the exclusive lock within PATIENCE_S; None when its filesystem cannot
    lock at all."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        except OSError as e:
            if e.errno in NO_LOCKS:
                return None
            raise


def forget_in_child() -> None:
    """A forked child (a DataLoader worker) shares the parent's lock while it has the
    descriptor: it would keep a killed run locked until the worker noticed. Closed there; the
    parent's own descriptor still holds the lock."""
    for fd, lock in list(RunLock.held.items()):
        lock.fd = None
        try:
            os.close(fd)
        except OSError:
            pass
    RunLock.held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_in_child)


def is_locked(folder: Path) -> bool | None:
    """Whether a live process owns the run in `folder`; None when this cannot be told (no lock
    file: a run made before locks, or no fcntl here). It looks with a shared lock, which
    excludes the owner's exclusive one and never another looker."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # closing the descriptor below lets go at once
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def owner(folder: Path) -> dict:
    """{pid, host} of the process that last took the lock, as far as its file says."""
    try:
        meta = json.loads((folder / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def locked(folder: Path, run_id: str, new_name: bool = False) -> RunLocked:
    """The refusal: who owns the run, and how to get it back."""
    meta = owner(folder)
    pid, host = meta.get("pid"), meta.get("host")
    who = f"pid {pid} on {host}" if pid and host else "another process"
    there = "" if host == platform.node() else f" on {host}"
    stop = f"stop it (`kill {pid}`{there} saves a checkpoint)" if pid else "stop it"
    fix = f"wait for it to finish (`visionbench runs` shows it running), or {stop} and run this command again"
    if new_name:
        fix += "; or choose another name for a new run"
    return RunLocked(f"run '{run_id}' is being trained by {who}", where=str(folder), fix=fix)


def refuse_if_owned(folder: Path, run_id: str, new_name: bool = False) -> None:
    """Said before any work (the lock itself is taken when the folder is claimed): a run
    another process trains is not resumed here, nor its name given to a new run."""
    if is_locked(folder):
        raise locked(folder, run_id, new_name)


def live_status(folder: Path, status: str, meta: dict) -> str:
    """An unfinished run's status (run.json's `status`, pid and host in `meta`) checked against
    its owner: a locked run is running, whatever an earlier process wrote; a "running" run no
    process holds was killed where it could not say so (kill -9, a power cut). Runs made
    before locks are told by their pid; a process on another host cannot be checked from
    here unless it holds the lock (a shared folder whose locks reach this host)."""
    here, host = platform.node(), meta.get("host")
    held = is_locked(folder)
    if held:
        owner_host = owner(folder).get("host", here)
        return "running" if owner_host == here else f"running (on {owner_host})"
    if status != "running":
        return status
    if host != here:
        return f"running? (on {host})" if isinstance(host, str) else "running?"
    if held is False:
        return "stopped (process gone)"
    pid = meta.get("pid")
    if not isinstance(pid, int):
        return "running?"
    try:
        os.kill(pid, 0)  # signal 0: is it alive? nothing is sent
    except ProcessLookupError:
        return "stopped (process gone)"
    except OSError:  # alive, as another user (EPERM); or not checkable here
        pass
    return "running"
