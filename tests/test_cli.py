"""The CLI as users drive it: what it prints, what it refuses, and its exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from visionbench.cli import app

runner = CliRunner()
TINY = [
    "--data",
    "digits",
    "--model",
    "small_cnn",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "model.kwargs={width: 8}",
]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_demo_reaches_95_percent_on_digits(tmp_path):
    res = invoke("demo", "--runs-dir", str(tmp_path / "runs"))
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] >= 0.95
    assert f"{summary['test_acc']:.2%}" in res.output


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_train_then_runs_then_eval_agree(tmp_path):
    res = invoke("train", *TINY, "--name", "one", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [r["id"] for r in listed] == ["one"]
    assert listed[0]["status"] == "finished" and listed[0]["test_acc"] == summary["test_acc"]
    assert "one" in invoke("runs").output
    ev = invoke("eval", "one")
    assert ev.exit_code == 0, ev.output
    assert f"top-1 {summary['test_acc']:.2%}" in ev.output
    rep = json.loads(invoke("eval", "one", "--json").stdout)
    assert rep["top1"] == pytest.approx(summary["test_acc"])
    assert rep["top5"] >= rep["top1"] and len(rep["confusion"]) == 10
    assert sum(map(sum, rep["confusion"])) == rep["n"] == 359


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epoch", "3"], "unknown option '--epoch'. Did you mean '--epochs'?"),
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'. Did you mean 'optim.lr'?"),
        (["train.epochs=many"], "bad value for 'train.epochs'"),
        (["--model", "resnet19"], "unknown model 'resnet19'. Did you mean 'resnet18'?"),
        (["--data", "mnst"], "unknown dataset 'mnst'. Did you mean 'mnist'?"),
        (["optim.lr"], "expected key=value"),
        (["optim.name=adamx"], "unknown optimizer 'adamx'. Did you mean 'adam'?"),
        (["sched.name=cosin"], "unknown schedule 'cosin'. Did you mean 'cosine'?"),
        (["train.loss=bc"], "unknown loss 'bc'. Did you mean 'bce'?"),
    ],
)
def test_bad_arguments_name_the_nearest_valid_one(args, message):
    res = runner.invoke(app, ["train", *TINY, *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_unknown_key_in_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: 0.1\n  momentun: 0.9\n")
    res = runner.invoke(app, ["train", *TINY, "--config", str(cfg)])
    assert res.exit_code == 2
    assert "'optim.momentun'. Did you mean 'optim.momentum'?" in res.output
    assert str(cfg) in res.output


def test_unknown_optimizer_in_config_file_names_the_nearest_and_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  name: lamd\n")
    res = runner.invoke(app, ["train", *TINY, "--config", str(cfg)])
    assert res.exit_code == 2
    out = " ".join(res.output.split())  # rich may wrap long lines
    assert "unknown optimizer 'lamd'. Did you mean 'lamb'?" in out and str(cfg) in out
    assert "choose one of: adam, adamw, lamb, lars, lion, rmsprop, sgd, yogi" in out


def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    res = runner.invoke(
        app, ["train", "--data", "mnist", "--data-dir", str(tmp_path / "nothing"), "--epochs", "1"]
    )
    assert res.exit_code == 2
    out = " ".join(res.output.split())  # rich may wrap long lines
    assert "dataset 'mnist' not found" in out
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in out
    assert "--data-dir" in out and "visionbench data download mnist" in out
    assert not (tmp_path / "runs").exists()


def test_finished_run_name_is_refused(tmp_path):
    assert invoke("train", *TINY, "--name", "same").exit_code == 0
    res = runner.invoke(app, ["train", *TINY, "--name", "same"])
    assert res.exit_code == 2 and "never overwritten" in res.output


def test_help_config_lists_every_key():
    """Every setting of a default RunConfig, found by walking the config object itself (not the
    key list the command prints from), is listed with its default."""
    from pydantic import BaseModel

    from visionbench.config import RunConfig

    def settings(section: BaseModel, prefix: str = ""):
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, BaseModel):
                yield from settings(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", value

    listed = invoke("train", "--help-config").output.splitlines()
    expected = [f"{key} = {value!r}" for key, value in settings(RunConfig())]
    assert len(expected) > 80 and sorted(listed) == sorted(expected)
    assert "optim.name = 'sgd'" in listed and "sched.name = 'onecycle'" in listed


def test_data_info_digits():
    res = invoke("data", "info", "digits", "--json")
    info = json.loads(res.stdout)
    assert info["shape"] == [1, 8, 8] and len(info["classes"]) == 10
    assert info["splits"]["train"]["n"] + info["splits"]["test"]["n"] == 1797


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_models_lists_registry():
    rows = json.loads(invoke("models", "--json").stdout)
    assert {"simple_cnn", "small_cnn", "scratch_cnn", "vit_small", "vgg16", "resnet152"} <= {
        r["name"] for r in rows
    }
    counted = {r["name"]: r for r in json.loads(invoke("models", "simple_cnn", "--json").stdout)}
    assert counted["simple_cnn"] == {
        "name": "simple_cnn",
        "source": "visionbench",
        "input": "3x32x32",
        "params": 62_006,
        "flops": 1_303_440,  # forward, one image: 651,720 multiply-adds (tests/test_models.py)
        "weights_offline": None,
    }
    table = invoke("models", "simple_cnn").stdout
    assert "GFLOPs/image" in table and "0.0013" in table
    assert "timm:resnet18" in invoke("models", "timm:resnet1*").stdout


def test_sigterm_saves_and_exits_143_then_resume_finishes(monkeypatch):
    import signal

    import visionbench.engine.loop as loop_module

    real = loop_module.train_one_epoch

    def interrupted(*args, on_step, **kwargs):
        def step(batch, loss):
            on_step(batch, loss)
            if batch == 3:
                signal.raise_signal(signal.SIGTERM)

        return real(*args, **kwargs, on_step=step)

    monkeypatch.setattr(loop_module, "train_one_epoch", interrupted)
    res = runner.invoke(app, ["train", *TINY, "--name", "cut"])
    assert res.exit_code == 143
    assert "checkpoint saved" in res.output and "visionbench train --resume cut" in " ".join(
        res.output.split()
    )
    assert json.loads(invoke("runs", "--json").stdout)[0]["status"] == "interrupted"
    monkeypatch.setattr(loop_module, "train_one_epoch", real)
    assert (
        runner.invoke(app, ["train", "--resume", "cut", "--epochs", "3"]).exit_code == 2
    )  # settings conflict
    res = invoke("train", "--resume", "cut")
    assert res.exit_code == 0, res.output
    assert "resuming cut at epoch 1, batch 4" in res.output
    assert json.loads(invoke("runs", "--json").stdout)[0]["status"] == "finished"


def test_bare_train_works_with_the_defaults():
    """`visionbench train --epochs 1` with nothing else: the default data and model fit together."""
    res = invoke("train", "--epochs", "1", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["test_acc"] > 0.3  # chance is 10%


def test_too_small_input_error_gives_a_fix_that_works():
    """digits (8 px) with simple_cnn: the error's suggested fix, followed, trains."""
    res = invoke("train", "--data", "digits", "--model", "simple_cnn", "--epochs", "1", "train.device=cpu")
    assert res.exit_code == 2 and "model.input_size=32" in res.output
    res = invoke(
        "train", "--data", "digits", "--model", "simple_cnn", "--epochs", "3", "train.device=cpu",
        "model.input_size=32", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["test_acc"] > 0.25  # it learns: chance is 10%


@pytest.mark.parametrize(
    "args, option",
    [
        (["sweep", "--grid", "optim.lr=0.1,0.2", "--jobs", "0"], "--jobs"),
        (["sweep", "--search", "optuna", "--grid", "optim.lr=0.1..0.2", "--trials", "0"], "--trials"),
        (["predict", "r", "--images", ".", "--top-k", "0"], "--top-k"),
        (["explain", "r", "--count", "0"], "--count"),
        (["models", "--num-classes", "0"], "--num-classes"),
    ],
)
def test_command_options_out_of_range_are_refused_before_any_work(args, option):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output


def test_runs_lists_saved_ensembles_beside_runs(tiny_run, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    res = invoke("ensemble", "tiny", "tiny", "--vote", "soft", "--save", "pair", "--runs-dir", str(runs))
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(invoke("runs", "--runs-dir", str(runs), "--json").stdout)}
    assert rows["tiny"]["kind"] == "run" and rows["pair"]["kind"] == "ensemble"
    top1 = json.loads((runs / "pair" / "summary.json").read_text())["top1"]
    assert rows["pair"]["test_acc"] == top1 and rows["pair"]["model"] == "soft vote: tiny, tiny"
    table = invoke("runs", "--runs-dir", str(runs)).output
    assert "pair" in table and "ensemble" in table and f"{top1:.2%}" in table
