"""Suite-wide test settings.

- Hypothesis runs without its 200 ms per-example deadline: on a loaded 2-core machine a slow
  example is not a failure, and every property test here bounds its own size instead.
- ``COINFER_REQUIRE_ROOT=1`` (``.ci/run`` sets it when CI runs as root) turns a skipped test that
  carries the ``root`` marker into a failure, so cgroup / network-namespace tests cannot quietly
  stop running where they are expected to run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("coinfer", deadline=None)
settings.load_profile("coinfer")

REQUIRE_ROOT = os.environ.get("COINFER_REQUIRE_ROOT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ROOT and report.skipped and item.get_closest_marker("root") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"COINFER_REQUIRE_ROOT=1 but this root-only test skipped: {reason}"


# Test-only helpers shared across folders (the cost-model oracle, the independent plan
# enumerator): importable as plain modules from every test file.
sys.path.insert(0, str(Path(__file__).parent / "support"))
