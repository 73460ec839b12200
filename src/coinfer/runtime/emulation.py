"""Device emulation for a worker process: a real cgroup CPU quota when root, thread limits always.

A device with ``emulate: {cpu_quota: 0.4, threads: 1}`` runs its worker with one intra-op thread
inside a cgroup v1 CPU controller allowed 4 ms of CPU per 10 ms period — real throttling,
measured here (25% quota -> 0.53 s of CPU in 2 s). Without root (or without cgroup v1) only the
thread count is applied and :attr:`Emulation.mode` says so, so reports never overclaim.

Only the *compute* threads (the worker's main thread, and for a device of several threads — a
SoC's core group — the intra-op pool it starts, :func:`start_intra_op_pool`) are placed in the
quota; the communication threads (link senders, the receiver, the source's client,
gloo's I/O threads, heartbeat) run beside it on the same CPU but outside the quota, as a real
device's NIC and kernel network stack do not stall behind its application's CPU budget. Measured
before the split, with every thread in the quota: each transfer of the demo took 5-6 ms longer
than its link (a sender woke from its emulated-link sleep into a throttled group and waited for
the next period). Their CPU use is measured instead (:func:`helper_cpu_s`) and is what the
testbed's spare capacity must hold.

The worker puts its threads into the cgroup itself (it knows its own pids on its own machine)
and removes it on exit; :func:`cleanup_stale` removes groups left by killed workers of a run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..profile.allocator import keep_freed_memory
from ..profile.cgroup import (
    CGROUP_CPU_ROOT,
    EMULATION_PERIOD_US,
    CgroupUnavailableError,
    cgroup_support,
    create_cpu_cgroup,
    remove_cpu_cgroup,
)

# The CFS period of every emulated device (see EMULATION_PERIOD_US for why 10 ms).
CFS_PERIOD_US = EMULATION_PERIOD_US
# Prefix of every cgroup this runtime creates, so cleanup never touches anything else.
CGROUP_PREFIX = "coinfer-"


# Where communication threads go: the cgroup this process was in before :func:`apply` (set there).
_HELPER_CGROUP: Path | None = None


def _own_cpu_cgroup() -> Path:
    """The cpu-controller cgroup of this process (from ``/proc/self/cgroup``), as a directory."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if "cpu" in controllers.split(","):
                return CGROUP_CPU_ROOT / rel.lstrip("/")
    except (OSError, ValueError):
        pass
    return CGROUP_CPU_ROOT


def exempt_this_thread() -> None:
    """Move the calling thread out of the device's quota (communication threads call this first).

    A no-op when no quota cgroup was applied. Threads inherit their creator's cgroup, and the
    compute thread creates the helpers, so each helper moves itself.
    """
    if _HELPER_CGROUP is not None:
        with contextlib.suppress(OSError):
            (_HELPER_CGROUP / "tasks").write_text(str(threading.get_native_id()))


def thread_ids() -> set[int]:
    """Native ids of this process's threads now."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def start_intra_op_pool() -> frozenset[int]:
    """Start torch's intra-op worker threads now and return their native ids.

    Why: a device of ``k`` threads (a SoC's core group) computes on the calling thread *and*
    ``k - 1`` pool threads, and all of them belong under its quota, while every other thread
    stays outside it (see the module docstring). The pool starts at the first parallel region,
    so it is started here, between two looks at ``/proc/self/task``, before any other thread
    is started; the ids found are what :func:`apply` moves into the quota. Measured without
    this: the pool threads ran unthrottled and a 2-core group did ResNet-18 in 51 ms per request
    where its profile (every thread under the quota) says 89 ms.
    """
    if torch.get_num_threads() <= 1:
        return frozenset()
    before = thread_ids()
    # a reduction above ATen's grain size (32 768 elements) runs as a parallel region
    torch.ones(1 << 20).sum()
    return frozenset(thread_ids() - before)


def helper_cpu_s(compute_s: float | None = None) -> float:
    """CPU seconds this process has used so far in every thread except the compute ones.

    Called from the compute thread at the end of a run, this is the device's communication and
    bookkeeping load (link senders, receiver, gloo I/O, client, heartbeat — also the threads that
    already ended) that runs outside its quota. ``compute_s``: the compute threads' CPU
    (:meth:`Emulation.compute_cpu_s`; default: the calling thread's).
    """
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    own = time.thread_time() if compute_s is None else compute_s
    return max(0.0, ru.ru_utime + ru.ru_stime - own)


def pack_cpus(quotas: dict[str, float], num_cpus: int) -> dict[str, int]:
    """Assign each device (by its CPU quota in cores) to one CPU: largest first, each onto the
    least loaded CPU where it fits (worst-fit decreasing, so the spare capacity is spread and every
    CPU keeps room for the threads that run outside the quotas).

    Why: a cgroup quota is a cap, not a reservation. Two throttled workers that land on the same
    CPU split it by their (equal) weights, so a 0.8-core device sharing a CPU with a 0.3-core
    one runs at 0.5 core and every profile-based prediction is off (measured: pipelined ResNet-18
    computed 25-40 % slower than profiled with 4 workers floating over 2 CPUs). Pinning each
    worker to a CPU whose quotas sum to at most one core gives every device its quota. Devices
    that fit nowhere go to the least loaded CPU (the caller sees the overload in the result).
    Ties are broken by device name, so the packing is deterministic.
    """
    load = [0.0] * max(1, num_cpus)
    out: dict[str, int] = {}
    for dev in sorted(quotas, key=lambda d: (-quotas[d], d)):
        q = quotas[dev]
        fits = [c for c in range(len(load)) if load[c] + q <= 1.0 + 1e-9]
        cpu = min(fits or range(len(load)), key=lambda c: (load[c], c))
        load[cpu] += q
        out[dev] = cpu
    return out


def pin_to_cpu(cpu: int) -> None:
    """Pin every thread of this process (and threads it starts later) to ``cpu``."""
    pin_to_cpus((cpu,))


def pin_to_cpus(cpus: tuple[int, ...]) -> tuple[int, ...] | None:
    """Pin every thread of this process (and threads it starts later) to the CPUs of ``cpus``
    this process may use; returns them, or ``None`` (nothing pinned) when none is allowed."""
    allowed = tuple(sorted(set(cpus) & os.sched_getaffinity(0)))
    if not allowed:
        return None
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), set(allowed))
    return allowed


@dataclass(frozen=True, slots=True)
class Emulation:
    """What was applied: ``mode`` is ``"cgroup"`` (quota + threads), ``"threads"`` or ``"none"``."""

    mode: str
    threads: int
    cpu_quota: float | None
    cgroup: str | None = None
    note: str = ""
    cpu: int | None = None
    cpus: tuple[int, ...] | None = None
    quota_threads: int | None = None
    pool: tuple[int, ...] = ()
    # what :func:`~coinfer.profile.allocator.keep_freed_memory` did in this process
    allocator: str = ""

    def compute_cpu_s(self) -> float:
        """CPU seconds so far of the calling (compute) thread and the intra-op ``pool`` threads
        (read from ``/proc/self/task/<id>/schedstat``): the device's own compute, whatever its
        thread count."""
        total = time.thread_time()
        for tid in self.pool:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9
        return total

    def pad_s(self, cpu_s: float, wall_s: float) -> float:
        """Seconds to hold the device busy after a compute that took ``wall_s`` and ``cpu_s``.

        Why: CFS bandwidth control only enforces a quota at scheduler ticks (4 ms here), and a
        group that was idle starts each burst with its quota unspent, so a *lightly loaded*
        device runs a short stage far faster than its quota: measured on the testbed, d3
        (0.2 core, 26 % busy) ran ResNet-18 pieces 20-23 in 10.8 ms where sustained throttling
        (and the profile) gives 27 ms. A real slow device has no such burst. Holding the device
        until ``cpu_s / quota`` has passed restores the fluid rate the cost model uses; under
        sustained load the quota itself already gives it, and the pad is ~0. Only under a real
        cgroup, and for several threads only when their ids are known (``cpu_s`` is then
        :meth:`compute_cpu_s`: the compute thread's and its pool's CPU, the whole compute).
        """
        if self.mode != "cgroup" or not self.cpu_quota:
            return 0.0
        if self.threads > 1 and len(self.pool) < self.threads - 1:
            return 0.0
        return max(0.0, cpu_s / self.cpu_quota - wall_s)

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "threads": self.threads,
            "cpu_quota": self.cpu_quota,
            "cgroup": self.cgroup,
            "note": self.note,
            "cpu": self.cpu,
            "cpus": None if self.cpus is None else list(self.cpus),
            "quota_threads": self.quota_threads,
            "allocator": self.allocator,
            # what the kernel and torch report now, not what was asked (tests check these)
            "affinity": sorted(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
        }


def cgroups_available() -> bool:
    """True when this process may create cgroup v1 CPU groups (root and the controller mounted)."""
    return cgroup_support(CGROUP_CPU_ROOT)[0]


def cgroup_name(run_id: str, device: str) -> str:
    """The cgroup of ``device`` in run ``run_id`` (only safe characters)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
    return f"{CGROUP_PREFIX}{run_id}-{safe}"


def apply(
    device: str,
    run_id: str,
    *,
    cpu_quota: float | None,
    threads: int,
    use_cgroup: bool = True,
    cpu: int | None = None,
    cpus: tuple[int, ...] | None = None,
    pool: frozenset[int] = frozenset(),
) -> Emulation:
    """Limit this process as ``device``: ``threads`` torch threads and, when possible, the quota.

    ``cpu_quota`` is in cores (0.4 = 40% of one core); ``None`` means no quota. ``cpu`` pins the
    process to one CPU (see :func:`pack_cpus`); only single-thread devices are pinned that way.
    ``cpus`` pins it to a set of CPUs whatever its thread count: a SoC's core group of ``k``
    cores runs ``k`` threads on its cores' host CPUs (the cluster file says which). ``pool``:
    the intra-op threads (:func:`start_intra_op_pool`), put under the quota with the caller.
    Freed memory stays in the process from here on (:func:`keep_freed_memory`), as it does
    while profiling, so a stage costs the same CPU in every plan.
    """
    allocator = keep_freed_memory()
    pinned = None
    if cpus:
        pinned = pin_to_cpus(tuple(cpus))
        cpu = None
    elif cpu is not None and threads == 1:
        pin_to_cpu(cpu)
    else:
        cpu = None
    emu = _apply_limits(
        device, run_id, cpu_quota=cpu_quota, threads=threads, use_cgroup=use_cgroup, pool=pool
    )
    return replace(emu, cpu=cpu, cpus=pinned, pool=tuple(sorted(pool)), allocator=allocator)


def _apply_limits(
    device: str,
    run_id: str,
    *,
    cpu_quota: float | None,
    threads: int,
    use_cgroup: bool,
    pool: frozenset[int] = frozenset(),
) -> Emulation:
    if threads < 1:
        raise ValueError(f"device {device}: emulate.threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set once per process
        torch.set_num_interop_threads(1)
    if cpu_quota is None:
        return Emulation("threads", threads, None)
    if cpu_quota >= threads:
        # ``threads`` compute threads can never use more than ``threads`` cores, so such a quota
        # cannot slow the compute; it would only throttle the helper threads (transport, control)
        # whenever they run beside it, measured here as ~5% lost on a one-stage ResNet-18 run.
        note = f"quota {cpu_quota:g} >= {threads} thread(s): not binding, no cgroup"
        return Emulation("threads", threads, cpu_quota, note=note)
    if not (use_cgroup and cgroups_available()):
        return Emulation("threads", threads, cpu_quota)
    global _HELPER_CGROUP
    name = cgroup_name(run_id, device)
    helpers = _own_cpu_cgroup()
    cg = create_cpu_cgroup(name, cpu_quota, period_us=CFS_PERIOD_US, root=CGROUP_CPU_ROOT)
    try:
        # the calling (compute) thread and its intra-op pool only: the other threads that exist
        # already (communication, heartbeat, gloo) stay outside the quota
        (cg.path / "tasks").write_text(str(threading.get_native_id()))
        for tid in sorted(pool):
            (cg.path / "tasks").write_text(str(tid))
    except OSError as exc:
        remove_cpu_cgroup(cg, CGROUP_CPU_ROOT)
        raise CgroupUnavailableError(
            f"cannot move the compute thread into {cg.path}: {exc.strerror}"
        ) from None
    _HELPER_CGROUP = helpers
    inside = len((cg.path / "tasks").read_text().split())
    return Emulation("cgroup", threads, cpu_quota, name, quota_threads=inside)


def release(emu: Emulation) -> None:
    """Leave and remove this process's cgroup (best effort; called on worker exit)."""
    if emu.cgroup is not None:
        remove_cpu_cgroup(CGROUP_CPU_ROOT / emu.cgroup, CGROUP_CPU_ROOT)


def cleanup_stale(run_id: str) -> int:
    """Remove the cgroups of run ``run_id`` left behind by killed workers; returns the count."""
    if not CGROUP_CPU_ROOT.exists():
        return 0
    stale = list(CGROUP_CPU_ROOT.glob(f"{CGROUP_PREFIX}{run_id}-*"))
    for path in stale:
        remove_cpu_cgroup(path, CGROUP_CPU_ROOT)
    return len(stale)


def sweep_abandoned(min_age_s: float = 60.0, root: Path | None = None) -> list[str]:
    """Remove coinfer cgroups that no process uses any more and that are older than
    ``min_age_s``: left by workers that exited on their own after their coordinator was killed
    (its own clean-up never ran). The age keeps a group that a starting worker has just created,
    and not yet entered, out of reach. Returns the names removed."""
    base = CGROUP_CPU_ROOT if root is None else root
    if not base.exists():
        return []
    gone = []
    now = time.time()
    for path in base.glob(f"{CGROUP_PREFIX}*"):
        try:
            empty = not (path / "tasks").read_text().split()
            old = now - path.stat().st_mtime >= min_age_s
        except OSError:
            continue
        if empty and old:
            with contextlib.suppress(OSError):
                path.rmdir()
                gone.append(path.name)
    return gone


__all__ = [
    "Emulation",
    "apply",
    "cgroup_name",
    "cgroups_available",
    "cleanup_stale",
    "exempt_this_thread",
    "helper_cpu_s",
    "pack_cpus",
    "pin_to_cpu",
    "pin_to_cpus",
    "release",
    "start_intra_op_pool",
    "sweep_abandoned",
    "thread_ids",
]
