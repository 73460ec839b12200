"""cgroup v1 CPU quotas: the emulated testbed's device speed, as a small reusable API.

A process placed in a cgroup whose ``cpu.cfs_quota_us`` is ``q * cpu.cfs_period_us`` gets at most
``q`` cores of CPU time per period: real throttling by the kernel's CFS bandwidth controller
(verified on these machines: a 25% quota gives ~0.53 s of CPU in 2 s of wall time). The profiler
and the runtime both use it:

>>> with cpu_quota_cgroup("coinfer-demo", 0.25) as cg:      # doctest: +SKIP
...     proc = subprocess.Popen([...], preexec_fn=cg.enter)  # child starts inside the cgroup
...     move_pid(cg, other_pid)                             # or move a running process

Only root can create cgroups; :func:`cgroup_support` says whether it will work and why not, so
callers can fall back to thread limits and tell the user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CoinferError

# Where the v1 CPU controller is mounted on these machines.
CGROUP_CPU_ROOT = Path("/sys/fs/cgroup/cpu")
# CFS bandwidth period: 100 ms is the kernel default; quotas are fractions of it. Shorter periods
# throttle more smoothly but cost more scheduler work; we keep the default the kernel tests use.
CFS_PERIOD_US = 100_000
# The period the emulated testbed runs with (runtime workers, and the profiler that predicts them):
# 10 ms instead of the kernel's 100 ms. A throttled group is frozen for the rest of its period
# once its quota is spent, so with 100 ms a 0.3-core device stalls up to 70 ms at a time — bursts
# as long as a large part of a request's latency, which the (fluid) cost model does not have.
# Measured on the 4-device testbed (ResNet-18, one run each): 25.3 req/s with 100 ms, 28.7 with
# 10 ms. 10 ms keeps stalls below one piece's compute.
EMULATION_PERIOD_US = 10_000
# OpenMP's wait policy in every emulated process (profiler children, workers, the zygote): an
# idle intra-op thread sleeps at a barrier instead of spinning. An emulated core is CPU quota,
# not a core of its own, so a spinning thread burns its group's quota — and on a shared host it
# spins while its sibling waits for a CPU. Measured on ResNet-18, 2 threads under a 0.8-core
# quota: 0.378 s per pass with libgomp's default (spin), 0.061 s passive, against 0.119 s for
# one thread under 0.4 core. One thread never waits at a barrier, so it changes nothing there.
OMP_WAIT_POLICY = "PASSIVE"


# The kernel rejects quotas below 1 ms.
MIN_QUOTA_US = 1_000
# cgroup names become directory names: keep them portable.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def emulation_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the OpenMP wait policy of every emulated process (``OMP_WAIT_POLICY``)."""
    return {**env, "OMP_WAIT_POLICY": OMP_WAIT_POLICY}


class CgroupUnavailableError(CoinferError):
    """cgroup v1 CPU quotas cannot be used here (not root, no v1 cpu controller, ...)."""


@dataclass(frozen=True, slots=True)
class CpuCgroup:
    """A live CPU-quota cgroup: its directory and its quota in cores (0.5 = half a core)."""

    path: Path
    quota: float

    @property
    def name(self) -> str:
        return self.path.name

    def enter(self) -> None:
        """Move the *calling* process into this cgroup (usable as ``Popen(preexec_fn=cg.enter)``)."""
        move_pid(self, os.getpid())

    def pids(self) -> list[int]:
        """Processes currently in the cgroup."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]

    def throttled(self) -> tuple[int, float]:
        """``(periods throttled, seconds throttled)`` so far, from ``cpu.stat``."""
        stats: dict[str, int] = {}
        try:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                stats[key] = int(value)
        except (OSError, ValueError):
            return (0, 0.0)
        return (stats.get("nr_throttled", 0), stats.get("throttled_time", 0) / 1e9)


def cgroup_support(root: Path = CGROUP_CPU_ROOT) -> tuple[bool, str]:
    """Whether CPU-quota cgroups can be created under ``root``, and if not, why (one line)."""
    if not (root / "cpu.cfs_quota_us").exists():
        return False, f"no cgroup v1 cpu controller at {root} (cgroup v2 or not mounted)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return False, "creating cgroups needs root"
    if not os.access(root, os.W_OK):
        return False, f"{root} is not writable"
    return True, "ok"


def quota_us(quota: float, period_us: int = CFS_PERIOD_US) -> int:
    """Quota in microseconds per period for ``quota`` cores (at least the kernel's 1 ms minimum)."""
    if not (quota > 0):
        raise ValueError(f"cpu quota must be > 0 cores (got {quota!r})")
    return max(MIN_QUOTA_US, round(quota * period_us))


def create_cpu_cgroup(
    name: str, quota: float, *, period_us: int = CFS_PERIOD_US, root: Path = CGROUP_CPU_ROOT
) -> CpuCgroup:
    """Create (or reconfigure) ``<root>/<name>`` limited to ``quota`` cores per ``period_us``.

    For owners whose lifetime is not one ``with`` block (a runtime worker creates its group at
    setup and removes it at exit); pair with :func:`remove_cpu_cgroup`.

    Raises
    ------
    CgroupUnavailableError
        Bad name, not root, no v1 cpu controller, or the kernel refused the settings.
    """
    if not _NAME_RE.match(name):
        raise CgroupUnavailableError(
            f"bad cgroup name {name!r}: use letters, digits, '_', '.', '-'"
        )
    ok, why = cgroup_support(root)
    if not ok:
        raise CgroupUnavailableError(why)
    path = root / name
    try:
        path.mkdir(exist_ok=True)
        (path / "cpu.cfs_period_us").write_text(str(period_us))
        (path / "cpu.cfs_quota_us").write_text(str(quota_us(quota, period_us)))
    except OSError as exc:
        _remove(path, root)
        raise CgroupUnavailableError(f"cannot configure cgroup {path}: {exc.strerror}") from None
    return CpuCgroup(path, float(quota))


def remove_cpu_cgroup(cgroup: CpuCgroup | Path, root: Path = CGROUP_CPU_ROOT) -> None:
    """Move any tasks left inside back to ``root`` and remove the group (best effort)."""
    _remove(cgroup.path if isinstance(cgroup, CpuCgroup) else Path(cgroup), root)


@contextlib.contextmanager
def cpu_quota_cgroup(
    name: str, quota: float, *, period_us: int = CFS_PERIOD_US, root: Path = CGROUP_CPU_ROOT
) -> Iterator[CpuCgroup]:
    """Create ``<root>/<name>`` limited to ``quota`` cores; remove it on exit.

    Processes still inside at exit are moved back to the root cgroup first, so the directory can
    always be removed (a cgroup with tasks cannot be). An existing cgroup of the same name (e.g.
    left by a killed run) is reused and reconfigured.

    Raises
    ------
    CgroupUnavailableError
        Not root, no v1 cpu controller, or the kernel refused the settings.
    """
    cg = create_cpu_cgroup(name, quota, period_us=period_us, root=root)
    try:
        yield cg
    finally:
        remove_cpu_cgroup(cg, root)


def move_pid(cgroup: CpuCgroup | Path | str, pid: int) -> None:
    """Move process ``pid`` (all its threads) into ``cgroup``.

    Raises
    ------
    CgroupUnavailableError
        The process does not exist or the kernel refused.
    """
    path = cgroup.path if isinstance(cgroup, CpuCgroup) else Path(cgroup)
    try:
        (path / "cgroup.procs").write_text(str(int(pid)))
    except OSError as exc:
        raise CgroupUnavailableError(f"cannot move pid {pid} into {path}: {exc.strerror}") from None


def _remove(path: Path, root: Path) -> None:
    """Move leftover tasks to ``root`` and remove the cgroup directory (best effort, retried)."""
    if not path.exists():
        return
    for _ in range(50):  # tasks may still be exiting; 50 x 20 ms = 1 s at most
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(pid)
        try:
            path.rmdir()
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            time.sleep(0.02)


__all__ = [
    "CFS_PERIOD_US",
    "CGROUP_CPU_ROOT",
    "EMULATION_PERIOD_US",
    "OMP_WAIT_POLICY",
    "CgroupUnavailableError",
    "CpuCgroup",
    "cgroup_support",
    "cpu_quota_cgroup",
    "create_cpu_cgroup",
    "emulation_env",
    "move_pid",
    "quota_us",
    "remove_cpu_cgroup",
]
