"""Shared fixtures: every test gets its own cache and runs folder; tiny configs on digits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# fp32 on every CPU, for session fixtures too (they are made before any function fixture): the
# suite's numbers do not depend on whether CI's CPU has native bf16. The tests of the bf16 path
# set VISIONBENCH_CPU_BF16=1 themselves (native here or emulated: tiny cases).
os.environ["VISIONBENCH_CPU_BF16"] = "0"

SHARED_DATA = Path(
    os.environ.get("VISIONBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def skip_or_fail_on_ci(reason: str) -> None:
    """Skip a test whose tool (a PostgreSQL server, Chromium) is missing -- except on CI, where
    .ci/run installs it and sets VISIONBENCH_CI: a skip there would hide a test that never ran."""
    if os.environ.get("VISIONBENCH_CI", "").lower() not in ("", "0", "false"):
        pytest.fail(
            f"{reason}; CI installs it (VISIONBENCH_CI is set), so this test must run there", pytrace=False
        )
    pytest.skip(reason)


class SmallDisk:
    """A small tmpfs mounted at `path`: a disk that fills up, or turns read-only."""

    def __init__(self, path: Path):
        self.path = path

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self) -> Path:
        """Fill the disk: a file that grows until ENOSPC (remove it to free the space)."""
        filler = self.path / "filler"
        # unbuffered: a buffered file kept the bytes of the write that failed and raised ENOSPC
        # again on close, whenever the free space was not a multiple of the chunk
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        return filler


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: full-disk and read-only faults for real, not monkeypatched. Mounting
    needs root: CI runs the tests as root; elsewhere they skip, saying so."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    path = tmp_path / "disk"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        skip_or_fail_on_ci(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield SmallDisk(path)
    subprocess.run(["umount", "-l", str(path)], check=False)


class Malicious:
    """A pickle that runs `call(arg)` when loaded: what a safe reader must refuse."""

    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISIONBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("VISIONBENCH_DATA", raising=False)
    monkeypatch.setenv("VISIONBENCH_OFFLINE", "1")  # nothing downloads unless a test says so (test_hub)
    monkeypatch.setenv("VISIONBENCH_CPU_BF16", "0")  # as at the top: a test that sets it gets it back
    # empty weight caches: a test of "weights not on this machine" passes on a machine that has them
    hub = tmp_path / "weights"
    monkeypatch.setenv("TORCH_HOME", str(hub / "torch"))
    monkeypatch.setenv("HF_HOME", str(hub / "hf"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(name, str(hub / "hf" / "hub"))
    if "huggingface_hub" in sys.modules:  # it reads the variables once, at import
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HOME", str(hub / "hf"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub / "hf" / "hub"))
    yield


TINY = [
    "data.name=digits",
    "model.name=small_cnn",
    "model.kwargs={width: 8}",
    "train.epochs=2",
    "train.batch_size=64",
    "optim.lr=0.1",
    "train.device=cpu",
    "aug.crop_padding=1",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    """A two-epoch digits run that takes about a second on a CPU."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny digits run, trained once per session and shared by the analysis tests:
    they may add files to it (explain/, export/) but never change what is there."""
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    root = tmp_path_factory.mktemp("shared-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONBENCH_CACHE", str(root / "cache"))
        cfg = resolve_config([], TINY + ["name=tiny"])
        return train(cfg, root / "runs", quiet=True).path


@pytest.fixture(scope="session")
def digit_runs(tmp_path_factory) -> Path:
    """Three finished tiny digits runs (a, b, c: seeds 0-2), shared by the eval/ensemble/predict
    tests; commands that write into them (eval bundles, saved ensembles) use their own names."""
    from visionbench.commands.train import train
    from visionbench.config import resolve_config

    root = tmp_path_factory.mktemp("digit_runs")
    overrides = ["data.name=digits", "model.name=small_cnn", "model.kwargs={width: 8}", "train.epochs=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONBENCH_CACHE", str(root / "cache"))
        for seed, name in enumerate("abc"):
            cfg = resolve_config([], overrides + ["train.device=cpu", f"seed={seed}", f"name={name}"])
            train(cfg, runs_dir=root / "runs", quiet=True)
    return root / "runs"


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds hand-off cost (10x on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cut_then_resume(monkeypatch, tmp_path, cfg, global_step: int, on_cut=None):
    """Train `cfg` as run 'cut' until a SIGTERM at `global_step`, call on_cut(run) if given,
    then resume it to the end; returns the resumed run (the tests compare it with a full one)."""
    from visionbench.commands.train import Interrupted, train
    from visionbench.runs import Run

    with pytest.MonkeyPatch.context() as mp:  # undone alone: the test's own settings stay
        interrupt_at(mp, global_step)
        with pytest.raises(Interrupted):
            train(cfg.model_copy(update={"name": "cut"}), quiet=True)
    if on_cut is not None:
        on_cut(Run.open("cut"))
    return train(None, resume="cut", quiet=True)


def interrupt_at(monkeypatch, global_step: int):
    """Send ourselves SIGTERM when training reaches `global_step` (counted over all epochs)."""
    import visionbench.engine.loop as loop_module

    real = loop_module.train_one_epoch
    seen = {"n": 0}

    def wrapped(*args, on_step, **kwargs):
        def counting(batch, loss):
            on_step(batch, loss)
            seen["n"] += 1
            if seen["n"] == global_step:
                signal.raise_signal(signal.SIGTERM)

        return real(*args, **kwargs, on_step=counting)

    monkeypatch.setattr(loop_module, "train_one_epoch", wrapped)
