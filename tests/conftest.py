"""Shared fixtures: every test gets its own cache and runs folder; tiny configs on digits."""

from __future__ import annotations

import os
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


@pytest.fixture
def tiny_overrides() -> list[str]:
    """A two-epoch digits run that takes about a second on a CPU."""
    return [
        "data.name=digits",
        "model.name=small_cnn",
        "model.kwargs={width: 8}",
        "train.epochs=2",
        "train.batch_size=64",
        "optim.lr=0.1",
        "train.device=cpu",
        "aug.crop_padding=1",
    ]
