"""The shared test helpers: a test whose tool CI installs fails there instead of skipping."""

from __future__ import annotations

import pytest
from conftest import skip_or_fail_on_ci


def test_missing_tool_skips_on_a_laptop(monkeypatch):
    monkeypatch.delenv("VISIONBENCH_CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium on PATH"):
        skip_or_fail_on_ci("no chromium on PATH")


@pytest.mark.parametrize("value", ["1", "true"])
def test_missing_tool_fails_on_ci(monkeypatch, value):
    monkeypatch.setenv("VISIONBENCH_CI", value)
    with pytest.raises(pytest.fail.Exception, match="no chromium on PATH.*VISIONBENCH_CI"):
        skip_or_fail_on_ci("no chromium on PATH")
