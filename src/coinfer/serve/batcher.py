"""Dynamic batching: requests of any size in, the session's fixed micro-batches out.

A session is made for one micro-batch size ``mb`` (its stage contracts are fixed shapes), while
HTTP requests carry any number of samples. The batcher keeps one queue of samples, in arrival
order, and cuts it into micro-batches of exactly ``mb``:

- a request's samples may span several micro-batches, and a micro-batch may hold samples of
  several requests; a request resolves when all its samples are back, in its own order;
- a micro-batch is sent when ``mb`` samples wait, or when the oldest has waited ``wait_s``
  (then it is padded with zeros and the padding's outputs are dropped) — but only while the
  session holds fewer than ``max_inflight`` micro-batches: when the pipeline is busy, waiting
  requests pile up into full micro-batches instead of padded ones (dynamic batching);
- the queue holds at most ``capacity`` samples; beyond it :class:`QueueFull` says when to
  retry (the queue's samples over the measured throughput).

Exactness. Every micro-batch has exactly ``mb`` rows, so each sample goes through the same
kernels as in an unsplit run at batch ``mb``: on CPU a row's result does not depend on which
row it is in or what the other rows hold (checked for the zoo MLP), so a request's outputs
are bit-identical to the unsplit model's at that batch size. (Against another batch size
BLAS may round differently, at the last bit.)

Threads: one batching thread forms and submits micro-batches; the session's thread resolves
them (:meth:`_finished` must stay short: it only slices and hands out). Everything shared is
under one condition variable.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..errors import CoinferError, PeerError

# Batch wait without an SLO: short against a request's round trip on loopback (~1–2 ms of
# HTTP handling) yet long enough to catch a burst of concurrent clients.
DEFAULT_WAIT_S = 0.005
# With an SLO the wait is half its slack (the other half absorbs queueing behind micro-batches
# already in the pipeline), capped here so a generous SLO does not make a lone request idle.
MAX_WAIT_S = 0.05
# Throughput behind the retry hint: completions of the last this many seconds.
RATE_WINDOW_S = 10.0
# Smoothing of the measured micro-batch latency (submission to result) for the SLO's slack.
LATENCY_EWMA = 0.2


class SessionLike(Protocol):
    def submit(self, inputs: Sequence[torch.Tensor]) -> Future[list[torch.Tensor]]: ...


class QueueFull(CoinferError):
    """The queue cannot take the request now; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(CoinferError):
    """The server cannot serve: it is shutting down, or its session failed (the reason)."""


@dataclass(eq=False)
class _Waiting:
    inputs: list[torch.Tensor]
    n: int
    future: Future[list[torch.Tensor]]
    arrived_s: float
    taken: int = 0  # samples already put into micro-batches
    done: int = 0
    parts: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # start -> outputs


@dataclass(frozen=True)
class _Segment:
    req: _Waiting
    start: int
    count: int


def batch_wait_s(slo_s: float | None, latency_s: float | None) -> float:
    """How long a partial micro-batch waits for company: :data:`DEFAULT_WAIT_S` without an
    SLO; with one, half of what the SLO leaves after the measured micro-batch latency (0 when
    none is left), at most :data:`MAX_WAIT_S`."""
    if slo_s is None:
        return DEFAULT_WAIT_S
    slack = slo_s - (latency_s or 0.0)
    return min(max(slack / 2, 0.0), MAX_WAIT_S)


def _resolve(fut: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Set a future once; a future already done (failed by an earlier part) is left alone."""
    if fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except InvalidStateError:
        pass


class Batcher:
    """Groups requests into the session's micro-batches (see the module docstring).

    Parameters
    ----------
    session
        Anything with ``submit(list of tensors) -> Future[list of tensors]`` (a
        :class:`~coinfer.runtime.session.Session`).
    microbatch
        The session's micro-batch size ``mb``.
    contract
        Per-sample shape and dtype of each input (for the padding).
    capacity
        Samples the queue holds at most (admitted, not yet in a micro-batch).
    max_inflight
        Micro-batches submitted to the session and not yet back, at most.
    wait_s, slo_s
        A fixed batch wait; or ``None`` and an SLO to derive it from (:func:`batch_wait_s`).
    expected_rate
        Samples per second assumed for the retry hint before any has completed.
    """

    def __init__(
        self,
        session: SessionLike,
        microbatch: int,
        contract: Sequence[Any],
        *,
        capacity: int,
        max_inflight: int,
        wait_s: float | None = None,
        slo_s: float | None = None,
        expected_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if microbatch < 1 or capacity < 1 or max_inflight < 1:
            raise ValueError("microbatch, capacity and max_inflight must be >= 1")
        self.session = session
        self.microbatch = microbatch
        self.contract = tuple(contract)
        self.capacity = capacity
        self.max_inflight = max_inflight
        self.fixed_wait_s = wait_s
        self.slo_s = slo_s
        self.expected_rate = expected_rate
        self.clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Waiting] = deque()
        self._queued = 0  # samples waiting (not yet in a micro-batch)
        self._inflight = 0
        self._closing = False
        self._stopped = False
        self.failure: str | None = None  # the session's failure, once one is seen
        self._done_log: deque[tuple[float, int]] = deque()  # (time, samples) of completions
        self._first_done_s: float | None = None
        self.latency_s: float | None = None  # EWMA of micro-batch submission -> result
        # counters, read by the metrics
        self.microbatches_full = 0
        self.microbatches_padded = 0
        self.padding_samples = 0
        self.samples_done = 0
        self._offered_log: deque[tuple[float, int]] = deque()  # (time, samples) offered
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    # -- the request side -----------------------------------------------------------------
    def submit(self, inputs: Sequence[torch.Tensor]) -> Future[list[torch.Tensor]]:
        """Queue one request (every input with the same batch size ``n >= 1``); its future
        resolves with its outputs (batch ``n``) or raises. Raises :class:`QueueFull` or
        :class:`Unavailable` at once when the request cannot be taken."""
        n = int(inputs[0].shape[0])
        with self._cond:
            self._offered_log.append((self.clock(), n))
        if n > self.capacity:
            raise QueueFull(f"{n} samples exceed the queue's capacity of {self.capacity}", math.inf)
        fut: Future[list[torch.Tensor]] = Future()
        with self._cond:
            if self._closing:
                raise Unavailable("the server is shutting down")
            if self.failure is not None:
                raise Unavailable(self.failure)
            if self._queued + n > self.capacity:
                raise QueueFull(
                    f"queue full ({self._queued} of {self.capacity} samples waiting)",
                    self._retry_after_locked(n),
                )
            self._queue.append(_Waiting(list(inputs), n, fut, self.clock()))
            self._queued += n
            self._cond.notify_all()
        return fut

    def set_max_inflight(self, n: int) -> None:
        """Feed up to ``n`` micro-batches into the session (its plan changed window)."""
        with self._cond:
            self.max_inflight = max(int(n), 1)
            self._cond.notify_all()

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return self._inflight

    def wait_s(self) -> float:
        """The current batch wait (fixed, or from the SLO and the measured latency)."""
        if self.fixed_wait_s is not None:
            return self.fixed_wait_s
        return batch_wait_s(self.slo_s, self.latency_s)

    def throughput(self) -> tuple[float, float]:
        """``(samples/s, micro-batches/s)`` completed over the last :data:`RATE_WINDOW_S`
        (or since the first completion, when that is more recent)."""
        with self._cond:
            return self._rates_locked(self.clock())

    def offered_rate(self, window_s: float) -> float:
        """Samples/s offered (taken or refused) over the last ``window_s``: the demand, which
        the completions cannot show once the queue is full."""
        with self._cond:
            now = self.clock()
            while self._offered_log and self._offered_log[0][0] < now - max(
                window_s, RATE_WINDOW_S
            ):
                self._offered_log.popleft()
            return sum(k for t, k in self._offered_log if t >= now - window_s) / window_s

    def _rates_locked(self, now: float) -> tuple[float, float]:
        while self._done_log and self._done_log[0][0] < now - RATE_WINDOW_S:
            self._done_log.popleft()
        if self._first_done_s is None or not self._done_log:
            return 0.0, 0.0
        span = min(RATE_WINDOW_S, max(now - self._first_done_s, 1e-3))
        return sum(k for _, k in self._done_log) / span, len(self._done_log) / span

    def _retry_after_locked(self, n: int) -> float:
        """Seconds until ``n`` more samples would fit: the excess over the measured rate
        (the expected one before anything completed; 1 s when neither is known)."""
        rate = self._rates_locked(self.clock())[0] or (self.expected_rate or 0.0)
        if rate <= 0:
            return 1.0
        return max((self._queued + n - self.capacity) / rate, 0.05)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, send what waits (partial micro-batches at once) and wait up
        to ``timeout_s`` for every admitted request to finish; the rest fail."""
        deadline = self.clock() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._inflight) and self.clock() < deadline:
                self._cond.wait(0.05)
            self._stopped = True
            left = list(self._queue)
            self._queue.clear()
            self._queued = 0
            self._cond.notify_all()
        for req in left:
            _resolve(req.future, exc=Unavailable("the server shut down before this request ran"))
        self._thread.join(1.0)

    # -- the batching thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                segments = self._next_locked()
                if segments is None:
                    return
                self._inflight += 1
            self._send(segments)

    def _next_locked(self) -> list[_Segment] | None:
        """Wait for the next micro-batch to send (``None``: stopped)."""
        while True:
            if self._stopped:
                return None
            if self._queue and self._inflight < self.max_inflight:
                if self._queued >= self.microbatch or self._closing:
                    return self._take_locked()
                left = self._queue[0].arrived_s + self.wait_s() - self.clock()
                if left <= 0:
                    return self._take_locked()
                self._cond.wait(left)
            else:
                self._cond.wait(0.1)

    def _take_locked(self) -> list[_Segment]:
        segments: list[_Segment] = []
        room = self.microbatch
        while room and self._queue:
            req = self._queue[0]
            if req.future.done():  # failed by an earlier part: do not compute the rest
                self._queued -= req.n - req.taken
                self._queue.popleft()
                continue
            k = min(room, req.n - req.taken)
            segments.append(_Segment(req, req.taken, k))
            req.taken += k
            self._queued -= k
            room -= k
            if req.taken == req.n:
                self._queue.popleft()
        return segments

    def _send(self, segments: list[_Segment]) -> None:
        real = sum(s.count for s in segments)
        pad = self.microbatch - real
        batch = []
        for j in range(len(self.contract)):
            parts = [s.req.inputs[j][s.start : s.start + s.count] for s in segments]
            if pad:
                spec = self.contract[j]
                parts.append(torch.zeros((pad, *spec.shape), dtype=spec.dtype))
            batch.append(torch.cat(parts) if len(parts) > 1 else parts[0].contiguous())
        if pad:
            self.microbatches_padded += 1
            self.padding_samples += pad
        else:
            self.microbatches_full += 1
        sent = self.clock()
        try:
            fut = self.session.submit(batch)
        except Exception as exc:
            self._finished_with(segments, sent, None, exc)
            return
        fut.add_done_callback(lambda f: self._finished(segments, sent, f))

    def _finished(self, segments: list[_Segment], sent: float, fut: Future[Any]) -> None:
        exc = fut.exception()
        self._finished_with(segments, sent, None if exc else fut.result(), exc)

    def _finished_with(
        self,
        segments: list[_Segment],
        sent: float,
        outputs: list[torch.Tensor] | None,
        exc: BaseException | None,
    ) -> None:
        now = self.clock()
        broken: str | None = None
        if exc is None and outputs is not None:
            bad = [tuple(o.shape) for o in outputs if o.dim() == 0 or o.shape[0] != self.microbatch]
            if bad:
                exc = Unavailable(
                    f"the model's outputs {bad} are not batch-first at the micro-batch size "
                    f"{self.microbatch}: cannot split them between requests"
                )
        if exc is not None:
            if isinstance(exc, PeerError):  # the session raises it only when it cannot go on
                exc = Unavailable(f"the session failed: {exc}")
                broken = str(exc)
            elif not isinstance(exc, Unavailable):
                exc = Unavailable(f"the session refused the micro-batch: {exc}")
            for s in segments:
                _resolve(s.req.future, exc=exc)
        else:
            assert outputs is not None
            offset = 0
            for s in segments:
                req = s.req
                req.parts[s.start] = [o[offset : offset + s.count] for o in outputs]
                offset += s.count
                req.done += s.count
                if req.done == req.n:
                    starts = sorted(req.parts)
                    result = [
                        torch.cat([req.parts[a][j] for a in starts]) if len(starts) > 1
                        else req.parts[starts[0]][j].clone()
                        for j in range(len(outputs))
                    ]  # fmt: skip
                    req.parts.clear()
                    _resolve(req.future, result)
        with self._cond:
            self._inflight -= 1
            if exc is None:
                real = sum(s.count for s in segments)
                self.samples_done += real
                self._done_log.append((now, real))
                if self._first_done_s is None:
                    self._first_done_s = now
                lat = now - sent
                self.latency_s = (
                    lat if self.latency_s is None
                    else (1 - LATENCY_EWMA) * self.latency_s + LATENCY_EWMA * lat
                )  # fmt: skip
            elif broken is not None and self.failure is None:
                self.failure = broken
            self._cond.notify_all()


__all__ = [
    "DEFAULT_WAIT_S",
    "MAX_WAIT_S",
    "Batcher",
    "QueueFull",
    "Unavailable",
    "batch_wait_s",
]
