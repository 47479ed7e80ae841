"""A run is a folder: config, environment, metrics per epoch, weights, checkpoint, figures.

The folder is the record of truth. A finished run (summary.json present) is never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save

from ..engine.checkpoint import atomic_write_bytes, fsync_dir
from ..errors import VisionbenchError, write_error
from ..models.weights import read_state_file
from .lock import RunLock, is_locked, live_status, locked


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """The runs folder: `runs_dir` (--runs-dir), else $VISIONBENCH_RUNS, else ./runs. One that
    is a file, or lies inside one, is said here for every command (not a NotADirectoryError,
    nor "File exists" later)."""
    env = os.environ.get("VISIONBENCH_RUNS")
    root = Path(runs_dir or env or "runs")
    found = next((p for p in (root, *root.parents) if p.exists()), None)
    if found is None or found.is_dir():
        return root
    given = f"--runs-dir {runs_dir}" if runs_dir else f"VISIONBENCH_RUNS={env}" if env else "./runs"
    what = "is a file" if found == root else f"lies inside {found}, which is a file"
    raise VisionbenchError(
        f"{given} {what}; pass a folder",
        where=str(found),
        fix="pass a folder with --runs-dir (it is made if missing)"
        + ("" if runs_dir else ", or set VISIONBENCH_RUNS to one"),
    )


def default_run_id(data: str, model: str) -> str:
    """<time>-<data>-<model>; Run.create(unique=True) adds -2, -3, ... when that folder exists."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data}-{model}")[-60:].strip("_")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


class Run:
    """One run folder, with the few files every other command reads. The run a process trains
    is held with its `lock` (runs/lock.py) until it leaves `with run:`."""

    lock: RunLock | None = None

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        return (self.path / "summary.json").is_file()

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @classmethod
    def create(
        cls,
        root: Path,
        run_id: str,
        resume: bool = False,
        unique: bool = False,
        files: dict | None = None,
        own: bool = False,
    ) -> Run:
        """The run's folder, made here with `files` ({name: text}, e.g. its config.yaml) already
        in it: built as a hidden temp folder, then renamed into place. A rename claims a name
        atomically, so concurrent runs never share a folder, and a folder never exists without
        its config. Each file comes with its sha256 (NAME.sha256): a config.yaml cut short or
        changed later is found when read, not filled in with defaults. An existing folder is
        taken over only when empty - what a run stopped in its first seconds by an older
        version left - so such a name is never stuck; `unique` picks the next free -2, -3, ...
        instead of failing. `own`: the run is to be trained here, and comes locked (RunLocked
        when another process owns it); a new folder is locked before it is renamed into place,
        so it is never seen unowned."""
        from ..config import check_run_name

        check_run_name(run_id)
        run = cls(root / run_id)
        if run.finished and not unique:  # a default id taken in the same second moves on to -2
            raise run.done()
        if resume:
            run.path.mkdir(parents=True, exist_ok=True)
            run.lock = RunLock.take(run.path, run_id) if own else None
            if run.finished:  # by a process that owned it since the caller looked: not again
                with run:
                    raise run.done()
            return run
        tmp = writable(root, prefix=f".{run_id}.new-")
        lock = None
        try:
            for name, text in (files or {}).items():
                atomic_write_bytes(tmp / name, text.encode())
                atomic_write_bytes(tmp / f"{name}.sha256", hashlib.sha256(text.encode()).hexdigest().encode())
            lock = RunLock.take(tmp, run_id) if own else None
            for n in range(2, 10_000):
                if run.claim(tmp, take_empty=not unique):
                    run.lock, lock = lock, None
                    return run
                if not unique:
                    raise run.taken()
                run = cls(root / f"{run_id}-{n}")
        finally:
            if lock is not None:  # not claimed
                lock.release()
            shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed; left only on a failure
        raise VisionbenchError(f"no free run name left for '{run_id}'", where=str(root))

    def claim(self, tmp: Path, take_empty: bool) -> bool:
        """Rename `tmp` to this run's folder; False when the name is taken. An empty folder is
        taken over when `take_empty` (POSIX rename replaces an empty directory; elsewhere it is
        removed first - rmdir fails if anything appeared in it meanwhile)."""
        if not take_empty and self.path.exists():
            return False
        for _ in range(2):
            try:
                os.rename(tmp, self.path)
                fsync_dir(self.path.parent)
                return True
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
            if not take_empty:
                return False
            try:
                self.path.rmdir()
            except OSError:
                return False
        return False

    def done(self) -> VisionbenchError:
        return VisionbenchError(
            f"run '{self.id}' already finished; it is never overwritten",
            where=str(self.path),
            fix="choose another name= (or leave it out)",
        )

    def taken(self) -> VisionbenchError:
        """Why this run's name cannot be used for a new run."""
        if is_locked(self.path):
            return locked(self.path, self.id, new_name=True)
        if (self.path / "config.yaml").is_file():
            return VisionbenchError(
                f"run '{self.id}' exists and is unfinished",
                where=str(self.path),
                fix="add --resume to continue it, or choose another name",
            )
        return VisionbenchError(
            f"'{self.id}' exists in the runs folder and holds no run (no config.yaml)",
            where=str(self.path),
            fix="choose another name, or remove that folder if nothing in it is wanted",
        )

    @classmethod
    def open(cls, ref: str | Path, root: Path | None = None, done: str = "used here") -> Run:
        """A run by folder path or by id under the runs root. A saved ensemble's name is said
        to be one (what cannot be `done` to it) with its member runs offered instead."""
        path = Path(ref)
        if not (path / "config.yaml").is_file():
            path = runs_root(root) / str(ref)
        for folder in (Path(ref), path):
            if (folder / "ensemble.json").is_file() and not (folder / "config.yaml").is_file():
                raise VisionbenchError(
                    f"'{ref}' is a saved ensemble, not a run: an ensemble cannot be {done}",
                    where=str(folder / "ensemble.json"),
                    fix=f"pass one of its member runs instead: {', '.join(member_ids(Run(folder)))}",
                )
        if not (path / "config.yaml").is_file():
            empty = path.is_dir() and not any(path.iterdir())
            raise VisionbenchError(
                f"run '{ref}' never started: its folder is empty" if empty else f"no run '{ref}'",
                where=str(path) if empty else f"looked in {Path(ref)} and {path}",
                fix=f"start it again with --name {path.name} (an empty folder is reused)"
                if empty
                else "`visionbench runs` lists the runs",
            )
        return cls(path)

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def writing(self, name: str):
        """A full disk or a read-only folder while writing `name`: a clear error, not an OSError
        (each write is atomic: the file before it is intact)."""
        try:
            yield
        except OSError as e:
            then = f"run the command again (a training run: `visionbench train --resume {self.id}`)"
            raise write_error(e, name, self.path / name, then) from None

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.writing(name):
            atomic_write_bytes(self.path / name, data)

    def write_json(self, name: str, obj) -> None:
        self.write_bytes(name, json.dumps(obj, indent=1, default=str).encode())

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def set_status(self, status: str) -> None:
        """running / interrupted / finished, kept in run.json beside the data report."""
        try:
            meta = self.read_json("run.json")
        except VisionbenchError:  # damaged: the status at least is written whole again
            meta = {}
        self.write_json("run.json", {**meta, "status": status})

    def log_metrics(self, row: dict) -> None:
        with self.writing("metrics.jsonl"), open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epochs: int) -> None:
        """On resume: drop rows of epochs after the checkpoint (written, then interrupted)."""
        rows = [r for r in self.metrics() if r["epoch"] <= epochs]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def save_weights(self, name: str, model: torch.nn.Module) -> None:
        """NAME.safetensors, and its sha256 beside it (NAME.safetensors.sha256), checked on load.
        The old digest goes first: a crash between the two leaves weights unchecked, never
        weights that look damaged."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        data = save(state)
        with self.writing(name):
            (self.path / f"{name}.sha256").unlink(missing_ok=True)
        self.write_bytes(name, data)
        self.write_text(f"{name}.sha256", hashlib.sha256(data).hexdigest())

    # --- reading ------------------------------------------------------------------------------
    def read_json(self, name: str) -> dict:
        """One of the run's JSON files ({} when absent); a damaged one is a clear error."""
        p = self.path / name
        if not p.is_file():
            return {}
        try:
            obj = json.loads(p.read_bytes())
        except (ValueError, OSError):  # not JSON (UnicodeDecodeError is a ValueError), or unreadable
            obj = None
        if not isinstance(obj, dict):
            raise VisionbenchError(
                f"run '{self.id}': {name} is damaged (not a JSON object)",
                where=str(p),
                fix="restore the file, or remove the run's folder if the run is not wanted",
            )
        return obj

    def record(self, absent: str = "unfinished") -> tuple[str, dict, dict]:
        """(status, summary.json, run.json) for listings. A damaged file makes the status
        "damaged: ..." - one bad file never hides this run, nor any other."""
        files, damaged = {}, []
        for name in ("summary.json", "run.json"):
            try:
                files[name] = self.read_json(name)
            except VisionbenchError:
                files[name] = {}
                damaged.append(name)
        summary, meta = files["summary.json"], files["run.json"]
        if not (self.path / "config.yaml").is_file():
            damaged.insert(0, "config.yaml missing")
        elif self.config_changed():
            damaged.insert(0, "config.yaml changed")
        if damaged:
            return f"damaged: {', '.join(damaged)}", summary, meta
        status = "finished" if summary else str(meta.get("status", absent))
        return (status if summary else live_status(self.path, status, meta)), summary, meta

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill -9: the epoch is redone
                break
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                break  # damaged: what follows cannot be trusted either
            rows.append(row)
        return rows

    def config(self):
        """The run's resolved config, as saved in config.yaml."""
        from ..config import build_config

        return build_config(self.config_tree(), str(self.path / "config.yaml"))

    def config_tree(self) -> dict:
        """config.yaml as saved, checked against the sha256 written with it (runs made before
        the digest are read unchecked): a file cut short would otherwise fill in defaults."""
        from ..config import load_yaml

        path = self.path / "config.yaml"
        if self.config_changed():
            raise VisionbenchError(
                f"run '{self.id}': config.yaml is damaged (its sha256 differs from the one written "
                "with it: cut short or edited)",
                where=str(path),
                fix="restore the file from a copy; to train with other settings, start a new run "
                "from an edited copy (`visionbench train --config FILE`)",
            )
        return load_yaml(path)

    def config_changed(self) -> bool:
        path = self.path / "config.yaml"
        try:
            return digest_differs(path, path.read_bytes())
        except OSError:  # missing or unreadable: load_yaml says which
            return False

    def load_weights(self, which: str = "last") -> dict[str, torch.Tensor]:
        """The run's last or best weights, checked against the sha256 written with them."""
        p = self.path / f"{which}.safetensors"
        if not p.is_file():
            raise VisionbenchError(
                f"run '{self.id}' has no {which} weights",
                where=str(p),
                fix="was the run finished? `visionbench runs` shows its status",
            )
        data = p.read_bytes()
        if digest_differs(p, data):
            other = "best" if which == "last" else "last"
            raise VisionbenchError(
                f"run '{self.id}': {p.name} is damaged (its sha256 differs from the one written with it)",
                where=str(p),
                fix=f"evaluate its {other} weights (--weights {other}), or train the run again",
            )
        return read_state_file(p, data)


def digest_differs(path: Path, data: bytes) -> bool:
    """Whether `data` (the file at `path`) differs from the sha256 written beside it (PATH.sha256);
    a file written without one is taken as it is."""
    digest = path.with_name(path.name + ".sha256")
    return digest.is_file() and hashlib.sha256(data).hexdigest() != digest.read_text().strip()


def writable(folder: Path, prefix: str = ".probe-") -> Path:
    """A new empty temp folder in `folder` (made if need be), or a clear error when nothing
    can be written there - checked before the work, not after it (a read-only or full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=folder, prefix=prefix))
    except OSError as e:
        raise write_error(e, "in this folder", folder, "run the command again") from None


def check_writable(folder: Path) -> None:
    """`writable`, leaving nothing behind: a folder not made yet is probed where it would be."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    writable(folder).rmdir()


class RunView(Run):
    """A run seen by a process that must not write to it (a distributed rank other than 0)."""

    def write_json(self, name: str, obj) -> None:
        pass

    def write_text(self, name: str, text: str) -> None:
        pass

    def log_metrics(self, row: dict) -> None:
        pass

    def save_weights(self, name: str, model: torch.nn.Module) -> None:
        pass


def environment(device: torch.device) -> dict:
    from importlib.metadata import version

    from .. import __version__

    try:
        git = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        git = None
    return {
        "visionbench": __version__,
        "git": git,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "numpy": version("numpy"),
        "platform": platform.platform(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
    }


def cpu_name() -> str:
    try:  # platform.processor() is empty on Linux; /proc/cpuinfo has the model name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def member_ids(folder: Run) -> list[str]:
    """The run ids of a saved ensemble's members, as far as its ensemble.json can be read."""
    try:
        members = folder.read_json("ensemble.json").get("members")
    except VisionbenchError:
        members = None
    if not isinstance(members, list):
        return ["? (its ensemble.json is damaged: `visionbench runs` lists the runs)"]
    return [str(m.get("id", "?")) if isinstance(m, dict) else "?" for m in members]
