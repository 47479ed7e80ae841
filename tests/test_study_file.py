"""Study files: the whole file is checked before any run trains (keys, shapes, names, every
run's config at every scale), the plan is shown without training, and a step never removes a
folder the study did not make. Nothing here trains but the one tiny run of the overrides test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.commands.study import load_study, plan
from visionbench.commands.study_steps import run_step
from visionbench.errors import VisionbenchError

WRITEUPS = Path(__file__).resolve().parents[1] / "examples" / "writeups"
runner = CliRunner()
TWO = "name: t\nruns:\n  a: {set: {model.name: small_cnn}}\n  b: {set: {model.name: small_cnn, seed: 1}}\n"

# (file, what the error must say): each was accepted silently, crashed, or lost data before
BAD = {
    "top key": (TWO + "stepz: []\n", ["unknown study key 'stepz'", "'steps'"]),
    "scale name": (TWO + "scales: {SMOKE: {note: x}}\n", ["'SMOKE'", "'smoke'", "at scales"]),
    "scale key": (TWO + "scales: {smoke: {sett: {train.epochs: 1}}}\n", ["'sett'", "'set'", "scales.smoke"]),
    "run name in a scale": (TWO + "scales: {cpu: {runs: {bb: skip}}}\n", ["unknown run 'bb'", "'b'"]),
    "step kind": (TWO + "steps:\n  - lr-find: {run: a}\n", ["'lr-find'", "'lr_find'", "steps[0]"]),
    "step option": (TWO + "steps:\n  - lr_find: {run: a, repeat: 2}\n", ["'repeat'", "'repeats'"]),
    "scale step kind": (TWO + "scales: {smoke: {steps: {lr-find: {iters: 5}}}}\n", ["'lr-find'", "'lr_find'"]),
    "scale step option": (TWO + "scales: {full: {steps: {lr_find: {iter: 5}}}}\n", ["'iter'", "'iters'"]),
    "writeup key": ("name: t\nruns: {a: {writeup: {top_1: 50}}}\n", ["'top_1'", "'top1'", "runs.a.writeup"]),
    "writeup figure as text": ("name: t\nruns: {a: {writeup: {top1: '86.4%'}}}\n", ["number", "86.4%"]),
    "runs as a list": ("name: t\nruns: [a, b]\n", ["expected a mapping", "at runs"]),
    "runs as a number": ("name: t\nruns: 3\n", ["expected a mapping", "at runs"]),
    "set as a list": ("name: t\nset: [a]\nruns: {a: }\n", ["expected a mapping", "at set"]),
    "a scale skipped whole": ("name: t\nruns: {a: }\nscales: {smoke: skip}\n", ["expected a mapping", "scales.smoke"]),
    "an empty step": ("name: t\nruns: {a: }\nsteps:\n  -\n", ["a step is one mapping", "steps[0]"]),
    "a bare step": ("name: t\nruns: {a: }\nsteps:\n  - lr_find\n", ["a step is one mapping", '"lr_find"']),
    "a step without its run": ("name: t\nruns: {a: }\nsteps:\n  - lr_find: {repeats: 2}\n", ["'run' is missing"]),
    "an ensemble named like a run": (TWO + "steps:\n  - ensemble: {name: a, runs: [a, b]}\n", ["named like a run"]),
    "an ensemble name leaving the folder": (
        TWO + "steps:\n  - ensemble: {name: a/../../victim, runs: [a, b]}\n", ["bad name 'a/../../victim'"]
    ),
    "two ensembles of one name": (
        TWO + "steps:\n  - ensemble: {name: v, runs: [a, b]}\n  - ensemble: {name: v, runs: [b, a]}\n",
        ["named like a run or another ensemble"],
    ),
    "two lr-finds of one run": (
        TWO + "steps:\n  - lr_find: {run: a}\n  - lr_find: {run: a, repeats: 1}\n", ["two lr_find steps of 'a'"]
    ),
    "two predicts of one model": (
        TWO + "steps:\n  - predict: {model: a}\n  - predict: {model: a, count: 3}\n", ["two predict steps of 'a'"]
    ),
    "a grid without values": ("name: t\nruns: {a: {grid: {seed: []}}}\n", ["grid 'seed' has no values"]),
    "a run written twice": ("name: t\nruns:\n  a: {}\n  a: {set: {seed: 1}}\n", ["key 'a' twice"]),
    "a grid value twice": ("name: t\nruns: {a: {grid: {seed: [0, 0, 1]}}}\n", ["lists 0 twice"]),
    "a grid of one text": ("name: t\nruns: {a: {grid: {model.name: small_cnn}}}\n", ["needs a list", "[\"small_cnn\"]"]),
    "a grid key": ("name: t\nruns: {a: {grid: {optim.lrr: [0.1]}}}\n", ["'optim.lrr'", "'optim.lr'"]),
    "a config key in a scale's run": (TWO + "scales: {cpu: {runs: {a: {optim.lrr: 1}}}}\n", ["'optim.lr'"]),
    "a value at another scale": (TWO + "scales: {full: {set: {train.epochs: 0}}}\n", ["train.epochs", "scale full"]),
    "a step on a skipped run": (
        TWO + "scales: {smoke: {runs: {a: skip}}}\nsteps:\n  - explain: {run: a}\n", ["skipped at this scale"]
    ),
    "a step on a grid of runs": (
        "name: t\nruns: {a: {grid: {seed: [0, 1]}}}\nsteps:\n  - explain: {run: a}\n", ["a grid of 2 runs"]
    ),
    "a tie-break outside the vote": (
        TWO + "steps:\n  - ensemble: {name: v, runs: [a, b], tie_break: c}\n", ["unknown run 'c'"]
    ),
    "predict before its ensemble": (
        TWO + "steps:\n  - predict: {model: v}\n  - ensemble: {name: v, runs: [a, b]}\n", ["unknown run 'v'"]
    ),
    "findings not a list": (TWO + "findings: {a: 1}\n", ["expected a list", "at findings"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_study_file_is_an_error_naming_the_nearest_and_where(case, tmp_path):
    file = tmp_path / "study.yaml"
    text, said = BAD[case]
    file.write_text(text)
    with pytest.raises(VisionbenchError) as e:
        load_study(file, "smoke")
    for words in said:
        assert words in str(e.value), (words, str(e.value))
    assert str(file) in str(e.value)


def test_a_bad_study_file_is_refused_before_anything_is_made(tmp_path):
    file = tmp_path / "study.yaml"
    file.write_text(TWO + "steps:\n  - lr_find: {run: a}\n  - lr_find: {run: a}\n")
    res = runner.invoke(app, ["study", str(file), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "two lr_find steps" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()
    file.write_text(TWO)
    (tmp_path / "afile").write_text("")
    res = runner.invoke(app, ["study", str(file), "--runs-dir", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "pass a folder" in res.output and "Traceback" not in res.output
    file.write_bytes(b"name: caf\xe9\nruns: {a: }\n")  # latin-1, not UTF-8
    res = runner.invoke(app, ["study", str(file), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "UTF-8" in res.output and "Traceback" not in res.output


def test_the_keys_others_add_are_accepted(tmp_path):
    """findings (a list of claims), a scale's note, a run's note, a write-up's stated settings."""
    file = tmp_path / "study.yaml"
    file.write_text(
        "name: t\nfindings: [{claim: a reaches 10%, check: {at_least: {run: a, top1: 10}}}]\n"
        "scales: {cpu: {note: smaller}}\n"
        "runs: {a: {note: why, writeup: [{top1: 50, for: {seed: 0}, states: {optim.lr: 0.1}}]}}\n"
    )
    assert [r.key for r in plan(load_study(file, "cpu"))] == ["a"]


def test_the_writeups_load_at_every_scale():
    for file in sorted(WRITEUPS.glob("*.yaml")):
        for scale in ("smoke", "cpu", "full"):
            assert plan(load_study(file, scale)), (file, scale)


def test_plan_json_is_one_object_per_run_with_its_config_and_parameters(tmp_path):
    file = WRITEUPS / "002-cifar10-lab.yaml"
    res = runner.invoke(
        app,
        [
            "study",
            str(file),
            "--scale",
            "cpu",
            "--plan",
            "--json",
            "--runs-dir",
            str(tmp_path / "r"),
            "seed=3",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert all(sorted(row) == ["config", "differences", "id", "key", "params"] for row in rows)
    simple = next(row for row in rows if row["key"] == "simple_cnn")
    assert simple["id"] == "writeup-002-cpu-simple_cnn" and simple["params"] == 62006  # the write-up's count
    assert simple["config"]["optim"]["lr"] == 0.001 and simple["config"]["data"]["name"] == "cifar10"
    assert {row["config"]["seed"] for row in rows} == {3}  # the override, in every run
    assert len({row["id"] for row in rows}) == len(rows) == len(plan(load_study(file, "cpu")))
    assert not (tmp_path / "r").exists()  # nothing trained, nothing made
    text = runner.invoke(app, ["study", str(file), "--scale", "cpu", "--plan"])
    assert text.exit_code == 0 and "62,006 parameters" in text.output and 'optim.name="adam"' in text.output
    bad = runner.invoke(app, ["study", str(file), "--plan", "train.epochs=0"])
    assert bad.exit_code == 2 and "train.epochs" in bad.output and "key=value" in bad.output


def test_overrides_reach_every_run_and_are_recorded(tmp_path):
    file = tmp_path / "tiny.yaml"
    file.write_text(
        "name: tiny\nruns: {a: {set: {model.name: small_cnn, model.kwargs: {width: 8}, "
        "train.epochs: 2, data.per_class: 20}}}\n"
    )
    res = runner.invoke(
        app, ["study", str(file), "--runs-dir", str(tmp_path / "runs"), "--json", "train.epochs=1"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["overrides"] == ["train.epochs=1"]
    assert "epochs: 1\n" in (tmp_path / "runs" / "tiny-smoke-a" / "config.yaml").read_text()
    assert json.loads((tmp_path / "runs" / "tiny-smoke" / "study.json").read_text())["overrides"] == [
        "train.epochs=1"
    ]
    res = runner.invoke(app, ["study", str(file), "--runs-dir", str(tmp_path / "runs"), "optim.lrr=1"])
    assert res.exit_code == 2 and "optim.lr" in res.output


def test_an_override_of_a_swept_key_is_refused(tmp_path):
    file = tmp_path / "grid.yaml"
    file.write_text("name: g\nruns: {a: {grid: {seed: [0, 1]}}}\n")
    with pytest.raises(VisionbenchError, match="'seed' sets a key a grid of the study sweeps"):
        load_study(file, "smoke", ["seed=3"])


def test_vb_study_takes_overrides_settings_and_data_dir(tmp_path, monkeypatch):
    import visionbench as vb
    import visionbench.commands.study

    seen = {}
    monkeypatch.setattr(visionbench.commands.study, "run_study", lambda *a: seen.setdefault("args", a))
    vb.study("f.yaml", "cpu", data_dir=tmp_path, overrides=["seed=1"], epochs=2, **{"optim.lr": 0.05})
    _, scale, _, _, data_dir, overrides = seen["args"]
    assert (scale, data_dir) == ("cpu", tmp_path)
    assert overrides == ["seed=1", "train.epochs=2", "optim.lr=0.05"]


# --- the steps: nothing removed that the study did not make; a changed member votes again ------


def two_runs_done(tmp_path) -> tuple:
    """A study of runs a and b with an ensemble v, the runs' summaries written (no training)."""
    file = tmp_path / "study.yaml"
    file.write_text(TWO + "steps:\n  - ensemble: {name: v, runs: [a, b]}\n  - lr_find: {run: a}\n")
    study = load_study(file, "smoke")
    runs_dir = tmp_path / "runs"
    for r in plan(study):
        (runs_dir / r.id).mkdir(parents=True)
        (runs_dir / r.id / "summary.json").write_text('{"test_acc": 0.5}')
    (runs_dir / study.name).mkdir()
    return study, plan(study), runs_dir


def fake_vote(monkeypatch) -> list:
    """build/evaluate_ensemble as they save: ensemble.json and summary.json; returns the calls."""
    import visionbench.analysis.predictor
    import visionbench.commands.ensemble as ensemble

    calls = []

    def evaluate(ens, tta, runs_dir, name):
        calls.append(name)
        folder = Path(runs_dir) / name
        folder.mkdir()
        (folder / "ensemble.json").write_text(
            json.dumps({"kind": "ensemble", "members": [{"id": m} for m in ens]})
        )
        (folder / "summary.json").write_text(json.dumps({"vote": "hard", "top1": 0.5, "members": ens}))

    monkeypatch.setattr(ensemble, "build_ensemble", lambda members, *a: members)
    monkeypatch.setattr(ensemble, "evaluate_ensemble", evaluate)
    monkeypatch.setattr(visionbench.analysis.predictor, "open_predictor", lambda *a: None)
    return calls


def test_an_ensemble_never_replaces_a_folder_it_did_not_make(tmp_path, monkeypatch):
    study, runs, runs_dir = two_runs_done(tmp_path)
    fake_vote(monkeypatch)
    victim = runs_dir / f"{study.name}-v"  # e.g. a run of that name stopped mid-training
    victim.mkdir()
    (victim / "checkpoint.pt").write_bytes(b"weights")
    with pytest.raises(VisionbenchError, match="never replaced"):
        run_step(study.steps[0], study, runs, runs_dir / study.name, runs_dir, print, {})
    assert (victim / "checkpoint.pt").read_bytes() == b"weights"


def test_an_ensemble_votes_again_when_a_member_was_trained_again(tmp_path, monkeypatch):
    study, runs, runs_dir = two_runs_done(tmp_path)
    calls = fake_vote(monkeypatch)
    folder = runs_dir / study.name
    out = run_step(study.steps[0], study, runs, folder, runs_dir, print, {})
    assert run_step(study.steps[0], study, runs, folder, runs_dir, print, {out["key"]: out}) == out
    assert len(calls) == 1  # unchanged: kept
    (runs_dir / runs[1].id / "summary.json").write_text('{"test_acc": 0.7}')  # b trained again
    again = run_step(study.steps[0], study, runs, folder, runs_dir, print, {out["key"]: out})
    assert len(calls) == 2 and again["key"] != out["key"]


def test_a_study_lr_find_takes_the_cli_default_steps(tmp_path, monkeypatch):
    import visionbench.commands.lr_find
    from visionbench.commands.options import LR_FIND_ITERS

    study, runs, runs_dir = two_runs_done(tmp_path)
    seen = {}

    def find_lr(cfg, **kwargs):
        seen.update(kwargs)
        kwargs["plot"].write_bytes(b"png")
        return {"suggestions": {"valley": {"median": 0.1, "spread": 1.0}}}

    monkeypatch.setattr(visionbench.commands.lr_find, "find_lr", find_lr)
    run_step(study.steps[1], study, runs, runs_dir / study.name, runs_dir, print, {})
    cli_default = next(p.default for p in __import__("typer").main.get_command(app).commands["lr-find"].params
                       if p.name == "iters")  # fmt: skip
    assert seen["iters"] == LR_FIND_ITERS == cli_default == 200
