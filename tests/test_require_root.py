"""COINFER_REQUIRE_ROOT: a root-only test that skips must fail the run where root is demanded."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TESTS = """
import pytest

@pytest.mark.root
@pytest.mark.skipif(True, reason="no cgroups here")
def test_needs_root():
    pass

@pytest.mark.skipif(True, reason="optional extra missing")
def test_ordinary_skip():
    pass
"""


def test_root_skips_fail_only_when_demanded(pytester, monkeypatch) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    root: needs root\n")
    pytester.makepyfile(TESTS)
    monkeypatch.delenv("COINFER_REQUIRE_ROOT", raising=False)
    pytester.runpytest_subprocess().assert_outcomes(skipped=2)
    monkeypatch.setenv("COINFER_REQUIRE_ROOT", "1")
    res = pytester.runpytest_subprocess()
    res.assert_outcomes(errors=1, skipped=1)  # the skip happened in setup: an error, a red run
    res.stdout.fnmatch_lines(
        ["*COINFER_REQUIRE_ROOT=1 but this root-only test skipped: *no cgroups here*"]
    )
