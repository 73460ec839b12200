"""Keep freed memory inside the process, so a piece costs the same CPU whatever ran before it.

Why: glibc hands large freed blocks back to the kernel (``munmap`` of blocks above its mmap
threshold, trimming the top of the heap above its trim threshold), and the next request gets
fresh pages that the kernel must fault in and zero again: CPU time charged to the compute
thread, inside the device's quota. How much depends on what the process allocated and freed
before, so the same pieces cost different CPU in different plans. Measured on the testbed with
MobileNetV2 (one thread per device, CPU time per request from the workers' own clocks):

- pieces 0-15 took 11.5-12.0 ms of CPU on d1, d2 and d3 in the calibration probes, and 6.7 ms on
  d0, whose input is created in-process; with the thresholds below, 6.1-7.2 ms on all four
  (``benchmarks/results/allocator.md``);
- in an earlier check the whole model alone on d2 took 30.5 ms of CPU against 17.0 on d1; with
  them, 17.8 on d2;
- the probes' throughput rose from 31.5, 25.6 and 16.5 req/s to 43.9, 43.3 and 27.6.

A calibration fitted these costs per device and piece range, then priced plans whose cuts and
neighbours allocate differently; most of what looked like co-location in the fidelity runs was
this. The cost is resident memory: a worker keeps its peak, which a worker serving one stage
for its whole life reaches on every request anyway.

Every process that measures or serves pieces calls :func:`keep_freed_memory` before it
computes: runtime workers (:func:`coinfer.runtime.emulation.apply`) and the profiler's
measurement (:func:`coinfer.profile.profiler.measure`), so profiles and runs allocate alike.
``COINFER_MALLOC=default`` in the environment leaves glibc's defaults (workers inherit it): the
A/B baseline of ``benchmarks/bench_allocator.py``.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB): every
# block below it comes from the heap, so only a single tensor above 32 MiB is mapped afresh.
MMAP_THRESHOLD_BYTES = 32 * 2**20
# Never trim the top of the heap back to the kernel (mallopt takes a C int).
TRIM_THRESHOLD_BYTES = 2**31 - 1
# Set to "default" to keep glibc's own thresholds (a measured baseline, never the normal run).
ENV_SWITCH = "COINFER_MALLOC"

_STATE: str | None = None


def is_glibc() -> bool:
    """True on Linux with glibc, the only C library whose ``mallopt`` this module knows."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> str:
    """Set glibc's thresholds so freed blocks stay in the process (see the module docstring);
    returns what was done, for the worker's report. Idempotent; a no-op (saying so) on a C
    library without ``mallopt``."""
    global _STATE
    if _STATE is not None:
        return _STATE
    if os.environ.get(ENV_SWITCH) == "default":
        _STATE = f"unchanged ({ENV_SWITCH}=default)"
        return _STATE
    if not is_glibc():
        _STATE = f"unchanged (not glibc: {platform.system()} {platform.libc_ver()[0] or '?'})"
        return _STATE
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    except (OSError, AttributeError) as exc:
        _STATE = f"unchanged (mallopt unavailable: {exc})"
        return _STATE
    _STATE = "kept (glibc mmap threshold 32 MiB, no trim)" if ok else "unchanged (mallopt refused)"
    return _STATE


__all__ = ["is_glibc", "keep_freed_memory"]
