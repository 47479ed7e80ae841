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


# 162 training images in batches of 32: 5 steps an epoch, no train-time augmentation
FIXED = [*TINY, "data.per_class=20", "train.epochs=2", "train.batch_size=32", "optim.lr=0.05"]
FIXED += ["train.threads=1"]


@pytest.fixture
def teacher_images(monkeypatch) -> list[int]:
    """The batch sizes the teacher's networks are run on, in order (Teacher.probs counted)."""
    seen, real = [], Teacher.probs
    monkeypatch.setattr(Teacher, "probs", lambda self, x: (seen.append(len(x)), real(self, x))[1])
    return seen


def trained_images(run) -> int:
    return run.read_json("run.json")["data_report"]["splits"]["train"]


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_cached_teacher_runs_once_an_image_and_teaches_the_same_weights(
    monkeypatch, capsys, teacher_images
):
    """Unaugmented, every training image's target is computed once; the student ends as the
    one whose teacher ran every step."""
    train(resolve_config([], [*FIXED, "train.epochs=1", "name=t"]), quiet=True)
    cfg = resolve_config([], [*FIXED, "train.teacher=run:t", "seed=1"])
    capsys.readouterr()
    cached = train(cfg.model_copy(update={"name": "cached"}))
    n = trained_images(cached)
    assert sum(teacher_images) == n  # once an image, over both epochs
    assert f"computed once for the {n:,} training images" in capsys.readouterr().out
    teacher_images.clear()
    monkeypatch.setattr(Teacher, "cache_targets", lambda *a, **k: None)  # the teacher runs every step
    stepped = train(cfg.model_copy(update={"name": "stepped"}), quiet=True)
    assert sum(teacher_images) == 2 * (n // 32) * 32
    a, b = cached.load_weights("last"), stepped.load_weights("last")
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-5) for k in a)


def test_an_augmented_student_runs_its_teacher_every_step_and_says_so(capsys, teacher_images):
    train(resolve_config([], [*FIXED, "train.epochs=1", "name=t"]), quiet=True)
    overrides = [*FIXED, "train.epochs=1", "train.teacher=run:t", "aug.crop_padding=1", "name=s"]
    capsys.readouterr()
    run = train(resolve_config([], overrides))
    assert "teacher: runs every step: train-time augmentation (aug.crop_padding)" in capsys.readouterr().out
    assert teacher_images == [32] * (trained_images(run) // 32)


@pytest.mark.slow  # three trainings: over 2 s on 2 cores
def test_a_cached_teacher_resumes_exactly(monkeypatch, tmp_path):
    from conftest import cut_then_resume

    train(resolve_config([], [*FIXED, "train.epochs=1", "name=t"]), quiet=True)
    cfg = resolve_config([], [*FIXED, "train.teacher=run:t", "seed=1"])
    whole = train(cfg.model_copy(update={"name": "whole"}), quiet=True)
    resumed = cut_then_resume(monkeypatch, tmp_path, cfg, 7)  # mid-epoch 2
    a, b = whole.load_weights("last"), resumed.load_weights("last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_whose_teacher_changed_is_refused_and_the_fix_works(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from conftest import cut_then_resume

    from visionbench.runs import Run

    train(resolve_config([], [*FIXED, "train.epochs=1", "name=t"]), quiet=True)
    cfg = resolve_config([], [*FIXED, "train.epochs=1", "train.teacher=run:t"])

    def retrain_teacher(run):  # the teacher's weights replaced while the student was stopped
        teacher = Run.open("t")
        state = {k: v + 0.01 if v.is_floating_point() else v for k, v in teacher.load_weights().items()}
        teacher.save_weights("last.safetensors", SimpleNamespace(state_dict=lambda: state))

    with pytest.raises(VisionbenchError, match="not the one run 'cut' started distilling from") as exc:
        cut_then_resume(monkeypatch, tmp_path, cfg, 3, on_cut=retrain_teacher)
    assert exc.value.where.endswith("teacher.json")
    config = exc.value.fix.split("--config ")[1].split(")")[0]  # the fix: train it again from the start
    again = train(resolve_config([config], []), quiet=True)
    assert again.read_json("summary.json")["epochs"] == 1


def test_an_ensemble_teacher_gives_the_calibrated_soft_vote_of_predict(monkeypatch):
    """At distill_temperature=1 the targets are the probabilities `predict` reports for the
    saved soft vote: each member's calibrated by its fitted temperature."""
    from visionbench.commands.ensemble import build_ensemble, save_ensemble
    from visionbench.commands.teacher import load_teacher
    from visionbench.console import make_console
    from visionbench.runs import runs_root
    from visionbench.runs.reopen import verified_data

    for seed, name in enumerate("ab"):
        train(resolve_config([], [*FIXED, "train.epochs=1", f"seed={seed}", f"name={name}"]), quiet=True)
    pair = build_ensemble(["a", "b"], vote="soft", device="cpu")
    save_ensemble(pair, None, "pair")
    assert all(t is not None and abs(t - 1) > 0.05 for t in pair.temperatures(False))
    cfg = resolve_config([], [*FIXED, "train.teacher=ensemble:pair", "train.distill_temperature=1"])
    data = verified_data(pair.members[0].run, cfg, torch.device("cpu"))
    teacher = load_teacher(cfg, data, runs_root(), torch.device("cpu"), make_console(quiet=True))
    x, _ = next(data.loader("test", np.arange(16)).epoch(0))
    voted = pair.outputs(data.dataset.splits["test"].images[:16], tta=False).probs
    assert np.allclose(teacher.probs(x).numpy(), voted, atol=1e-5)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_cached_teacher_teaches_a_head_trained_on_cached_frozen_features(capsys):
    """Unaugmented, neither the teacher nor the frozen layers need the images each step: the
    head trains on the frozen layers' cached output and the teacher's cached targets, and ends
    with the weights of running both every step."""
    train(resolve_config([], [*FIXED, "train.epochs=1", "name=t"]), quiet=True)
    head = [*FIXED, "train.epochs=1", "finetune.freeze=head-only", "train.teacher=run:t"]
    capsys.readouterr()
    cached = train(resolve_config([], [*head, "name=cached", "finetune.cache_features=on"]))
    assert "the rest (head) trains on it" in capsys.readouterr().out
    through = train(resolve_config([], [*head, "name=through", "finetune.cache_features=off"]), quiet=True)
    a, b = cached.load_weights("last"), through.load_weights("last")
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-5) for k in a)
