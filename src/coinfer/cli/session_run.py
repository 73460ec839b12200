"""``coinfer run --arrivals/--duration/--inject``: a stream of requests through a live session.

The CLI side of :class:`coinfer.runtime.Session`: it makes the requests (deterministic inputs),
submits them on the chosen arrival process, injects the asked-for faults at their times, gives
the session a ``replan`` that re-plans with the same planner over the surviving devices, checks
a sample of outputs against the unsplit model, and reports what happened.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

# Outputs compared with the unsplit model: every request up to this many, then a spread sample
# (each check runs the whole model in the coordinator, which shares the testbed's CPUs).
MAX_CHECKED = 64


@dataclass(frozen=True)
class Arrivals:
    """When requests are submitted: ``closed`` (keep the pipeline full), ``poisson`` at
    ``rate`` per second, or the times of a ``trace`` file (seconds from the start)."""

    kind: str
    rate: float | None = None
    times: tuple[float, ...] = ()

    def schedule(self, n: int | None, duration_s: float | None, seed: int) -> list[float] | None:
        """Submission times (``None`` = closed loop), bounded by ``n`` and ``duration_s``."""
        if self.kind == "closed":
            return None
        if self.kind == "trace":
            times = [t for t in self.times if duration_s is None or t <= duration_s]
            return times[:n] if n is not None else times
        assert self.rate is not None
        rng = random.Random(seed)
        out: list[float] = []
        t = 0.0
        while n is None or len(out) < n:
            t += rng.expovariate(self.rate)
            if duration_s is not None and t > duration_s:
                break
            out.append(t)
        return out


def parse_arrivals(spec: str) -> Arrivals:
    """``closed`` | ``poisson:RATE`` | ``trace:FILE`` -> :class:`Arrivals` (one-line errors)."""
    kind, _, arg = spec.partition(":")
    if kind == "closed" and not arg:
        return Arrivals("closed")
    if kind == "poisson":
        try:
            rate = float(arg)
        except ValueError:
            rate = math.nan
        if not (rate > 0 and math.isfinite(rate)):
            raise InputError(f"--arrivals {spec!r}: poisson needs a rate > 0 per second")
        return Arrivals("poisson", rate=rate)
    if kind == "trace" and arg:
        from ..simulate.sim import load_arrivals

        if not Path(arg).is_file():
            raise InputError(f"--arrivals {spec!r}: no such file {arg!r}")
        times = load_arrivals(arg)
        if not times:
            raise InputError(f"--arrivals {spec!r}: the trace has no arrival times")
        if any(b < a for a, b in itertools.pairwise(times)) or times[0] < 0:
            raise InputError(f"--arrivals {spec!r}: times must be >= 0 and non-decreasing")
        return Arrivals("trace", times=tuple(times))
    raise InputError(f"--arrivals must be closed, poisson:RATE or trace:FILE, got {spec!r}")


@dataclass(frozen=True)
class Fault:
    kind: str  # "kill" | "stop"
    device: str
    at_s: float


_FAULT = re.compile(r"^(kill|stop|admit):([^@\s]+)@([0-9.]+)$")


def parse_fault(spec: str, devices: Sequence[str]) -> Fault:
    """``kill:DEVICE@SECONDS`` / ``stop:DEVICE@SECONDS`` / ``admit:DEVICE@SECONDS`` (take a
    device back in: re-plan with it and hand the stream over) -> :class:`Fault`."""
    m = _FAULT.match(spec.strip())
    if not m:
        raise InputError(
            f"--inject must look like kill:DEVICE@SECONDS, stop:DEVICE@SECONDS or "
            f"admit:DEVICE@SECONDS, got {spec!r}"
        )
    kind, device, at = m.groups()
    if device not in devices:
        raise InputError(
            f"--inject {spec!r}: unknown device {device!r} (devices: {', '.join(devices)})"
        )
    try:
        at_s = float(at)
    except ValueError:
        at_s = math.nan
    if not (at_s >= 0 and math.isfinite(at_s)):
        raise InputError(f"--inject {spec!r}: the time must be a number of seconds >= 0")
    return Fault(kind, device, at_s)


def request_inputs(
    example: Sequence[torch.Tensor], index: int, microbatch: int, seed: int
) -> list[torch.Tensor]:
    """Request ``index``'s inputs: ``microbatch`` samples, the same for the same seed."""
    from ..runtime.prepare import make_inputs

    samples = make_inputs(tuple(example), microbatch, seed * 1_000_003 + index)
    return [torch.cat([s[j] for s in samples]) for j in range(len(example))]


def make_planner(
    algo: str, objective: str, *, live: bool = False
) -> Callable[[Any], tuple[Any, Any]]:
    """``planner(instance) -> (plan with algo, that instance)``: what live re-planning calls
    with its belief (``live``), and fail-over (:func:`make_replan`) with the survivors.

    A live planner runs twice a second, so ``default`` means the fast exact dp there
    (:data:`~coinfer.plan.registry.REPLAN_DEFAULT`), not the slower default that adds replicas."""
    from .. import plan as plan_mod
    from ..plan.registry import REPLAN_DEFAULT

    name = REPLAN_DEFAULT if live and algo.strip().lower() == "default" else algo

    def planner(inst: Any) -> tuple[Any, Any]:
        return plan_mod.plan(inst, name, objective), inst

    return planner


def make_replan(
    instance: Any, algo: str, objective: str
) -> Callable[[tuple[str, ...]], tuple[Any, Any]]:
    """A ``replan(alive)`` that plans with ``algo`` over the surviving devices of ``instance``."""
    from ..core.instance import surviving

    planner = make_planner(algo, objective)
    return lambda alive: planner(surviving(instance, alive))


def _after_replan(measured: dict[str, Any], report: Any, session: Any, microbatch: int) -> None:
    """Throughput once the last live re-plan's epoch ran (its first 2 s left out), beside what
    the planner predicted for that plan on the belief it was chosen with."""
    from ..core.evaluate import evaluate

    done = [r for r in report.replans if r.epoch >= 0]
    if not done:
        return
    last = done[-1]
    switched = next((h.switched_s for h in report.handovers if h.epoch == last.epoch), None)
    end = max(report.done_s) if report.done_s else 0.0
    if switched is None or end <= switched + 4.0:
        return
    plan_after, inst_after = session.priced(last.epoch)
    measured["throughput_after_replan_rps"] = report.throughput_rps(switched + 2.0, end)
    measured["predicted_after_replan_rps"] = (
        evaluate(inst_after, plan_after.stages).throughput_rps * microbatch
    )


def run_stream(
    model: str,
    cluster: Any,
    instance: Any,
    plan: Any,
    *,
    arrivals: Arrivals,
    requests: int | None,
    duration_s: float | None,
    faults: Sequence[Fault],
    microbatch: int,
    input_shape: tuple[int, ...] | None,
    partition: str,
    max_pieces: int | None,
    timeout_s: float,
    algo: str,
    objective: str,
    netns: bool,
    check: bool,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    telemetry_path: str | None = None,
    adapt: bool = False,
) -> dict[str, Any]:
    """Stream requests through a session; returns the JSON-ready ``measured`` block. With
    ``adapt`` an :class:`~coinfer.runtime.adapt.Adapter` re-plans it live with ``algo``."""
    from ..core.evaluate import evaluate
    from ..runtime.session import Session
    from ..zoo import load_model

    say = log or (lambda _m: None)
    torch.manual_seed(seed)
    ref_model, example = load_model(model, input_shape)
    if requests is None and duration_s is None:
        raise InputError("a stream needs --requests or --duration")
    times = arrivals.schedule(requests, duration_s, seed)
    replan = make_replan(instance, algo, objective)
    kept: dict[int, list[torch.Tensor]] = {}
    total = requests if requests is not None else (len(times) if times is not None else None)
    # a known count: a spread sample of MAX_CHECKED; an open-ended stream: every 8th, at most
    # 2 x MAX_CHECKED (each kept request holds its inputs until the end)
    stride = 8 if total is None else max(1, total // MAX_CHECKED)
    results: dict[int, list[torch.Tensor]] = {}

    from ..runtime.adapt import PROBE_S, Adapter

    session = Session(
        model, cluster, plan, microbatch=microbatch, input_shape=input_shape, instance=instance,
        replan=replan, netns=netns, timeout_s=timeout_s, partition=partition,
        max_pieces=max_pieces, log=say, telemetry_path=telemetry_path,
        probe_s=PROBE_S if adapt else 0.0,
    )  # fmt: skip
    session.start()
    adapter = None
    if adapt:
        adapter = Adapter(session, make_planner(algo, objective, live=True), log=say).start()
    try:
        t0 = time.monotonic()
        start_s = session.now()
        timers = [threading.Timer(f.at_s, _inject, args=(session, f, say)) for f in faults]
        for t in timers:
            t.daemon = True
            t.start()
        window = session.window
        outstanding = threading.Semaphore(4 * window)
        i = 0
        while True:
            now = time.monotonic() - t0
            if requests is not None and i >= requests:
                break
            if times is not None:
                if i >= len(times):
                    break
                if times[i] > now:
                    time.sleep(min(times[i] - now, 0.05))
                    continue
            elif duration_s is not None and now >= duration_s:
                break
            if times is None and not _acquire(outstanding, t0, duration_s):
                break
            xs = request_inputs(example, i, microbatch, seed)
            fut = session.submit(xs)
            if check and i % stride == 0 and len(kept) < 2 * MAX_CHECKED:
                kept[i] = xs
                fut.add_done_callback(
                    lambda f, i=i: results.__setitem__(i, f.result()) if not f.exception() else None
                )
            if times is None:
                fut.add_done_callback(lambda _f: outstanding.release())
            i += 1  # the future is not kept: a stream of any length holds only its sample
        for t in timers:
            t.cancel()
        if adapter is not None:
            adapter.stop()
    except BaseException:
        if adapter is not None:
            adapter.stop()
        session.abort()
        raise
    report = session.close()
    measured = report.to_dict()
    measured["start_s"] = start_s
    if adapter is not None:
        measured["adapt_policy"] = adapter.policy.to_dict()
        measured["adapt_checks"] = adapter.checks[-2000:]
        _after_replan(measured, report, session, microbatch)
    # throughput after the last recovery, beside the planner's prediction for what is left
    if report.recoveries and report.recoveries[0].fault_s is not None:
        # the same plan before its first fault (after 2 s of warm-up): how far the prediction
        # was off before anything failed
        first_fault = report.recoveries[0].fault_s
        if first_fault > start_s + 4.0:
            measured["throughput_before_fault_rps"] = report.throughput_rps(
                start_s + 2.0, first_fault
            )
    if report.recoveries and report.recoveries[-1].first_result_s is not None:
        rec = report.recoveries[-1]
        after = rec.first_result_s
        assert after is not None
        # until a later hand-over, if any: that plan is another one
        until = min(
            (h.switched_s for h in report.handovers if h.switched_s and h.switched_s > after),
            default=None,
        )
        measured["throughput_after_recovery_rps"] = report.throughput_rps(after, until)
        # and its steady state: the new plan's first 2 s (re-run backlog, warm-up) left out
        end = until if until is not None else (max(report.done_s) if report.done_s else after)
        if end > after + 4.0:
            measured["throughput_after_recovery_steady_rps"] = report.throughput_rps(
                after + 2.0, until
            )
        plan_after, inst_after = session.priced(rec.epoch)
        pred = evaluate(inst_after, plan_after.stages)
        measured["predicted_after_recovery_rps"] = pred.throughput_rps * microbatch
        measured["plan_after_recovery"] = plan_after.to_dict()
    pred0 = evaluate(instance, plan.stages)
    measured["predicted_rps"] = pred0.throughput_rps * microbatch
    threads = session.check_threads
    measured["max_abs_error"] = _check(ref_model, kept, results, threads) if check else None
    measured["checked"] = len(results) if check else 0
    return measured


def _acquire(slots: threading.Semaphore, t0: float, duration_s: float | None) -> bool:
    """A closed loop's next slot; ``False`` once the duration is over."""
    while not slots.acquire(timeout=0.05):
        if duration_s is not None and time.monotonic() - t0 >= duration_s:
            return False
    return True


def _inject(session: Any, fault: Fault, say: Callable[[str], None]) -> None:
    try:
        if fault.kind == "admit":
            session.admit(fault.device)
        else:
            session.inject(fault.kind, fault.device)
        say(f"injected {fault.kind} on {fault.device} at {fault.at_s:g} s")
    except InputError as exc:
        say(f"not injected: {exc}")


def _check(
    model: Any,
    inputs: dict[int, list[torch.Tensor]],
    outputs: dict[int, list[torch.Tensor]],
    threads: int,
) -> float | None:
    """Max |error| of the kept outputs against the unsplit model, computed with the workers'
    intra-op thread count (same float summation order)."""
    from ..runtime.results import reference_outputs

    if not outputs:
        return None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        worst = 0.0
        with torch.inference_mode():
            for i, outs in outputs.items():
                ref = reference_outputs(model, inputs[i])
                for r, o in zip(ref, outs, strict=True):
                    worst = max(worst, float((r - o).abs().max()))
        return worst
    finally:
        torch.set_num_threads(old)


__all__ = ["Arrivals", "Fault", "parse_arrivals", "parse_fault", "request_inputs", "run_stream"]
