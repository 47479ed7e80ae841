"""report: one self-contained HTML file that a headless browser renders offline without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail_on_ci
from PIL import Image
from typer.testing import CliRunner

from visionbench.cli import app

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")  # session: checked before the session's tiny_run is trained
def needs_chromium():
    if CHROMIUM is None:
        skip_or_fail_on_ci("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")


def render(page: Path, tmp: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot of `page` in headless Chromium (grey levels), and every console message it logged."""
    shot = tmp / f"{page.stem}.png"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI containers run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",  # console messages arrive on stderr as ...:CONSOLE:...
            "--v=0",
            "--window-size=1280,1800",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return np.asarray(Image.open(shot).convert("L")), console


def blank(pixels: np.ndarray) -> bool:
    """Nearly one colour: fewer than 2% of pixels differ from the most common grey level."""
    common = np.bincount(pixels.ravel()).argmax()
    return (np.abs(pixels.astype(int) - common) > 8).mean() < 0.02


@pytest.mark.usefixtures("needs_chromium")
def test_the_checks_can_fail(tmp_path):
    """The two checks below would catch a blank page and a console error: shown on a bad page."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><body><script>console.error("broken"); missing();</script></body>')
    pixels, console = render(bad, tmp_path)
    assert blank(pixels)
    assert any("broken" in line for line in console) and any("missing" in line for line in console)


@pytest.fixture
def explained_run(tiny_run):
    pytest.importorskip("captum")
    from visionbench.commands.explain import explain_run

    if not (tiny_run / "explain" / "explain.png").is_file():
        explain_run("tiny", tiny_run.parent, count=2, device="cpu")
    return tiny_run


@pytest.mark.usefixtures("needs_chromium")
def test_html_report_renders_offline_without_errors(explained_run, tmp_path):
    out = tmp_path / "site" / "report.html"
    res = runner.invoke(app, ["report", "tiny", "--runs-dir", str(explained_run.parent), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    # self-contained: nothing to fetch, no scripts, every image inlined
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # overlaid curves + the run's curves, its training-end evaluation bundle (confusion, normalised
    # confusion, reliability, mistakes) and explanation grid
    assert len(sources) == 7 and "explanations: saliency" in html and "Explained images" in html
    pixels, console = render(out, tmp_path)
    assert not blank(pixels)
    assert console == []


@pytest.mark.slow  # over 2 s on 2 cores: CI runs it, the quick tier does not
def test_markdown_report_links_figures_that_exist(explained_run, tmp_path):
    md = tmp_path / "docs" / "report.md"
    res = runner.invoke(
        app, ["report", "tiny", "--runs-dir", str(explained_run.parent), "--markdown", str(md)]
    )
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "| run | data | model |" in text and "| tiny | digits | small_cnn |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 7
    assert all((md.parent / link).is_file() for link in links)


def test_report_with_no_runs_says_so(tmp_path):
    res = runner.invoke(app, ["report", "--runs-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no finished runs" in res.output


def test_report_shows_a_saved_ensemble_beside_its_members(tiny_run, tmp_path):
    runs = str(tmp_path / "ensembles")
    member = str(tiny_run)
    res = runner.invoke(
        app, ["ensemble", member, member, "--vote", "soft", "--save", "trio", "--runs-dir", runs]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ensembles" / "trio" / "summary.json").read_text())
    md = tmp_path / "report.md"
    res = runner.invoke(app, ["report", "trio", "--runs-dir", runs, "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "## Ensemble trio" in text and f"| ensemble (soft vote) | {100 * summary['top1']:.2f} |" in text
    assert "| agreement | tiny | tiny |" in text and "| tiny | 1.000 | 1.000 |" in text
    assert "## tiny" in text  # its member, read from ensemble.json
    assert "![confusion matrix (eval)](ensembles/trio/eval/confusion.png)" in text


def test_report_shows_published_references_beside_ours(tiny_run, tmp_path):
    runs, md, html = str(tiny_run.parent), tmp_path / "report.md", tmp_path / "report.html"
    args = ["report", "tiny", "--runs-dir", runs, "--reference", "rsb-resnet50"]
    res = runner.invoke(app, [*args, "--markdown", str(md), "--out", str(html)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "## Published references" in text and "| resnet50 | rsb-a1 | 80.40 | 600 |" in text
    assert re.search(r"\| data \| digits \([\d,]+ train images\) \| ImageNet-1k", text)  # what differs
    page = html.read_text()
    assert (
        "Published references beside ours" in page and "What differs between their setting and ours" in page
    )
    assert "<td>80.40</td>" in page
    assert runner.invoke(app, ["report", "tiny", "--runs-dir", runs, "--markdown", str(md)]).exit_code == 0
    assert "Published references" not in md.read_text()  # none asked for, none shown
    bad = runner.invoke(app, [*args[:-1], "rsb", "--markdown", str(md)])
    assert bad.exit_code == 2 and "unknown reference 'rsb'" in bad.output


@pytest.mark.parametrize("text", ["[", '{"members": 5}'])
def test_a_damaged_saved_ensemble_is_left_out_with_a_warning_or_named_as_damaged(tiny_run, tmp_path, text):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    (runs / "ens_bad").mkdir()
    (runs / "ens_bad" / "ensemble.json").write_text(text)
    md = tmp_path / "report.md"
    res = runner.invoke(app, ["report", "--runs-dir", str(runs), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    assert "## tiny" in md.read_text() and "Ensemble" not in md.read_text()
    assert res.stderr.startswith("warning: ensemble ens_bad left out: saved ensemble 'ens_bad' is damaged")
    res = runner.invoke(app, ["report", "ens_bad", "--runs-dir", str(runs), "--markdown", str(md)])
    assert res.exit_code == 2 and "saved ensemble 'ens_bad' is damaged" in res.output
    assert "Traceback" not in res.output
