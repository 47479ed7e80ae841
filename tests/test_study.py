"""The four write-ups as studies: each runs at smoke scale through the CLI and ends in one HTML
report with the write-up's own figures beside ours; a re-run trains nothing again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from visionbench.cli import app

pytestmark = pytest.mark.slow  # each study trains several runs: 15-50 s

WRITEUPS = Path(__file__).resolve().parents[1] / "examples" / "writeups"
runner = CliRunner()

# per write-up: what its report must show beside ours (its own figures) and what steps leave
EXPECTED = {
    "001": {"figures": ["44.58", "52.05", "53.49"], "runs": 4},
    "002": {"figures": ["66.71", "68.41", "86.06", "90.27", "54.67"], "runs": 7},
    "003": {"figures": ["98.87", "80.4", "79.8", "78.1"], "runs": 2},  # and RSB's table
    "004": {"figures": ["86.36", "89.82", "90.64", "91.88"], "runs": 6},
}


def study(file: Path, runs: Path, *extra: str):
    return runner.invoke(
        app, ["study", str(file), "--scale", "smoke", "--runs-dir", str(runs), "--json", *extra]
    )


@pytest.mark.parametrize("writeup", ["001", "002", "003"])
def test_writeup_study_runs_at_smoke_scale_and_reports_beside_the_writeup(writeup, tmp_path, monkeypatch):
    (file,) = WRITEUPS.glob(f"{writeup}-*.yaml")
    res = study(file, tmp_path / "runs")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["runs"]) == EXPECTED[writeup]["runs"]
    for run_id in out["runs"]:
        assert (tmp_path / "runs" / run_id / "summary.json").is_file(), run_id
    html = Path(out["report"]).read_text()
    assert f"Write-up {writeup} beside ours" in html
    for figure in EXPECTED[writeup]["figures"]:  # the write-up's own numbers are in the report
        assert figure in html, figure
    # and ours beside them: every run's test accuracy, as a number, in the "beside" table
    beside = html.split("beside ours", 1)[1].split("</table>", 1)[0]
    for run_id in out["runs"]:
        summary = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text())
        assert f"{100 * summary['test_acc']:.2f}" in beside
    if writeup == "001":  # each cell beside the write-up's own figure for it
        assert "44.58" in beside and "52.31" in beside
    if writeup == "002":  # the write-up's 68.41 is dropout 0.1's: not set beside rate 0.9
        rows = {row.split("</td>", 1)[0]: row for row in beside.split("<tr>")[1:]}
        (high,) = [row for head, row in rows.items() if "rate" in head and "0.9" in head]
        (low,) = [row for head, row in rows.items() if "rate" in head and "0.1" in head]
        assert "68.41" in low and "68.41" not in high
    assert "What differs between their setting and ours" in html and "smoke" in html
    assert re.search(r'<img src="data:image/png;base64,', html)  # figures inlined: one file
    if writeup == "002":  # a re-run keeps the lr-find and saliency steps it did (and says so)
        import visionbench.commands.explain
        import visionbench.commands.lr_find

        def again(*args, **kwargs):
            raise AssertionError("a step done before was done again")

        monkeypatch.setattr(visionbench.commands.lr_find, "find_lr", again)
        monkeypatch.setattr(visionbench.commands.explain, "explain_run", again)
        rerun = study(file, tmp_path / "runs")
        assert rerun.exit_code == 0, rerun.output
        assert json.loads(rerun.stdout)["steps"] == out["steps"]


def test_writeup_004_pretraining_vote_and_labels_then_a_rerun_makes_nothing(tmp_path):
    """Write-up 004: pretrained weights are not on this machine (offline): the study says so and
    uses our own pretraining, labelled; then the hard vote with a tie-break, and labels for an
    unlabelled folder. A re-run trains nothing."""
    test_writeup_study_runs_at_smoke_scale_and_reports_beside_the_writeup("004", tmp_path, None)
    out = json.loads(study(WRITEUPS / "004-scratch-transfer-vote.yaml", tmp_path / "runs").stdout)
    html = Path(out["report"]).read_text()
    assert "our pretraining" in html and "not ImageNet" in html
    assert "32 px (from 8 px)" in html  # the resolution the networks saw, not only the data's
    # our short pretraining recomputes its BatchNorm statistics (engine/precise_bn.py): the frozen
    # features a head-only stage starts from are eval-mode ones
    pretrained = next((tmp_path / "runs").glob("*mobilenet_64-ourpretrain"))
    assert yaml.safe_load((pretrained / "config.yaml").read_text())["train"]["precise_bn"] > 0
    steps = {s["kind"]: s for s in out["steps"]}
    vote = json.loads((tmp_path / "runs" / steps["ensemble"]["name"] / "summary.json").read_text())
    assert vote["vote"] == "hard" and vote["tie_break"].endswith("resnet50_224") and len(vote["members"]) == 3
    rows = Path(steps["predict"]["csv"]).read_text().splitlines()
    assert rows[0].startswith("file,label,confidence") and len(rows) == 51
    assert set(out["runs"].values()) == {"skipped"}  # the re-run trained nothing


def test_rerun_resumes_a_cut_run_and_skips_finished_ones(tmp_path, monkeypatch):
    from conftest import interrupt_at

    file = WRITEUPS / "003-mnist-resnet50-rsb.yaml"
    # our pretraining (135 train images of classes 0-4: 1 step of 128), standard (270: 2 steps of
    # 128), then rsb_a3 (1 step of 256): cut inside the last
    interrupt_at(monkeypatch, 4)
    res = study(file, tmp_path / "runs")
    assert res.exit_code == 128 + 15, res.output
    monkeypatch.undo()
    res = runner.invoke(app, ["study", str(file), "--scale", "smoke", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert re.search(r"skipped\s+writeup-003-smoke-standard", res.output)
    assert re.search(r"resumed\s+writeup-003-smoke-rsb_a3", res.output)


def test_bad_study_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nruns: {a: {set: {model.name: small_cnn}}}\nstepz: []\n")
    res = study(bad, tmp_path / "runs")
    assert res.exit_code == 2 and "unknown study key 'stepz'" in res.output and "steps" in res.output
    res = study(WRITEUPS / "003-mnist-resnet50-rsb.yaml", tmp_path / "runs", "--scale", "huge")
    assert res.exit_code == 2 and "scale" in res.output and "Traceback" not in res.output
    bad.write_text("name: x\nreference: [rsb-resnet5]\nruns: {a: {set: {model.name: small_cnn}}}\n")
    res = study(bad, tmp_path / "runs")
    assert res.exit_code == 2 and "rsb-resnet50" in res.output and not (tmp_path / "runs").exists()
    bad.write_text("name: x\nreference: {rsb-resnet50: 1}\nruns: {a: {set: {model.name: small_cnn}}}\n")
    res = study(bad, tmp_path / "runs")
    assert res.exit_code == 2 and "is not a name or a list of names" in res.output
    bad.write_text("name: x\nruns: {a: {set: {optim.lrr: 0.1}}}\n")
    res = study(bad, tmp_path / "runs")
    assert res.exit_code == 2 and "optim.lr" in res.output  # the nearest valid key


def test_data_dir_option_reaches_every_run_and_a_rerun_through_the_environment_skips(tmp_path, monkeypatch):
    file = tmp_path / "tiny.yaml"
    file.write_text(
        "name: tiny\nruns: {a: {set: {model.name: small_cnn, model.kwargs: {width: 8}, "
        "train.epochs: 1, data.per_class: 20}}}\n"
    )
    data = tmp_path / "data"
    res = study(file, tmp_path / "runs", "--data-dir", str(data))
    assert res.exit_code == 0, res.output
    saved = (tmp_path / "runs" / "tiny-smoke-a" / "config.yaml").read_text()
    assert f"dir: {data}" in saved
    monkeypatch.setenv("VISIONBENCH_DATA", str(data))  # the same root another way: the same run
    res = study(file, tmp_path / "runs")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["runs"] == {"tiny-smoke-a": "skipped"}
