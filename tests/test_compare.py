"""compare: runs grouped by two config keys, mean ± std over seeds, references beside them."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from typer.testing import CliRunner

from visionbench.analysis.compare import compare_table, load_references, read_runs
from visionbench.cli import app

runner = CliRunner()
# (model, recipe, seed, test accuracy): write-up 001's model x recipe grid, two seeds where it matters
GRID = [
    ("resnet18", "baseline", 0, 0.40),
    ("resnet18", "baseline", 1, 0.44),
    ("resnet18", "augmented", 0, 0.52),
    ("resnet101", "augmented", 0, 0.50),
    ("resnet101", "augmented", 1, 0.54),
    ("resnet101", "augmented", 2, 0.58),
]


def fake_run(root, name, model, recipe, seed, acc, seconds=10.0):
    """A finished run folder as `train` writes it, with chosen numbers."""
    path = root / name
    path.mkdir(parents=True)
    cfg = {
        "seed": seed,
        "recipe": recipe,
        "model": {"name": model},
        "data": {"name": "cifar10"},
        "optim": {"name": "sgd"},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "summary.json").write_text(
        json.dumps({"test_acc": acc, "params": 1000, "train_seconds": seconds, "epochs": 2})
    )
    (path / "run.json").write_text(
        json.dumps({"data_report": {"splits": {"train": 45000}, "shape": [3, 32, 32]}})
    )
    rows = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_acc": acc * e / 2,
            "seconds": seconds / 2,
            "images_per_s": 4500.0,
        }
        for e in (1, 2)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / "grid"
    for i, (model, recipe, seed, acc) in enumerate(GRID):
        fake_run(root, f"r{i}", model, recipe, seed, acc)
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("seed: 0\n")
    return root


def test_table_groups_by_two_keys_with_mean_and_sample_std(grid):
    table = compare_table(read_runs(None, grid))  # default: rows model.name, columns recipe
    assert (table["rows"], table["cols"]) == ("model.name", "recipe")
    assert table["row_values"] == ["resnet18", "resnet101"]  # natural order, not text order
    cell = {(c["row"], c["col"]): c for c in table["cells"]}
    assert cell["resnet101", "augmented"]["acc_mean"] == pytest.approx(54.0)
    assert cell["resnet101", "augmented"]["acc_std"] == pytest.approx(4.0)  # sample std of 50, 54, 58
    assert cell["resnet18", "baseline"]["seeds"] == [0, 1]
    assert cell["resnet18", "augmented"]["acc_std"] is None  # one seed: no spread to report
    assert cell["resnet18", "augmented"]["images_per_s"] == pytest.approx(4500.0)
    assert ("resnet101", "baseline") not in cell


def test_cli_formats_agree(grid):
    args = ["compare", "--runs-dir", str(grid)]
    res = runner.invoke(app, args + ["--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 3 and float(rows[-1]["acc_mean"]) == pytest.approx(54.0)
    md = runner.invoke(app, args + ["--format", "markdown"]).stdout
    assert "| model.name \\ recipe | augmented | baseline |" in md
    assert "| resnet101 | 54.00 ± 4.00 (n=3) |  |" in md
    table = runner.invoke(app, args).stdout
    assert "54.00 ± 4.00 (n=3)" in table and "42.00 ± 2.83 (n=2)" in table


def test_any_two_config_keys_and_unknown_keys(grid):
    res = runner.invoke(
        app, ["compare", "--runs-dir", str(grid), "--rows", "seed", "--cols", "model.name", "--json"]
    )
    table = json.loads(res.stdout)
    assert table["row_values"] == ["0", "1", "2"] and table["col_values"] == ["resnet18", "resnet101"]
    res = runner.invoke(app, ["compare", "--runs-dir", str(grid), "--cols", "optim.nme"])
    assert res.exit_code == 2 and "Did you mean 'optim.name'" in res.output


def test_named_unfinished_run_is_refused(grid):
    res = runner.invoke(app, ["compare", "r0", "unfinished", "--runs-dir", str(grid)])
    assert res.exit_code == 2 and "'unfinished' has not finished" in res.output


def test_reference_shows_published_figures_and_the_differences(grid, tmp_path):
    res = runner.invoke(
        app,
        [
            "compare",
            "--runs-dir",
            str(grid),
            "--reference",
            "rsb-resnet50",
            "--format",
            "markdown",
            "--curves",
            str(tmp_path / "c.png"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| resnet50 | rsb-a1 | 80.40 | 600 |" in res.stdout
    assert "| data | cifar10 (45,000 train images) | ImageNet-1k" in res.stdout
    assert "| resolution | 32 px | train 224 px (A3 160 px), test 224 px |" in res.stdout
    assert (tmp_path / "c.png").stat().st_size > 10_000
    res = runner.invoke(app, ["compare", "--runs-dir", str(grid), "--reference", "rsb"])
    assert res.exit_code == 2 and "unknown reference 'rsb'" in res.output


def test_shipped_references_carry_their_context():
    refs = load_references()
    assert {"rsb-resnet50", "airbench94", "writeup-001-tiny-imagenet"} <= set(refs)
    for name, ref in refs.items():
        assert {"title", "source", "data", "epochs", "resolution", "rows"} <= set(ref), name
        stray = [set(r) - {"model", "recipe", "top1", "epochs"} for r in ref["rows"]]
        assert not any(stray), (name, stray)
        assert all(0 < r["top1"] <= 100 for r in ref["rows"]), name
    airbench = refs["airbench94"]
    assert [r["top1"] for r in airbench["rows"]] == [94.01, 90.69, 90.66]
    assert "90.69% +- 0.18 measured with the repository's script airbench94.py" in airbench["source"]
    assert "90.66% +- 0.12 with the `airbench` package 0.1.8 (5 runs" in airbench["source"]


def test_compare_reads_a_real_run(tiny_run):
    res = runner.invoke(app, ["compare", "tiny", "--runs-dir", str(tiny_run.parent), "--json"])
    assert res.exit_code == 0, res.output
    (cell,) = json.loads(res.stdout)["cells"]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert (
        cell["acc_mean"] == pytest.approx(100 * summary["test_acc"]) and cell["params"] == summary["params"]
    )
    assert cell["images_per_s"] > 0
    assert json.loads(res.stdout)["cols"] == "data.name"  # no recipe: one column per dataset


def test_a_damaged_run_is_left_out_and_said_never_hiding_the_others(grid):
    fake_run(grid, "bad", "resnet18", "baseline", 2, 0.9)
    (grid / "bad" / "summary.json").write_text("garbage{")
    fake_run(grid, "odd", "resnet18", "baseline", 3, 0.9)
    (grid / "odd" / "config.yaml").write_text("seed: [unclosed\n")
    with pytest.warns(UserWarning) as said:
        records = read_runs(None, grid)
    assert sorted(r.id for r in records) == [f"r{i}" for i in range(len(GRID))]
    bad, odd = (str(w.message) for w in said)
    assert bad == "run bad left out: run 'bad': summary.json is damaged (not a JSON object)"
    assert odd.startswith("run odd left out: cannot parse YAML")
    res = runner.invoke(app, ["compare", "odd", "--runs-dir", str(grid)])
    assert res.exit_code == 2 and "cannot parse YAML" in res.output and "Traceback" not in res.output


def test_without_names_a_saved_ensemble_is_not_a_run_left_out_and_warnings_are_one_line(grid):
    fake_run(grid, "bad", "resnet18", "baseline", 2, 0.9)
    (grid / "bad" / "summary.json").write_text("garbage{")
    (grid / "trio").mkdir()  # a saved ensemble: ensemble.json and summary.json, no config.yaml
    (grid / "trio" / "ensemble.json").write_text(json.dumps({"kind": "ensemble", "members": []}))
    (grid / "trio" / "summary.json").write_text(json.dumps({"top1": 0.5}))
    res = runner.invoke(app, ["compare", "--runs-dir", str(grid)])
    assert res.exit_code == 0, res.output
    assert "trio" not in res.stderr
    said = [line for line in res.stderr.splitlines() if line.strip()]
    assert said == ["warning: run bad left out: run 'bad': summary.json is damaged (not a JSON object)"]


@pytest.mark.parametrize("meta", [{}, {"data_report": None}, {"data_report": {"splits": {}, "shape": None}}])
def test_references_beside_runs_whose_run_json_lacks_the_data_report(tmp_path, meta):
    fake_run(tmp_path, "r", "resnet18", "baseline", 0, 0.5)
    (tmp_path / "r" / "run.json").write_text(json.dumps(meta))
    res = runner.invoke(app, ["compare", "r", "--reference", "rsb-resnet50", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "cifar10" in res.output
