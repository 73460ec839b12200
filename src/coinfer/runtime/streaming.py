"""A worker's view of a streaming session: work that repeats, and an end learned late.

A finite run hands every worker its whole action list. A session cannot: requests keep arriving
and nobody knows how many there will be. But a plan's work is periodic — request ``r`` visits
the same devices as request ``r - cycle`` (replicas are picked by a weighted round-robin that
repeats every ``cycle`` requests) — so the setup carries one cycle of actions and relay steps,
and each worker unrolls it lazily (:func:`unrolled`), stopping at the session's end once the
coordinator's ``End`` has said where that is (:class:`StreamEnd`).

Inputs of a session reach the source as ``Submit`` messages on the control channel; they wait in
:class:`Submissions` until the source's client releases them (at most ``window`` in flight).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from ..errors import PeerError
from .transport import WireTensorSpec

T = TypeVar("T")

# A session's data-plane waits have no useful bound of their own: a worker may idle for hours
# between requests. Liveness is the control plane's job (heartbeats both ways, the coordinator's
# stall watchdog), so these waits are only capped at a week.
STREAM_WAIT_S = 7 * 24 * 3600.0
# Trace events a session's worker keeps of each kind (the most recent ones): a session of any
# length has bounded memory, and its report shows the last stretch of the stream (measured: with
# 20,000 the workers' memory still grew 4 % between requests 1,000 and 10,000, filling the buffers).
STREAM_TRACE_KEEP = 4096


class StreamEnd:
    """How many requests the session has, once known (``None`` until then); thread-safe."""

    def __init__(self, limit: int | None = None):
        self._limit = limit
        self._cond = threading.Condition()

    @property
    def limit(self) -> int | None:
        with self._cond:
            return self._limit

    def set(self, limit: int) -> None:
        with self._cond:
            if self._limit is None:
                self._limit = limit
            self._cond.notify_all()

    def admits(self, request: int) -> bool:
        """``request`` may still come: the end is unknown or lies beyond it."""
        limit = self.limit
        return limit is None or request < limit

    def wait(self, timeout_s: float) -> None:
        with self._cond:
            if self._limit is None:
                self._cond.wait(timeout_s)


def unrolled(
    items: Sequence[T],
    cycle: int,
    request_of: Callable[[T], int],
    shifted: Callable[[T, int], T],
    end: StreamEnd,
) -> Iterator[T]:
    """``items`` (work for requests ``0..cycle-1``, request-major) repeated with request offsets
    ``cycle, 2*cycle, ...`` while ``end`` admits the request; ``cycle = 0`` is a finite run
    (``items`` once, as they are)."""
    if not items:
        return
    offset = 0
    while True:
        for it in items:
            if not end.admits(request_of(it) + offset):
                return
            yield it if offset == 0 else shifted(it, offset)
        if cycle <= 0:
            return
        offset += cycle


class Submissions:
    """A session's inputs waiting at the source, by message id (they arrive in order)."""

    def __init__(self, contract: Sequence[WireTensorSpec], end: StreamEnd):
        self.contract = list(contract)
        self.end = end
        self._items: dict[int, list[torch.Tensor]] = {}
        self._next = 0
        self._cond = threading.Condition()

    def add(self, message: int, blob: bytes) -> None:
        """Take one ``Submit``; out of order, or inputs that break the first cut's contract,
        are the coordinator's fault: :class:`PeerError`."""
        from safetensors.torch import load

        if message != self._next:
            raise PeerError(f"submitted message {message}, expected {self._next}")
        data = load(blob)
        tensors = [data.get(f"t{j}") for j in range(len(self.contract))]
        if len(data) != len(self.contract) or any(t is None for t in tensors):
            raise PeerError(
                f"submitted message {message}: {len(data)} tensors, the model takes "
                f"{len(self.contract)}"
            )
        for j, (t, m) in enumerate(zip(tensors, self.contract, strict=True)):
            assert t is not None
            m.check(t, f"submitted message {message} input {j}")
        with self._cond:
            self._items[message] = [t for t in tensors if t is not None]
            self._next += 1
            self._cond.notify_all()

    def take(self, message: int) -> list[torch.Tensor] | None:
        """Message ``message``'s inputs once submitted; ``None`` when the session ends first."""
        with self._cond:
            while message not in self._items:
                if not self.end.admits(message):
                    return None
                self._cond.wait(0.1)
            return self._items.pop(message)


__all__ = [
    "STREAM_TRACE_KEEP",
    "STREAM_WAIT_S",
    "StreamEnd",
    "Submissions",
    "unrolled",
]
