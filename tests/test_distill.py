"""Distillation: a student learns a finished run's (or a saved ensemble's) soft targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.engine.distill import Teacher
from visionbench.errors import VisionbenchError

TINY = ["data.name=digits", "model.name=small_cnn", "model.kwargs={width: 8}", "train.device=cpu"]


def test_the_soft_loss_is_hintons():
    """w T^2 KL(teacher || student) at temperature T, plus (1 - w) the labels' loss."""
    torch.manual_seed(0)
    teacher_logits, student_logits = torch.randn(4, 3), torch.randn(4, 3)
    fixed = nn.Module()
    fixed.forward = lambda x: teacher_logits  # a teacher that answers these logits
    t, w, label_loss = 2.0, 0.25, torch.tensor(1.5)
    got = Teacher([fixed], [1.0], w, t).blend(label_loss, student_logits, torch.zeros(4, 1, 2, 2))
    p = [[math.exp(v / t) for v in row] for row in teacher_logits.tolist()]
    q = [[math.exp(v / t) for v in row] for row in student_logits.tolist()]
    kl = sum(
        sum(a / sum(pr) * math.log((a / sum(pr)) / (b / sum(qr))) for a, b in zip(pr, qr))
        for pr, qr in zip(p, q)
    )
    assert got.item() == pytest.approx((1 - w) * 1.5 + w * t * t * kl / 4, rel=1e-5)
    same = Teacher([fixed], [1.0], 1.0, t).blend(label_loss, teacher_logits.clone(), torch.zeros(4, 1, 2, 2))
    assert same.item() == pytest.approx(
        0.0, abs=1e-6
    )  # a student that answers as its teacher: nothing to learn


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_student_learns_from_the_teacher_alone_and_resumes_exactly(tmp_path, monkeypatch):
    """distill_weight=1: the labels are never used, so what the student learns came from its
    teacher; a run stopped mid-epoch and resumed ends with the same weights."""
    from conftest import cut_then_resume

    teacher = train(resolve_config([], [*TINY, "train.epochs=3", "name=teacher"]), quiet=True)
    overrides = [*TINY, "train.epochs=2", "train.teacher=run:teacher", "train.distill_weight=1.0", "seed=1"]
    cfg = resolve_config([], overrides)
    student = train(cfg.model_copy(update={"name": "student"}), quiet=True)
    assert student.read_json("summary.json")["test_acc"] > 0.5  # ten classes: chance is 0.1
    teacher_preds = np.load(teacher.path / "eval-last" / "predictions.npz")["preds"]
    student_preds = np.load(student.path / "eval-last" / "predictions.npz")["preds"]
    assert (teacher_preds == student_preds).mean() > 0.5
    # the control: the same student taught by a network that learned nothing learns nothing
    train(resolve_config([], [*TINY, "train.epochs=1", "optim.lr=1e-9", "name=blank"]), quiet=True)
    control = [o.replace("run:teacher", "run:blank") for o in overrides] + ["name=control"]
    assert train(resolve_config([], control), quiet=True).read_json("summary.json")["test_acc"] < 0.3

    resumed = cut_then_resume(monkeypatch, tmp_path, cfg, 11)  # 8 steps an epoch: mid-epoch 2
    a, b = student.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_of_other_data_or_kind_is_refused_before_any_folder():
    train(resolve_config([], [*TINY, "train.epochs=1", "name=t"]), quiet=True)
    with pytest.raises(VisionbenchError, match="names a run") as exc:
        train(resolve_config([], [*TINY, "train.teacher=ensemble:t", "name=s1"]), quiet=True)
    assert "train.teacher=run:t" in exc.value.fix
    with pytest.raises(VisionbenchError, match="other data"):
        train(resolve_config([], [*TINY, "data.per_class=40", "train.teacher=t", "name=s2"]), quiet=True)
    from visionbench.runs import runs_root

    assert not (runs_root() / "s1").exists() and not (runs_root() / "s2").exists()


def test_a_teacher_of_other_channels_is_refused_before_any_folder():
    """The same images in RGB have the same fingerprint but not the same inputs."""
    train(resolve_config([], [*TINY, "train.epochs=1", "name=rgb", "data.channels=3"]), quiet=True)
    with pytest.raises(VisionbenchError, match="3x8x8 inputs differ"):
        train(resolve_config([], [*TINY, "train.teacher=rgb", "name=grey"]), quiet=True)
