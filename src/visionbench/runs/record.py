"""A run is a folder: config, environment, metrics per epoch, weights, checkpoint, figures.

The folder is the record of truth. A finished run (summary.json present) is never overwritten.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..engine.checkpoint import atomic_write_bytes
from ..errors import VisionbenchError


def runs_root(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or os.environ.get("VISIONBENCH_RUNS") or "runs")


def default_run_id(data: str, model: str) -> str:
    """<time>-<data>-<model>; Run.create(unique=True) adds -2, -3, ... when that folder exists."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data}-{model}")[-60:].strip("_")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


class Run:
    """One run folder, with the few files every other command reads."""

    def __init__(self, path: Path):
        self.path = Path(path)

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
    def create(cls, root: Path, run_id: str, resume: bool = False, unique: bool = False) -> Run:
        """The run's folder, made here: a new run claims it atomically (mkdir), so concurrent
        runs never share one; `unique` picks the next free -2, -3, ... instead of failing."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", run_id) or run_id in (".", ".."):
            raise VisionbenchError(
                f"bad run name '{run_id}'", fix="use letters, digits, '.', '_', '-' (at most 120)"
            )
        run = cls(root / run_id)
        if run.finished and not unique:  # a default id taken in the same second moves on to -2
            raise VisionbenchError(
                f"run '{run_id}' already finished; it is never overwritten",
                where=str(run.path),
                fix="choose another name= (or leave it out)",
            )
        root.mkdir(parents=True, exist_ok=True)
        for n in range(2, 10_000):
            try:
                run.path.mkdir(exist_ok=resume)
                return run
            except FileExistsError:
                if not unique:
                    raise VisionbenchError(
                        f"run '{run_id}' exists and is unfinished",
                        where=str(run.path),
                        fix="add --resume to continue it, or choose another name",
                    ) from None
                run = cls(root / f"{run_id}-{n}")
        raise VisionbenchError(f"no free run name left for '{run_id}'", where=str(root))

    @classmethod
    def open(cls, ref: str | Path, root: Path | None = None) -> Run:
        """A run by folder path or by id under the runs root."""
        path = Path(ref)
        if not (path / "config.yaml").is_file():
            path = runs_root(root) / str(ref)
        if not (path / "config.yaml").is_file():
            raise VisionbenchError(
                f"no run '{ref}'",
                where=f"looked in {Path(ref)} and {path}",
                fix="`visionbench runs` lists the runs",
            )
        return cls(path)

    # --- writing ------------------------------------------------------------------------------
    def write_json(self, name: str, obj) -> None:
        atomic_write_bytes(self.path / name, json.dumps(obj, indent=1, default=str).encode())

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.path / name, text.encode())

    def set_status(self, status: str) -> None:
        """running / interrupted / finished, kept in run.json beside the data report."""
        self.write_json("run.json", {**self.read_json("run.json"), "status": status})

    def log_metrics(self, row: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epochs: int) -> None:
        """On resume: drop rows of epochs after the checkpoint (written, then interrupted)."""
        rows = [r for r in self.metrics() if r["epoch"] <= epochs]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def save_weights(self, name: str, model: torch.nn.Module) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(self.path / name, save(state))

    # --- reading ------------------------------------------------------------------------------
    def read_json(self, name: str) -> dict:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else {}

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill -9: the epoch is redone
                break
        return rows

    def config(self):
        """The run's resolved config, as saved in config.yaml."""
        from ..config import build_config, load_yaml

        path = self.path / "config.yaml"
        return build_config(load_yaml(path), str(path))

    def load_weights(self, which: str = "last") -> dict[str, torch.Tensor]:
        p = self.path / f"{which}.safetensors"
        if not p.is_file():
            raise VisionbenchError(
                f"run '{self.id}' has no {which} weights",
                where=str(p),
                fix="was the run finished? `visionbench runs` shows its status",
            )
        return load_file(str(p))


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


def list_runs(root: Path) -> list[dict]:
    """One row per run folder and per saved ensemble (`kind` says which), newest first."""
    rows = []
    if not root.is_dir():
        return rows
    for path in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if (path / "ensemble.json").is_file():
            rows.append(ensemble_row(Run(path)))
            continue
        if not (path / "config.yaml").is_file():
            continue
        run = Run(path)
        summary, meta = run.read_json("summary.json"), run.read_json("run.json")
        last = (run.metrics() or [{}])[-1]
        rows.append(
            {
                "id": run.id,
                "kind": "run",
                "status": "finished" if summary else meta.get("status", "unfinished"),
                "data": meta.get("data"),
                "model": meta.get("model"),
                "epochs": f"{last.get('epoch', 0)}/{meta.get('epochs', '?')}",
                "val_acc": last.get("val_acc"),
                "test_acc": summary.get("test_acc"),
                "seconds": summary.get("train_seconds"),
            }
        )
    return rows


def ensemble_row(folder: Run) -> dict:
    """A saved ensemble (`visionbench ensemble --save`) as a row of the runs list: its vote and
    members in place of the model, the vote's test accuracy as measured when it was saved."""
    meta, summary = folder.read_json("ensemble.json"), folder.read_json("summary.json")
    members = [m.get("id", "?") for m in meta.get("members", [])]
    return {
        "id": folder.id,
        "kind": "ensemble",
        "status": "finished" if summary else "saved",
        "data": None,
        "model": f"{meta.get('vote', '?')} vote: {', '.join(members)}",
        "epochs": "-",
        "val_acc": None,
        "test_acc": summary.get("top1"),
        "seconds": None,
    }
