"""Measure candidate plans through one live session: the evaluator of a measured plan search.

A Bayesian search over plans (``coinfer.plan.search.bayes`` with ``evaluator=``) asks for the
objective of one candidate after another. Starting a pipeline per candidate would cost seconds
of process start-up each and measure that start-up too; instead one
:class:`~.session.Session` stays up, and each candidate is a hand-over
(:meth:`Session.switch`): its workers fork from the warm zygote beside the running ones and
take the stream over. One call of :class:`MeasuredEvaluator`:

1. waits until nothing is in flight, so the previous epoch drains at once and its workers do
   not share the CPUs with the candidate's;
2. if the candidate is not the running plan, switches to it and waits until the new epoch has
   taken over and the old one has left;
3. runs a closed loop that keeps ``2 x window`` requests outstanding (the source then always
   has one queued: the pipeline stays full), discards the first ``warmup`` results (the
   pipeline filling, cold caches, first transfers on new connections), then times at least ``min_requests`` results
   and at least ``min_time_s``. Throughput: period = wall time between the last warm-up result
   and the last timed one / results timed. Latency: one request at a time, the mean of their
   submit-to-result times.

The first call also runs one such loop untimed before its own: a fresh session is not yet in its
steady state, and the plan it starts on is usually the search's likeliest answer.

Each call is one noisy sample of the objective; :attr:`MeasuredEvaluator.records` keeps every
call (value, requests, wall time, hand-over time) and :meth:`MeasuredEvaluator.summary` the
mean and spread per configuration — the numbers the search's noise model sees.

The runtime does not plan: the search (and its import of ``coinfer.plan``) belongs to the
caller, which passes this object as the planner's evaluator.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.evaluate import evaluate
from ..core.plans import Objective, Plan, Sample, Stage
from ..errors import InputError, PeerError
from .session import Session

# Outstanding requests per schedule window in the throughput loop: with twice the window the
# source always has a request queued when one leaves, so the bottleneck never idles for want
# of input; more would only lengthen the tail waited for after each measurement.
OUTSTANDING_PER_WINDOW = 2
# How often the caller polls the session while a hand-over is under way (seconds).
POLL_S = 0.01


# Contiguous batches the timed results are cut into to estimate a measurement's own noise.
NOISE_BATCHES = 4


def batch_rel_sem(values: Sequence[float], batches: int = NOISE_BATCHES) -> float:
    """Relative standard error of the mean of ``values`` by batch means: cut them into
    ``batches`` contiguous runs, and the spread of the runs' means over ``sqrt(batches)``, over
    the mean. ``0.0`` with fewer than two values per batch.

    Why batches and not every value: a pipeline's inter-completion gaps are correlated (a slow
    result is followed by a quick one as the queue behind it drains), so the spread of single
    gaps overstates the noise of their mean; means of runs of them are nearly independent."""
    k = min(batches, len(values) // 2)
    if k < 2:
        return 0.0
    size = len(values) // k
    means = [statistics.fmean(values[i * size : (i + 1) * size]) for i in range(k)]
    mean = statistics.fmean(means)
    return statistics.stdev(means) / math.sqrt(k) / mean if mean > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Measurement:
    """One call: ``value_s`` is the period (throughput) or mean latency, in seconds."""

    stages: tuple[str, ...]
    value_s: float
    requests: int  # results timed (warm-up excluded)
    warmup: int
    wall_s: float  # time the timed results took
    switch_s: float  # hand-over to this plan (0 when it was already running)
    epoch: int
    started_s: float  # on the session's clock
    rel_sem: float = 0.0  # relative standard error within the measurement (batch means)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "value_s": self.value_s,
            "requests": self.requests,
            "warmup": self.warmup,
            "wall_s": self.wall_s,
            "switch_s": self.switch_s,
            "epoch": self.epoch,
            "started_s": self.started_s,
            "rel_sem": self.rel_sem,
        }


@dataclass
class MeasuredEvaluator:
    """Measures plans' stages on ``session`` (see the module docstring); call it with stages.

    Parameters
    ----------
    session : a started session whose instance the candidates are priced on.
    inputs : request inputs, reused round-robin (each a list of the model's input tensors).
    objective : ``"throughput"`` (the period) or ``"latency"``; energy is not measured.
    warmup : results discarded before timing (at least 1: the timing starts at the last of
        them); ``None`` = ``window + 2`` (the empty pipeline fills with the first window of
        requests; two more and it runs at its steady pace), 2 for latency.
    min_requests, min_time_s : each measurement times at least this many results and seconds
        (8 results: a full closed loop's completions are evenly spaced, so 8 intervals pin the
        period down; more would only lengthen a slow plan's measurement).
    max_requests : and at most this many (bounds a very fast plan's measurement).
    timeout_s : bound on a hand-over or a measurement.
    """

    session: Session
    inputs: Sequence[Sequence[torch.Tensor]]
    objective: Objective = "throughput"
    warmup: int | None = None
    min_requests: int = 8
    min_time_s: float = 1.0
    max_requests: int = 2_000
    timeout_s: float = 120.0
    log: Callable[[str], None] | None = None
    records: list[Measurement] = field(default_factory=list, init=False)
    _next_input: int = field(default=0, init=False, repr=False)
    _settled: bool = field(default=False, init=False, repr=False)  # the session warmed up

    def __post_init__(self) -> None:
        if self.objective not in ("throughput", "latency"):
            raise InputError(
                f"a measured search measures throughput or latency, not {self.objective!r}"
            )
        if not self.inputs:
            raise InputError("MeasuredEvaluator needs at least one request input")
        if self.min_requests < 1 or self.max_requests < self.min_requests:
            raise InputError(
                f"MeasuredEvaluator: min_requests={self.min_requests} must be >= 1 and <= "
                f"max_requests={self.max_requests}"
            )
        if not (self.min_time_s >= 0 and math.isfinite(self.min_time_s)):
            raise InputError(f"MeasuredEvaluator: min_time_s={self.min_time_s} must be >= 0")

    def __call__(self, stages: Sequence[Stage]) -> float:
        return self.sample(stages).value

    def sample(self, stages: Sequence[Stage]) -> Sample:
        """Measure ``stages`` once: the value and its within-measurement relative standard
        error (what a heteroscedastic search's noise model uses; see :func:`batch_rel_sem`)."""
        stages = tuple(stages)
        started = self.session.now()
        switch_s = self._switch_to(stages)
        window = max(1, self.session.window)
        latency = self.objective == "latency"
        default = 2 if latency else window + 2
        warm = max(1, default if self.warmup is None else self.warmup)
        outstanding = 1 if latency else OUTSTANDING_PER_WINDOW * window
        if not self._settled:
            # A fresh session's first second is not its steady state (first passes through
            # every stage, first transfers, the coordinator's own first requests): measured in
            # CI, the session's initial plan read 52 ms per request on its first measurement
            # and 0.6 ms on a later one. That plan is the cost model's best — the search's
            # likeliest answer — so its first figure is run once and thrown away.
            self._closed_loop(outstanding, warm, per_request=latency)
            self._settled = True
        value, n, wall, rel_sem = self._closed_loop(outstanding, warm, per_request=latency)
        rec = Measurement(
            tuple(str(s) for s in stages), value, n, warm, wall, switch_s,
            self.session.epoch, started, rel_sem,
        )  # fmt: skip
        self.records.append(rec)
        if self.log is not None:
            self.log(
                f"measured {' | '.join(rec.stages)}: {value * 1e3:.2f} ms "
                f"(±{rel_sem:.1%}, {n} requests in {wall:.2f} s, hand-over {switch_s:.2f} s)"
            )
        return Sample(value, rel_sem)

    # -- one measurement -------------------------------------------------------------------
    def _switch_to(self, stages: tuple[Stage, ...]) -> float:
        """Hand the stream over to ``stages`` and wait until the old epoch has left; returns
        the seconds it took (0 when ``stages`` is running already)."""
        s = self.session
        if s.plan.stages == stages:
            return 0.0
        instance = s.instance
        plan = Plan("measure", self.objective, stages, evaluate(instance, stages))
        t0 = time.perf_counter()
        before = len(s.handovers)
        s.switch(plan, instance, reason="measure")
        deadline = t0 + self.timeout_s
        while True:
            hs = s.handovers
            if len(hs) > before:
                h = hs[before]
                if h.error is not None:
                    raise PeerError(f"measuring {plan}: the hand-over failed: {h.error}")
                if h.drained_s is not None:
                    return time.perf_counter() - t0
            if time.perf_counter() > deadline:
                raise PeerError(f"measuring {plan}: no hand-over within {self.timeout_s:.0f} s")
            time.sleep(POLL_S)

    def _closed_loop(
        self, outstanding: int, warmup: int, per_request: bool = False
    ) -> tuple[float, int, float, float]:
        """Keep ``outstanding`` requests in flight until ``warmup`` results and the timed
        ones are done; returns (value, results timed, wall seconds timed, relative standard
        error of the value from :func:`batch_rel_sem`). ``per_request``:
        the value is the mean submit-to-result time, else wall time / results timed (timed
        from the last warm-up result, so ``warmup >= 1``)."""
        slots = threading.Semaphore(outstanding)
        lock = threading.Lock()
        done_at: list[float] = []  # completion times, in order (results arrive in order)
        latency: list[float] = []
        errors: list[BaseException] = []
        finished = threading.Event()

        def on_done(fut: Any, submitted: float) -> None:
            now = time.perf_counter()
            with lock:
                exc = fut.exception()
                if exc is not None:
                    errors.append(exc)
                else:
                    done_at.append(now)
                    latency.append(now - submitted)
                if errors or self._timed_end(done_at, warmup) is not None:
                    finished.set()
            slots.release()

        futures = []
        deadline = time.perf_counter() + self.timeout_s
        while not finished.is_set():
            if time.perf_counter() > deadline:
                raise PeerError(
                    f"measuring {self.session.plan}: not done within {self.timeout_s:.0f} s"
                )
            if not slots.acquire(timeout=0.05) or finished.is_set():
                continue
            xs = self.inputs[self._next_input % len(self.inputs)]
            self._next_input += 1
            t_submit = time.perf_counter()
            fut = self.session.submit(list(xs))
            fut.add_done_callback(lambda f, t=t_submit: on_done(f, t))
            futures.append(fut)
        for f in futures:  # the tail: nothing may be in flight when the next plan takes over
            f.exception(timeout=self.timeout_s)
        if errors:
            raise PeerError(f"measuring {self.session.plan}: {errors[0]}")
        with lock:
            end = self._timed_end(done_at, warmup)
            assert end is not None
            n = end - warmup
            wall = done_at[end - 1] - done_at[warmup - 1]
            if per_request:
                lat = latency[warmup:end]
                return statistics.fmean(lat), n, wall, batch_rel_sem(lat)
            gaps = [
                b - a
                for a, b in zip(done_at[warmup - 1 : end - 1], done_at[warmup:end], strict=True)
            ]
            return wall / n, n, wall, batch_rel_sem(gaps)

    def _timed_end(self, done_at: Sequence[float], warmup: int) -> int | None:
        """Index just past the result that completes the measurement (at least
        ``min_requests`` results and ``min_time_s`` after the last warm-up one, or
        ``max_requests``), ``None`` while it is not complete. Later results are the tail,
        completed while nothing new was submitted: not a full pipeline, not timed."""
        first = warmup + self.min_requests
        if len(done_at) < first:
            return None
        start = done_at[warmup - 1]
        for i in range(first, len(done_at) + 1):
            if i - warmup >= self.max_requests or done_at[i - 1] - start >= self.min_time_s:
                return i
        return None

    # -- what was measured -----------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """Per configuration (in first-measured order): measurements, mean, sample standard
        deviation and relative spread of the values."""
        groups: dict[tuple[str, ...], list[float]] = {}
        for r in self.records:
            groups.setdefault(r.stages, []).append(r.value_s)
        out = []
        for stages, vals in groups.items():
            mean = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out.append(
                {"stages": list(stages), "n": len(vals), "mean_s": mean, "std_s": sd,
                 "rel_spread": sd / mean if mean > 0 else 0.0, "values_s": vals}
            )  # fmt: skip
        return out


__all__ = ["MeasuredEvaluator", "Measurement"]
