"""Shared media on the emulated testbed: one reservation clock per medium, across processes.

Each device is its own process, so a shared medium (a Wi-Fi cell) cannot be a lock inside one
of them. Its state is one number — the time the medium is next free — in a small file that every
member process maps, updated under ``flock``. A sender over the medium reserves ``latency +
bytes / bandwidth`` from ``max(now, free_at)`` and sleeps until its reservation ends before the
bytes go out: transfers in every direction take turns, first come first served, as the cost
model and the simulator charge them (one resource per medium, FIFO, a hop holds it for its
whole ``L + x / B``).

The file lives in the machine's temp directory, named by the run and a digest of the medium's
name, so processes of one run on one machine share it; :func:`cleanup` removes a run's files.
Workers on other machines cannot share it: there the network itself (or ``--netns``) must be
the shared medium.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import mmap
import os
import struct
import tempfile
import time

_FMT = "d"  # the time (seconds since the epoch) at which the medium is next free
_SIZE = struct.calcsize(_FMT)


def clock_path(run_id: str, medium: str) -> str:
    """Where the clock of ``medium`` lives for run ``run_id`` (a file name safe for any name)."""
    digest = hashlib.sha256(medium.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"coinfer-medium-{run_id}-{digest}")


class MediumClock:
    """First-come-first-served reservations of one shared medium (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size < _SIZE:  # the first member to arrive initialises it
                os.write(self._fd, struct.pack(_FMT, 0.0))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._map = mmap.mmap(self._fd, _SIZE)

    def reserve(self, duration_s: float) -> float:
        """Book the medium for ``duration_s`` seconds as soon as it is free; the start time."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            (free_at,) = struct.unpack_from(_FMT, self._map, 0)
            start = max(time.time(), free_at)
            struct.pack_into(_FMT, self._map, 0, start + duration_s)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return start

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def cleanup(run_id: str) -> None:
    """Remove every medium clock file of run ``run_id``."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"coinfer-medium-{run_id}-*")):
        with contextlib.suppress(OSError):
            os.unlink(path)


__all__ = ["MediumClock", "cleanup", "clock_path"]
