"""The README stays the front door: short, its links to docs/ resolve, and its two commands are
the ones CI runs (users and CI copy them, so a drift between them breaks one or the other)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
DOC_PAGES = ("data", "models", "training", "runs", "studies", "analysis", "api", "architecture")
SETUP = "python3 -m venv .venv"  # how each of the two commands starts
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](target#anchor): the target


def readme_commands(text: str) -> list[str]:
    """The README's one-line set-up commands, in order (the demo's, then the tests')."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith(SETUP)]


def ci_test_command() -> str:
    """The command .ci/run ends with, pip's -q dropped: the README shows pip's output."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = next(ln for ln in reversed(lines) if ln.startswith(SETUP))
    return command.replace("pip install -q ", "pip install ")


def local_links(path: Path) -> list[str]:
    """Relative link targets in a markdown file (web links left out)."""
    return [t for t in LINK.findall(path.read_text()) if "://" not in t and not t.startswith("mailto:")]


def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines: move reference text into docs/"


def test_every_docs_page_is_linked_from_the_readme_and_exists():
    links = set(local_links(README))
    for page in DOC_PAGES:
        assert f"docs/{page}.md" in links, f"README.md does not link docs/{page}.md"
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_links_between_docs_pages_resolve():
    broken = [
        f"{page.name} -> {t}"
        for page in sorted((ROOT / "docs").glob("*.md"))
        for t in local_links(page)
        if not (page.parent / t).exists()
    ]
    assert not broken, f"broken links in docs/: {broken}"


def test_the_readme_test_command_is_the_one_ci_runs():
    commands = readme_commands(README.read_text())
    assert len(commands) == 2, f"expected the two set-up commands in README.md, found {commands}"
    demo, tests = commands
    assert tests == ci_test_command()
    assert tests.endswith("python -m pytest -q -rs")
    # the demo command sets up the same way, without the test extra
    setup = tests.split(' && pip install -e ".[test]"')[0]
    assert demo == f"{setup} && pip install -e . && visionbench demo"


def test_the_readme_shows_the_quick_developer_tier():
    assert 'python -m pytest -q -m "not slow"' in README.read_text()
