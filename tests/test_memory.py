"""The activation-memory guard: a batch that cannot fit is brought down when it was chosen, run
as accumulated micro-batches when it was set, and refused with the batch that fits on a resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import visionbench.commands.train as train_module
import visionbench.engine.memory as memory
from visionbench.commands.train import train
from visionbench.config import resolve_config
from visionbench.engine.distributed import Ranks
from visionbench.errors import VisionbenchError
from visionbench.runs import runs_root

MiB = 2**20
QUICK = ["data.per_class=40", "train.epochs=1", "train.threads=1"]  # 360 train images, one epoch


def test_saved_bytes_count_each_activation_once_and_leave_the_model_as_it_was(one_thread):
    # conv saves its 1x8x8 input (256 B an image), ReLU its 4x8x8 output (1,024 B), which the
    # linear layer saves again as a view: counted once; the weights are not activations
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    assert memory.saved_bytes(model, (1, 8, 8), torch.device("cpu")) == (256 + 1024, 0)

    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    bn[1].eval()  # a frozen BatchNorm in a training model
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    rng = torch.get_rng_state()
    assert memory.saved_bytes(bn, (1, 8, 8), torch.device("cpu"))[0] > 0
    assert bn.training and not bn[1].training  # each module's mode is restored ...
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())  # ... and its running stats
    assert torch.equal(rng, torch.get_rng_state())  # the run's random stream is not consumed


def test_weight_copies_autocast_keeps_count_once_a_step_not_once_an_image(one_thread):
    """Under bf16 autocast each weight is cast once a forward and the copy saved for backward:
    2 MB for this layer, whatever the batch. Counted per image (as it was) it made ResNet-50 at
    28 px need 23.3 MiB an image, where a step's peak RSS showed under 4."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    per_image, per_step = memory.saved_bytes(model, (1, 8, 8), torch.device("cpu"), torch.bfloat16)
    # an image: its input as cast for the first layer (64 bf16 values) and the first layer's
    # bf16 output after ReLU (1,024 values, kept by ReLU and by the second layer: counted once)
    assert per_image == 64 * 2 + 1024 * 2
    assert per_step >= 1024 * 1024 * 2  # the second layer's bf16 weight, once


@pytest.fixture
def small_machine(monkeypatch):
    """1 MiB of activations an image and 40 MiB free: batches of up to 25 fit."""
    monkeypatch.setattr(memory, "saved_bytes", lambda *a, **k: (MiB, 0))
    monkeypatch.setattr(memory, "device_free", lambda device: 40 * MiB)


def test_a_chosen_batch_too_large_is_brought_down_and_said(tiny_overrides, small_machine, capsys):
    settings = [o for o in tiny_overrides if not o.startswith(("train.batch_size", "optim.lr"))]
    run = train(resolve_config([], settings + QUICK + ["name=auto"]))
    cfg = run.config()
    assert cfg.train.batch_size == 16  # 32 (for 360 images) halved until it fits
    assert cfg.optim.lr == pytest.approx(0.1 * 16 / 128)  # the lr chosen with it
    said = capsys.readouterr().out
    assert "train.batch_size=16: a batch of 32 needs about" in said and "set train.batch_size=N" in said
    choices = json.loads((run.path / "run.json").read_text())["choices"]
    assert choices[0].startswith("train.batch_size=16")


def test_a_set_batch_too_large_runs_as_micro_batches_and_is_said(tiny_overrides, small_machine, capsys):
    """At most 25 images fit: the set batch of 64 stays (and the lr with it) as 3 micro-batches
    of at most 22, their gradients accumulated into one step - instead of a refusal."""
    run = train(resolve_config([], tiny_overrides + QUICK + ["name=explicit"]))  # batch 64, lr 0.1
    cfg = run.config()
    assert (cfg.train.batch_size, cfg.train.accumulate, cfg.optim.lr) == (64, 3, 0.1)
    said = capsys.readouterr().out
    assert "train.accumulate=3: a batch of 64 needs about" in said and "set train.accumulate=N" in said
    assert "3 micro-batches of at most 22" in said
    assert any(
        c.startswith("train.accumulate=3") for c in json.loads((run.path / "run.json").read_text())["choices"]
    )


def test_a_resumed_batch_too_large_is_an_error_naming_the_batch_that_fits(tiny_overrides, monkeypatch):
    from visionbench.engine.memory import fit_train_batch

    cfg = resolve_config([], tiny_overrides)
    data = train_module.prepare_data(cfg, torch.device("cpu"))
    mem = memory.BatchMemory(per_image=MiB, fixed=0, free=40 * MiB)
    with pytest.raises(VisionbenchError) as exc:
        fit_train_batch(cfg, cfg, data, mem, Ranks(torch.device("cpu")), print, resumed=True)
    assert "a batch of 64 needs about" in str(exc.value)
    assert "train.batch_size=16 and optim.lr=0.025" in exc.value.fix  # at most 25 fit


def test_a_batch_that_fits_is_left_alone(tiny_overrides, monkeypatch):
    monkeypatch.setattr(memory, "device_free", lambda device: 64 * 2**30)
    run = train(resolve_config([], tiny_overrides + QUICK + ["name=fits"]), quiet=True)
    assert run.config().train.batch_size == 64


def test_inference_bytes_are_the_largest_input_and_output_held_at_once(one_thread):
    # ReLU's 4x8x8 input and output (1,024 B each) are the largest pair held; nothing is saved
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    model.train()
    rng = torch.get_rng_state()
    assert memory.inference_bytes_per_image(model, (1, 8, 8), torch.device("cpu")) == 2048
    assert all(m.training for m in model.modules())  # the mode is restored
    assert torch.equal(rng, torch.get_rng_state())  # the run's random stream is not consumed


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_an_eval_batch_too_large_is_brought_down_chosen_or_set_and_a_rerun_still_skips(
    tiny_overrides, monkeypatch, capsys
):
    """1 MiB an image in evaluation (x1.5 margin) and 100 MiB free beside a tiny training state:
    1,024 cannot be evaluated at once, 32 can - the run says so and records it; a sweep or study
    asking again for the default 1,024 finds the same run (the batch changes no result)."""
    monkeypatch.setattr(memory, "saved_bytes", lambda *a, **k: (1024, 0))
    monkeypatch.setattr(memory, "inference_bytes_per_image", lambda *a, **k: MiB)
    monkeypatch.setattr(memory, "device_free", lambda device: 100 * MiB)
    run = train(resolve_config([], tiny_overrides + QUICK + ["name=evalfit"]))
    assert run.config().train.eval_batch_size == 32  # 1,024 halved to 32 (about 50 fit)
    assert "train.eval_batch_size=32: an evaluation batch of 1,024 holds about" in capsys.readouterr().out
    assert (run.path / "summary.json").is_file()  # evaluated in batches of 32: the run finished

    run = train(resolve_config([], tiny_overrides + QUICK + ["name=evalset", "train.eval_batch_size=512"]))
    assert run.config().train.eval_batch_size == 32  # a set one too: it changes no result
    assert "train.eval_batch_size=32: an evaluation batch of 512" in capsys.readouterr().out
    from visionbench.commands.sweep import same_settings

    assert same_settings(run.config(), resolve_config([], tiny_overrides + QUICK + ["name=evalset"]))


def test_inputs_too_small_for_the_network_are_an_error_naming_the_size_and_the_fix_works(tiny_overrides):
    """small_cnn at model.input_size=2 ended in a RuntimeError traceback from the memory
    measurement: now the smallest size that runs, and the key; followed, it trains."""
    with pytest.raises(VisionbenchError) as exc:
        train(resolve_config([], tiny_overrides + QUICK + ["model.input_size=2", "name=tiny"]), quiet=True)
    assert "small_cnn needs at least 4 px, got 2x2" in exc.value.what
    assert exc.value.fix.startswith("set model.input_size=4 or more")
    assert not (runs_root() / "tiny").exists()
    assert train(resolve_config([], tiny_overrides + QUICK + ["model.input_size=4"]), quiet=True)


def test_other_forward_errors_are_not_taken_for_small_inputs(tiny_overrides):
    from visionbench.models.build import input_size_errors

    cfg = resolve_config([], tiny_overrides)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        with input_size_errors(cfg, type("Data", (), {"shape": (1, 8, 8), "classes": list("ab")})):
            nn.Linear(3, 2)(torch.rand(2, 4))


def test_the_memory_check_counts_a_teachers_parameters_activations_and_targets(tiny_overrides, one_thread):
    """A teacher's inference activations an image (its largest module's input + output, here
    the ReLU's 4x8x8 in and out) beside the student's, and its weights and cached targets."""
    from visionbench.data.prepare import prepare_data
    from visionbench.engine.distill import Teacher
    from visionbench.models.build import build_model

    cfg = resolve_config([], tiny_overrides + QUICK + ["aug.crop_padding=0"])  # unaugmented: cached
    data = prepare_data(cfg, torch.device("cpu"))
    model, ranks = build_model(cfg, data.dataset, torch.device("cpu")), Ranks(torch.device("cpu"))
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    alone = memory.batch_memory(model, data, ranks)
    taught = memory.batch_memory(model, data, ranks, teacher=Teacher([net, net], [1, 1], 0.5, 4.0))
    assert taught.per_image - alone.per_image == 2 * 1024  # both networks run, one after the other
    params = 4 * (4 * 9 + 4 + 256 * 10 + 10)
    assert taught.fixed - alone.fixed == 2 * params + 4 * len(data.keep) * 10
    data.cfg = resolve_config([], tiny_overrides + QUICK)  # aug.crop_padding=1: the teacher runs each step
    taught = memory.batch_memory(model, data, ranks, teacher=Teacher([net, net], [1, 1], 0.5, 4.0))
    assert taught.fixed - alone.fixed == 2 * params
