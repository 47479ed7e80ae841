"""Checkpoints are whole or absent, verified on load, and never run code."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch
from conftest import Malicious

from visionbench.engine import checkpoint as ck
from visionbench.errors import VisionbenchError


def state(v: float) -> dict:
    return {"epoch": int(v), "model": {"w": torch.full((3,), v)}, "rng": ck.rng_state()}


def test_round_trip_keeps_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, state(1))
    ck.save_checkpoint(path, state(2))
    assert ck.load_checkpoint(path)["epoch"] == 2
    assert ck._read_verified(path.with_name("checkpoint.pt.prev"))["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_last_checkpoint_falls_back_to_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, state(1))
    ck.save_checkpoint(path, state(2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # killed mid-write, as far as the reader can tell
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        assert ck.load_checkpoint(path)["epoch"] == 1


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, state(1))
    path.write_bytes(b"garbage")
    with pytest.raises(VisionbenchError, match="no intact checkpoint"):
        ck.load_checkpoint(path)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    blob = pickle.dumps({"epoch": 1, "payload": Malicious(os.system, f"touch {sentinel}")}, protocol=2)
    path.write_bytes(blob)
    # a valid hash: the file is "ours" as far as integrity goes, yet it must not run code
    import hashlib

    path.with_name("checkpoint.pt.sha256").write_text(hashlib.sha256(blob).hexdigest())
    with pytest.raises(VisionbenchError, match="not a checkpoint torch can read safely") as e:
        ck.load_checkpoint(path)  # refused by weights_only, and said without torch's advice
    assert "weights_only=False" not in str(e.value)
    assert not sentinel.exists()


def test_garbage_with_a_matching_digest_is_a_clear_error(tmp_path):
    import hashlib

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"garbage")
    path.with_name("checkpoint.pt.sha256").write_text(hashlib.sha256(b"garbage").hexdigest())
    with pytest.raises(VisionbenchError, match="checkpoint.pt: not a checkpoint torch can read") as e:
        ck.load_checkpoint(path)
    assert "weights_only=False" not in str(e.value)


def test_disk_full_keeps_old_checkpoint_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, state(1))
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        ck.save_checkpoint(path, state(2))
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    assert not list(tmp_path.glob(".*.tmp"))
    assert ck._read_verified(path)["epoch"] == 1  # the current checkpoint, untouched


def test_rng_state_round_trips():
    import random

    import numpy as np

    s = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(s)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_killed_between_renames_still_leaves_a_verifiable_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, state(1))
    ck.save_checkpoint(path, state(2))
    real_replace, calls = os.replace, {"n": 0}

    def dies_on_the_second_rename(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # digest write (1: tmp -> prev digest), current -> prev (2), new -> current (3)
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", dies_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, state(3))
    monkeypatch.setattr(ck.os, "replace", real_replace)
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        assert ck.load_checkpoint(path)["epoch"] == 2  # the previous one, verified


class Nothing:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def training_state(width: int) -> ck.TrainingState:
    model = torch.nn.Linear(width, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return ck.TrainingState(
        model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1), Nothing()
    )


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    training_state(4).save(path)
    with pytest.raises(VisionbenchError, match="does not fit this run's model"):
        training_state(5).restore(path)  # the config was edited since, or another run's file copied in
