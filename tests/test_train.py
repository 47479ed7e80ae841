"""Training runs end to end: resume equals uninterrupted, records are never overwritten."""

from __future__ import annotations

import hashlib
import signal

import pytest
import torch
from conftest import interrupt_at

import visionbench.commands.train as train_module
import visionbench.engine.checkpoint as checkpoint_module
import visionbench.models.registry as registry
from visionbench.commands.train import Interrupted, diverging, train
from visionbench.config import resolve_config
from visionbench.engine.checkpoint import load_checkpoint
from visionbench.errors import VisionbenchError
from visionbench.runs import Run


def weights_of(run: Run) -> dict[str, torch.Tensor]:
    return run.load_weights("last")


# every per-sample augmentation, Mixup/CutMix soft targets, BCE, EMA and a plateau schedule
AUGMENTED = [
    "aug.resized_crop=0.5",
    "aug.rotate=10",
    "aug.policy=randaugment",
    "aug.jitter=0.2",
    "aug.erase=0.5",
    "aug.mixup=0.2",
    "aug.cutmix=1.0",
    "train.loss=bce",
    "train.ema=0.9",
    "sched.name=plateau",
]

# class-balanced draws (with replacement) and a weighted loss
BALANCED = ["data.sampler=balanced", "train.class_weights=balanced", "train.precise_bn=300"]
# progressive resizing: epoch 1 at 8 px, epoch 2 at the full 16
PROGRESSIVE = ["model.input_size=16", "train.progressive.scale=0.5", "train.progressive.finetune=0.5"]


@pytest.mark.parametrize(
    "stop_step, extra, bf16",
    [
        (20, [], "0"),
        (26, [], "0"),
        (26, AUGMENTED, "0"),
        (20, [], "1"),
        (26, BALANCED, "0"),
        (26, PROGRESSIVE, "0"),
    ],
    ids=[
        "end-of-epoch-1",
        "mid-epoch-2",
        "mid-epoch-2-augmented-ema",
        "end-of-epoch-1-bf16-autocast",
        "mid-epoch-2-balanced-precise-bn",
        "mid-epoch-2-progressive",
    ],
)
@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, tiny_overrides, stop_step, extra, bf16):
    # dropout: RNG state matters too; bf16: the CPU autocast path (native here, or emulated)
    monkeypatch.setenv("VISIONBENCH_CPU_BF16", bf16)
    cfg = resolve_config([], tiny_overrides + ["model.dropout=0.2"] + extra)
    full = train(cfg.model_copy(update={"name": "full"}), quiet=True)
    assert full.config().train.amp == ("bf16" if bf16 == "1" else False)  # the autocast it ran under
    prepared = train_module.prepare_data(cfg, torch.device("cpu"))
    steps_per_epoch = len(prepared.train)
    if "train.class_weights=balanced" in extra:  # the weights trained with, recorded with the run
        assert full.read_json("run.json")["class_weights"] == pytest.approx(prepared.class_weights.tolist())
    assert steps_per_epoch == 20  # 1,295 train images // 64: the step numbers above rely on it

    with pytest.MonkeyPatch.context() as mp:
        interrupt_at(mp, stop_step)
        with pytest.raises(Interrupted) as exc:
            train(cfg.model_copy(update={"name": "cut"}), quiet=True)
    assert exc.value.exit_code == 128 + signal.SIGTERM
    cut = Run.open("cut")
    assert not cut.finished and cut.checkpoint.exists()
    resumed = train(None, resume="cut", quiet=True)

    a, b = weights_of(full), weights_of(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2]
    for ra, rb in zip(full.metrics(), resumed.metrics()):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)
        assert ra["val_acc"] == rb["val_acc"]
    assert resumed.read_json("summary.json")["test_acc"] == full.read_json("summary.json")["test_acc"]
    # the temperature is fitted after the last epoch, from the same weights: the same T
    assert resumed.read_json("calibration.json") == full.read_json("calibration.json") != {}


def test_finished_run_is_never_overwritten(tiny_overrides):
    cfg = resolve_config([], tiny_overrides + ["name=keep", "train.epochs=1"])
    run = train(cfg, quiet=True)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.path.rglob("*") if p.is_file()}
    with pytest.raises(VisionbenchError, match="never overwritten"):
        train(cfg, quiet=True)
    with pytest.raises(VisionbenchError, match="never overwritten"):
        train(None, resume="keep", quiet=True)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.path.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_run_record_has_everything(tiny_overrides):
    run = train(resolve_config([], tiny_overrides), quiet=True)
    for f in (
        "config.yaml",
        "environment.json",
        "run.json",
        "metrics.jsonl",
        "summary.json",
        "eval-last/metrics.json",
        "eval-last/confusion.png",
        "eval-last/predictions.npz",
        "best.safetensors",
        "last.safetensors",
        "checkpoint.pt",
        "curves.png",
    ):
        assert (run.path / f).is_file(), f
    summary = run.read_json("summary.json")
    assert summary["epochs"] == 2 and 0.5 < summary["test_acc"] <= 1
    # one test evaluation: training's bundle has `visionbench eval`'s schema and figures
    metrics = run.read_json("eval-last/metrics.json")
    assert metrics["top1"] == summary["test_acc"] and metrics["n"] == summary["test_n"] == 359
    # the names scripts read: balanced accuracy and macro-F1 beside top-1
    assert (summary["balanced_acc"], summary["macro_f1"]) == (metrics["balanced_acc"], metrics["macro_f1"])
    assert {"per_class", "confusion", "ece", "mistakes"} <= set(metrics)
    report = run.read_json("run.json")["data_report"]
    assert report["splits"]["train"] + report["splits"]["val"] == 1438
    assert report["splits"]["test"] == 359
    # the saved config reproduces the run: fed back, it trains a new run to the same weights;
    # what was left unset is saved as chosen (small_cnn takes no stem option: off at 8 px? on: 8 <= 64;
    # train.amp=true: the autocast chosen for this device, fp32 in the suite)
    again = resolve_config([run.path / "config.yaml"])
    chosen = [*tiny_overrides, "model.small_stem=true", "train.amp=false"]
    assert again.model_dump() == resolve_config([], chosen).model_dump()
    rerun = train(again, quiet=True)
    assert rerun.id != run.id
    a, b = weights_of(run), weights_of(rerun)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(monkeypatch, tiny_overrides):
    real_build = train_module.build_model

    def build_poisoned(*args):  # a model whose outputs turn NaN in the second epoch
        model = real_build(*args)
        calls = {"n": 0}

        def poison(module, inputs, output):
            calls["n"] += module.training
            return output * float("nan") if calls["n"] > 25 else output

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(train_module, "build_model", build_poisoned)
    cfg = resolve_config([], tiny_overrides + ["name=nan"])
    with pytest.raises(VisionbenchError, match="loss became nan in epoch 2"):
        train(cfg, quiet=True)
    run = Run.open("nan")
    assert not run.finished and run.read_json("run.json")["status"] == "failed"
    assert [r["epoch"] for r in run.metrics()] == [1]
    assert load_checkpoint(run.checkpoint)["epoch"] == 1  # the last good one, intact
    best = run.load_weights("best")
    assert all(torch.isfinite(v.float()).all() for v in best.values())


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_a_finite_but_diverging_loss_is_warned_once_and_recorded(monkeypatch, tiny_overrides, capsys):
    real_build = train_module.build_model

    def build_loud(*args):  # logits x1000: the loss stays finite but far above an untrained network's
        model = real_build(*args)
        model.register_forward_hook(
            lambda module, inputs, output: output * 1000 if module.training else output
        )
        return model

    calm = train(resolve_config([], tiny_overrides + ["name=calm"]))
    assert "training is diverging" not in capsys.readouterr().out
    assert calm.read_json("summary.json")["warnings"] == []
    monkeypatch.setattr(train_module, "build_model", build_loud)
    run = train(resolve_config([], tiny_overrides + ["name=loud", "optim.lr=0.2"]))
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("training is diverging; try optim.lr=0.05 (now 0.2), or train.grad_clip=1.0") == 1
    assert "in epoch 1 is" in out and "an untrained network's (2.3)" in out  # ln 10: digits' ten classes
    assert run.finished
    assert run.read_json("summary.json")["warnings"] == [diverging(run.metrics(), run.config(), 10)]


def test_diverging_names_only_the_fixes_that_apply():
    rows = [
        {"train_loss": 2.2, "epoch": 1},
        {"train_loss": 17.2, "epoch": 2},
        {"train_loss": 20.0, "epoch": 3},
    ]
    cfg = lambda *keys: resolve_config([], ["optim.lr=0.05", *keys])
    message = diverging(rows, cfg("model.name=resnet50", "model.small_stem=true"), 10)
    assert message.startswith("training loss 17.2 in epoch 2 is 7x an untrained network's (2.3)")  # the first
    assert "'model.kwargs={zero_init_residual: true}'" in message  # quoted: one shell word
    assert "model.small_stem=false" in message and "optim.lr=0.0125 (now 0.05)" in message
    assert "train.grad_clip=1.0" in message
    for keys in (
        ["model.kwargs={zero_init_residual: true}"],
        ["model.pretrained=true"],
        ["model.name=resnet18"],
    ):
        message = diverging(rows, cfg("model.name=resnet50", "model.small_stem=false", *keys), 10)
        assert "zero_init" not in message and "small_stem" not in message, keys
    assert "train.grad_clip=0.25 (now 1)" in diverging(rows, cfg("train.grad_clip=1.0"), 10)
    assert diverging([{"train_loss": 4.33, "epoch": 1}], cfg(), 10) is None  # a spike a run recovers from
    bce = diverging(
        [{"train_loss": 2.5, "epoch": 1}], cfg("train.loss=bce"), 100
    )  # ln 2, whatever the classes
    assert "untrained network's (0.693)" in bce


def test_bad_model_for_data_leaves_no_run_folder(tmp_path, tiny_overrides):
    cfg = resolve_config([], tiny_overrides + ["model.name=simple_cnn", "model.kwargs={}", "name=bad"])
    with pytest.raises(VisionbenchError, match="at least 14 px"):
        train(cfg, quiet=True)
    assert not (tmp_path / "runs" / "bad").exists()


def test_disk_full_on_checkpoint_is_a_clear_error_and_keeps_the_last_one(monkeypatch, tiny_overrides):
    import errno

    real_save, calls = checkpoint_module.save_checkpoint, {"n": 0}

    def save(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, state)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save)
    with pytest.raises(VisionbenchError, match="cannot write the checkpoint: No space left on device"):
        train(resolve_config([], tiny_overrides + ["name=full-disk"]), quiet=True)
    run = Run.open("full-disk")
    assert load_checkpoint(run.checkpoint)["epoch"] == 1 and not run.finished


def test_resume_refuses_changed_data(tmp_path, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    def write(path, value):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, "PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())

    root = tmp_path / "tree"
    for cls in ("a", "b"):
        for i in range(40):
            write(root / "train" / cls / f"{i}.png", i * 3 + (100 if cls == "b" else 0))
            write(root / "test" / cls / f"{i}.png", i * 3 + (100 if cls == "b" else 0))
    cfg = resolve_config(
        [],
        [
            f"data.name=folder:{root}",
            "model.name=small_cnn",
            "train.epochs=2",
            "train.batch_size=16",
            "train.device=cpu",
            "name=changing",
        ],
    )
    interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train(cfg, quiet=True)
    write(root / "train" / "a" / "new.png", 7)  # the data changed under the run
    with pytest.raises(VisionbenchError, match="other data"):
        train(None, resume="changing", quiet=True)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_run_killed_before_its_first_checkpoint_can_be_resumed(tiny_overrides):
    first = train(resolve_config([], tiny_overrides + ["name=early", "train.epochs=1"]), quiet=True)
    for f in list(first.path.glob("checkpoint.pt*")) + [first.path / "summary.json"]:
        f.unlink()  # as if killed during epoch 1, before any checkpoint was written
    run = train(None, resume="early", quiet=True)
    assert run.finished and [r["epoch"] for r in run.metrics()] == [1]


def test_default_ids_in_the_same_second_never_collide(tmp_path):
    from visionbench.runs import Run

    first = Run.create(tmp_path, "20261123-120000-digits-small_cnn", unique=True)
    first.write_json("summary.json", {})  # finished within the same second
    second = Run.create(tmp_path, "20261123-120000-digits-small_cnn", unique=True)
    third = Run.create(tmp_path, "20261123-120000-digits-small_cnn", unique=True)
    assert [r.id[-2:] for r in (second, third)] == ["-2", "-3"]


@pytest.mark.slow  # Inductor's first compile: about a minute on 2 busy cores (seconds once cached)
def test_compiled_training_matches_eager_and_saves_clean_keys(tiny_overrides):
    from visionbench.engine.device import cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("train.compile on the CPU needs a C++ compiler (g++ or $CXX), and none is on the PATH")
    from torch._dynamo.utils import counters

    one_epoch = tiny_overrides + ["train.epochs=1", "train.threads=1"]
    eager = train(resolve_config([], one_epoch + ["name=eager"]), quiet=True)
    counters.clear()
    compiled = train(resolve_config([], one_epoch + ["name=compiled", "train.compile=true"]), quiet=True)
    assert compiled.finished and counters["stats"]["unique_graphs"] >= 1  # it did compile
    # the same steps from the same seed: only the kernels' rounding differs
    loss, loss_eager = compiled.metrics()[0]["train_loss"], eager.metrics()[0]["train_loss"]
    assert loss == pytest.approx(loss_eager, rel=0.02)
    # saved as the plain module: keys any model (and `visionbench eval`) loads, no "_orig_mod."
    keys = set(weights_of(eager))
    assert set(weights_of(compiled)) == keys
    assert set(load_checkpoint(compiled.checkpoint)["model"]) == keys
    assert compiled.read_json("summary.json")["test_acc"] > 0.5


def test_compile_without_a_compiler_is_a_clear_error_before_any_folder(tmp_path, monkeypatch, tiny_overrides):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    cfg = resolve_config([], tiny_overrides + ["name=nocc", "train.compile=true"])
    with pytest.raises(VisionbenchError, match="needs a C\\+\\+ compiler") as exc:
        train(cfg, quiet=True)
    assert "train.compile=false" in exc.value.fix
    assert not (tmp_path / "runs" / "nocc").exists()


def test_resume_refuses_an_empty_run_and_a_finished_one_before_reading_data(tiny_run, monkeypatch):
    from typer.testing import CliRunner

    from visionbench.cli import app

    res = CliRunner().invoke(app, ["train", "--resume", ""])  # an unset shell variable
    assert res.exit_code == 2 and "--resume needs a run id or folder" in res.output
    monkeypatch.setattr(train_module, "load_data", lambda *a: pytest.fail("the data was read"))
    res = CliRunner().invoke(app, ["train", "--resume", "tiny", "--runs-dir", str(tiny_run.parent)])
    assert res.exit_code == 2 and "run 'tiny' already finished: there is nothing to resume" in res.output


def test_a_resume_with_another_batch_size_names_both_and_the_fix_works(monkeypatch, tiny_overrides):
    with monkeypatch.context() as mp, pytest.raises(Interrupted):
        interrupt_at(mp, 3)
        train(resolve_config([], tiny_overrides + ["name=cut"]), quiet=True)
    config = Run.open("cut").path / "config.yaml"
    config.with_name("config.yaml.sha256").unlink()  # a run from before config digests, edited
    config.write_text(config.read_text().replace("batch_size: 64", "batch_size: 32"))
    with pytest.raises(VisionbenchError) as e:
        train(None, resume="cut", quiet=True)
    assert "made with train.batch_size=64; its config now gives 32" in str(e.value)
    assert e.value.fix.startswith(
        f"train a new run with these settings (visionbench train --config {config})"
    )
    fixed = resolve_config([config], ["name=cut2"])  # the fix: --config
    assert fixed.train.batch_size == 32 and train(fixed, quiet=True).finished


def test_a_resume_after_an_early_stop_trains_no_more_epochs(monkeypatch, tiny_overrides):
    """Stopped early at epoch k, then interrupted in the test pass: the resume goes straight to
    the test pass, as the uninterrupted run did, instead of training epoch k + 1."""
    overrides = tiny_overrides + ["name=early", "train.epochs=6", "train.early_stop=1", "optim.lr=1e-12"]
    with monkeypatch.context() as mp, pytest.raises(Interrupted):
        mp.setattr(train_module, "finish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        train(resolve_config([], overrides), quiet=True)
    stopped = len(Run.open("early").metrics())
    assert stopped < 6  # the val accuracy never improves at this lr
    run = train(None, resume="early", quiet=True)
    assert run.finished and len(run.metrics()) == stopped


def test_a_signal_after_the_summary_is_written_leaves_the_run_finished(monkeypatch, tiny_overrides):
    """Ctrl-C (or a closed pipe) between summary.json and the last printed line: the run is
    finished, not 'interrupted' with a --resume line that would be refused."""
    finish = train_module.finish

    def finish_then_signal(*a):
        finish(*a)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "finish", finish_then_signal)
    run = train(resolve_config([], tiny_overrides + ["name=done"]), quiet=True)
    assert run.finished and run.read_json("run.json")["status"] == "finished"


def test_progressive_resizing_trains_early_epochs_smaller_and_scores_at_full_size(
    monkeypatch, tiny_overrides
):
    seen, real = [[]], registry.resized
    monkeypatch.setattr(
        registry, "resized", lambda x, size: seen[-1].append((torch.is_grad_enabled(), size)) or real(x, size)
    )
    extra = [
        "train.epochs=4",
        "model.input_size=16",
        "train.progressive.scale=0.5",
        "train.progressive.finetune=0.25",
    ]
    cfg = resolve_config([], tiny_overrides + extra)
    run = train(cfg, quiet=True, on_epoch=lambda row: seen.append([]))
    trained = [min(side for grad, side in epoch if grad) for epoch in seen[:4]]
    assert trained == [8, 8, 8, 16]  # held at half the side, then the full side for the last quarter
    first_step = seen[0].index((True, 8))  # before it: the checks of the sides and the memory
    scored = {side for grad, side in seen[0][first_step:] + sum(seen[1:], []) if not grad}
    assert scored == {16}  # validation, calibration and the test at the full side
    assert run.read_json("summary.json")["test_acc"] > 0.5


def test_a_progressive_side_the_model_cannot_take_is_said_before_any_folder_with_a_scale_that_runs(
    tmp_path, tiny_overrides
):
    fastnet = ["model.name=fastnet", "model.kwargs={widths: [8, 16, 16]}", "model.input_size=16", "name=p"]
    cfg = resolve_config([], tiny_overrides + fastnet + ["train.progressive.scale=0.5"])
    with pytest.raises(VisionbenchError, match="first epochs at 8 px, and fastnet needs at least 9 px") as e:
        train(cfg, quiet=True)
    assert not (tmp_path / "runs" / "p").exists()
    fix = e.value.fix.split()[1]  # "set train.progressive.scale=0.75 or more (12 of 16 px)"
    assert fix == "train.progressive.scale=0.75"
    assert train(resolve_config([], tiny_overrides + fastnet + [fix]), quiet=True).finished  # the fix works
