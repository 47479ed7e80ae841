"""Shared fixtures: every test gets its own cache and runs folder; tiny configs on digits."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("VISIONBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VISIONBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("VISIONBENCH_DATA", raising=False)
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
