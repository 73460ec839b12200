"""cgroup v1 CPU-quota helper: configuration, real throttling (root), clear failure otherwise."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from coinfer.profile.cgroup import (
    CFS_PERIOD_US,
    CGROUP_CPU_ROOT,
    CgroupUnavailableError,
    cgroup_support,
    cpu_quota_cgroup,
    move_pid,
    quota_us,
)

SUPPORTED, WHY = cgroup_support()
needs_root = pytest.mark.skipif(not SUPPORTED, reason=f"cgroup v1 quotas unavailable: {WHY}")

BUSY = "import time\nt=time.time()\nc=time.process_time()\nwhile time.time()-t<{s}: pass\nprint(time.process_time()-c)"


def test_quota_us_math():
    assert quota_us(0.25) == CFS_PERIOD_US // 4
    assert quota_us(2.0) == 2 * CFS_PERIOD_US
    assert quota_us(1e-6) == 1000  # the kernel's minimum
    with pytest.raises(ValueError, match="must be > 0"):
        quota_us(0)


def test_unsupported_root_gives_reason(tmp_path):
    ok, why = cgroup_support(tmp_path)
    assert not ok and "no cgroup v1 cpu controller" in why
    with (
        pytest.raises(CgroupUnavailableError, match="no cgroup v1 cpu controller"),
        cpu_quota_cgroup("x", 0.5, root=tmp_path),
    ):
        pass


def test_bad_name_is_refused():
    with (
        pytest.raises(CgroupUnavailableError, match="bad cgroup name"),
        cpu_quota_cgroup("../etc", 0.5),
    ):
        pass


@pytest.mark.root
@needs_root
def test_quota_really_throttles_and_is_cleaned_up():
    name = f"coinfer-test-{time.monotonic_ns()}"
    with cpu_quota_cgroup(name, 0.25) as cg:
        assert (cg.path / "cpu.cfs_quota_us").read_text().strip() == str(CFS_PERIOD_US // 4)
        proc = subprocess.run(
            [sys.executable, "-c", BUSY.format(s=1.0)],
            preexec_fn=cg.enter,
            capture_output=True,
            text=True,
            check=True,
        )
        cpu_s = float(proc.stdout)
        nr, throttled_s = cg.throttled()
    # 1 s of wall time at a quarter core: ~0.25 s of CPU (allow slack for the period boundary)
    assert cpu_s < 0.45
    assert nr > 0 and throttled_s > 0.2
    assert not (CGROUP_CPU_ROOT / name).exists()


@pytest.mark.root
@needs_root
def test_move_pid_of_running_process_and_leftover_tasks_are_moved_out():
    name = f"coinfer-test-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with cpu_quota_cgroup(name, 0.5) as cg:
            move_pid(cg, proc.pid)
            assert proc.pid in cg.pids()
        # the context removed the cgroup even though the process was still inside
        assert not (CGROUP_CPU_ROOT / name).exists()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(CgroupUnavailableError, match="cannot move pid"):
        move_pid(CGROUP_CPU_ROOT / "definitely-not-a-cgroup", proc.pid)
