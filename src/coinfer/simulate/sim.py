"""Discrete-event simulation of a :class:`~coinfer.schedule.Schedule` (simpy).

Model (the reference cost model of DESIGN.md, executed instead of summarised):

- each device runs its stage actions in schedule order, one at a time ([Note: schedule
  semantics] in :mod:`coinfer.schedule.scheduler`): a recv waits for the data, a compute holds
  the device for ``t[first..last][d] / freq * microbatch`` seconds, a send is posted and returns;
- each transfer follows the instance's cheapest path for its size, store-and-forward; every
  DIRECTED LINK carries one hop at a time (FIFO) and a hop holds its link for ``L + x / B``,
  the occupancy convention of ``core/evaluate.py``. Links are shared by every stage pair whose path
  crosses them, which is where contention the reference model averages away shows up;
- a shared medium (Wi-Fi cell, hub) is ONE resource for every hop over it in either direction
  (half-duplex), named ``"<medium><->"`` in traces and charts;
- a link or a medium may follow a bandwidth trace (piecewise constant): a hop then holds the link for ``L``
  plus the time to push ``x`` bytes through the trace from ``start + L`` on (paths are still
  chosen with the static bandwidth);
- the source's client issues requests by the arrival process: ``closed`` (``window`` requests in
  flight, the next issued when one completes), ``poisson`` (rate per second) or a sequence of
  arrival times. A request's latency runs from its arrival to its output reaching the source.

Throughput is measured in steady state: completion times sorted, the first and last 20 % of
requests dropped (pipeline fill and drain), period = the least-squares slope of the remaining
completion times against their rank (robust to replicas finishing in bursts; with fewer than 10
requests all of them are used).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from ..core.instance import Instance, Link, Resource
from ..core.schedules import Schedule
from ..core.trace import TraceEvent, link_name, medium_name, steady_period
from ..errors import InputError, read_text
from ..schedule.scheduler import client_actions, num_stages, stage_freqs, worker_actions

BandwidthTrace = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class SimResult:
    """Everything one simulation measured (seconds, joules, requests/s); JSON via :meth:`to_dict`."""

    requests: int
    microbatch: int
    arrivals: str
    arrival_s: tuple[float, ...]
    completion_s: tuple[float, ...]
    period_s: float
    makespan_s: float
    utilisation: Mapping[str, float]
    link_utilisation: Mapping[str, float]
    energy_j: float | None
    queue: Mapping[str, tuple[tuple[float, int], ...]] = field(compare=False)
    events: tuple[TraceEvent, ...] = field(compare=False, repr=False)

    @property
    def latency_s(self) -> tuple[float, ...]:
        """Per-request latency: arrival at the source to the output back at the source."""
        return tuple(c - a for a, c in zip(self.arrival_s, self.completion_s, strict=True))

    @property
    def throughput_rps(self) -> float:
        """Steady-state requests per second (1 / period); see the module docstring."""
        return (
            0.0 if self.period_s <= 0 or not math.isfinite(self.period_s) else 1.0 / self.period_s
        )

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_s, q))

    @property
    def p50_s(self) -> float:
        return self.latency_percentile(50)

    @property
    def p95_s(self) -> float:
        return self.latency_percentile(95)

    @property
    def p99_s(self) -> float:
        return self.latency_percentile(99)

    @property
    def mean_latency_s(self) -> float:
        return float(np.mean(self.latency_s))

    @property
    def max_queue(self) -> dict[str, int]:
        """Longest queue seen at each device (inputs waiting) and link (hops waiting)."""
        return {r: max((n for _, n in pts), default=0) for r, pts in self.queue.items()}

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what ``coinfer simulate --json`` prints, without the trace)."""
        return {
            "requests": self.requests,
            "microbatch": self.microbatch,
            "arrivals": self.arrivals,
            "latency_p50_s": self.p50_s,
            "latency_p95_s": self.p95_s,
            "latency_p99_s": self.p99_s,
            "latency_mean_s": self.mean_latency_s,
            "throughput_rps": self.throughput_rps,
            "period_s": self.period_s,
            "makespan_s": self.makespan_s,
            "energy_j_per_request": self.energy_j,
            "utilisation": dict(self.utilisation),
            "link_utilisation": dict(self.link_utilisation),
            "max_queue": self.max_queue,
        }

    def to_dict(self, *, events: bool = True) -> dict[str, Any]:
        out = self.summary()
        out["arrival_s"] = list(self.arrival_s)
        out["completion_s"] = list(self.completion_s)
        out["latency_s"] = list(self.latency_s)
        out["queue"] = {r: [list(p) for p in pts] for r, pts in self.queue.items()}
        if events:
            out["events"] = [e.to_dict() for e in self.events]
        return out


def hop_time(
    link: Link, nbytes: float, start_s: float, trace: BandwidthTrace | None = None
) -> float:
    """Seconds a hop of ``nbytes`` starting at ``start_s`` holds ``link``: ``L`` + bytes over bandwidth.

    With a trace (points ``(t, bandwidth)`` sorted by ``t``; each value holds until the next point,
    the first also before it, the last forever) the bytes are integrated over the trace.
    """
    if trace is None or not trace:
        return link.latency_s + nbytes / link.bandwidth_Bps
    t = start_s + link.latency_s
    left = float(nbytes)
    times = [p[0] for p in trace]
    i = max(0, int(np.searchsorted(times, t, side="right")) - 1)
    while left > 0:
        bw = trace[i][1]
        seg_end = trace[i + 1][0] if i + 1 < len(trace) else math.inf
        if bw > 0:
            can = (seg_end - t) * bw
            if can >= left:
                t += left / bw
                left = 0.0
                break
            left -= can
        elif math.isinf(seg_end):
            raise InputError(
                f"link {link_name(link.src, link.dst)}: bandwidth trace ends at 0 with bytes left"
            )
        t = seg_end
        i += 1
    return t - start_s


def _check_traces(
    instance: Instance, traces: Mapping[Any, BandwidthTrace] | None
) -> dict[Resource, BandwidthTrace]:
    """Traces keyed by the resource they shape: ``(src, dst)`` / ``"src->dst"`` for a dedicated
    link, the medium's name for a shared medium."""
    out: dict[Resource, BandwidthTrace] = {}
    for key, raw in (traces or {}).items():
        pair: Resource
        if isinstance(key, str) and key in instance.medium_by_name:
            pair = key
        else:
            pair = tuple(key.split("->")) if isinstance(key, str) else tuple(key)  # type: ignore[assignment]
            lk = instance.link_by_pair.get(pair)  # type: ignore[arg-type]
            if lk is None or lk.medium is not None:
                raise InputError(
                    f"bandwidth trace for {key!r}: no such link or medium in {instance.name!r}"
                )
        if hasattr(raw, "times_s") and hasattr(
            raw, "bandwidth_Bps"
        ):  # coinfer.cluster.BandwidthTrace
            raw = list(zip(raw.times_s, raw.bandwidth_Bps, strict=True))
        pts = [(float(t), float(b)) for t, b in raw]
        if (
            not pts
            or any(b < 0 for _, b in pts)
            or any(pts[i][0] >= pts[i + 1][0] for i in range(len(pts) - 1))
        ):
            raise InputError(
                f"bandwidth trace for {key!r}: needs increasing times and bandwidth >= 0"
            )
        out[pair] = pts  # type: ignore[index]
    return out


def _arrival_times(
    arrivals: str | Sequence[float], n: int, rate: float | None, rng: np.random.Generator
) -> list[float] | None:
    """Open-loop arrival times, or ``None`` for the closed loop."""
    if isinstance(arrivals, str):
        if arrivals == "closed":
            return None
        if arrivals == "poisson":
            if rate is None or not (rate > 0 and math.isfinite(rate)):
                raise InputError(f"poisson arrivals need a rate > 0 requests/s, got {rate!r}")
            return list(np.cumsum(rng.exponential(1.0 / rate, n)) - 0.0)
        raise InputError(
            f"arrivals must be 'closed', 'poisson' or a list of times, got {arrivals!r}"
        )
    times = [float(t) for t in arrivals]
    if len(times) < n:
        raise InputError(f"arrival trace has {len(times)} times for {n} requests")
    times = times[:n]
    if any(t < 0 or not math.isfinite(t) for t in times) or any(
        b < a for a, b in itertools.pairwise(times)
    ):
        raise InputError("arrival trace times must be finite, >= 0 and non-decreasing")
    return times


def load_arrivals(path: str | Path) -> list[float]:
    """Arrival times (seconds), one per line (a CSV's first column; a header line is skipped)."""
    p = Path(path)
    lines = read_text(p, "arrival trace").splitlines()
    out: list[float] = []
    for i, line in enumerate(lines, 1):
        cell = line.split(",")[0].strip()
        if not cell or cell.startswith("#"):
            continue
        try:
            out.append(float(cell))
        except ValueError:
            if i == 1:
                continue  # header
            raise InputError(f"{p}: line {i}: {cell!r} is not a time in seconds") from None
    if not out:
        raise InputError(f"{p}: no arrival times")
    return out


def simulate(
    schedule: Schedule,
    instance: Instance,
    *,
    arrivals: str | Sequence[float] = "closed",
    rate: float | None = None,
    window: int | None = None,
    traces: Mapping[Any, BandwidthTrace] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> SimResult:
    """Run ``schedule`` on ``instance`` in simulated time and measure it.

    Parameters
    ----------
    schedule, instance
        A schedule from :func:`coinfer.schedule.schedule` and the instance it was made for.
    arrivals
        ``"closed"`` (``window`` in flight; default the schedule's window), ``"poisson"``
        (needs ``rate``) or a sequence of arrival times in seconds (one per request).
    traces
        Bandwidth traces per directed link: ``{("u", "v") or "u->v": [(t_s, bytes_per_s), ...]}``
        (a :class:`coinfer.cluster.BandwidthTrace` works too, e.g. ``cluster.traces``).
    noise
        Relative spread of compute times: each compute is multiplied by a log-normal factor with
        mean 1 and this standard deviation of its logarithm (0 = deterministic).
    seed
        Seeds the noise and Poisson arrivals; same inputs + seed give the same result.

    Raises
    ------
    InputError
        Unknown devices, unreachable transfers, bad arrivals/traces/noise.
    """
    if noise < 0 or not math.isfinite(noise):
        raise InputError(f"noise must be a finite relative spread >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    n_req = schedule.requests
    k_last = num_stages(schedule)
    mb = schedule.microbatch
    src = schedule.source
    for d in schedule.actions:
        if d not in instance.device_by_name:
            raise InputError(
                f"schedule names device {d!r} which is not in instance {instance.name!r}"
            )
    if src != instance.source:
        raise InputError(
            f"schedule source {src!r} differs from the instance source {instance.source!r}"
        )
    traces_by_res = _check_traces(instance, traces)
    open_times = _arrival_times(arrivals, n_req, rate, rng)
    win = window or schedule.window or n_req
    freqs = stage_freqs(schedule)
    # the client's input send of each request: (first device, bytes)
    sends_in = {a.request: (a.peer, a.nbytes) for a in client_actions(schedule) if a.kind == "send"}
    if len(sends_in) != n_req:
        raise InputError(
            f"schedule: the source client sends {len(sends_in)} inputs for {n_req} requests"
        )

    env = simpy.Environment()
    links = {lk.resource: simpy.Resource(env, capacity=1) for lk in instance.links}
    arrived: dict[tuple[int, int, str, str], simpy.Event] = {}
    events: list[TraceEvent] = []
    busy: dict[str, float] = defaultdict(float)
    energy = [0.0]
    queue: dict[str, list[tuple[float, int]]] = defaultdict(list)
    qlen: dict[str, int] = defaultdict(int)
    arrival_s = [math.nan] * n_req
    completion_s = [math.nan] * n_req
    slots = simpy.Container(env, init=win, capacity=max(win, 1))

    def slot(key: tuple[int, int, str, str]) -> simpy.Event:
        ev = arrived.get(key)
        if ev is None:
            ev = arrived[key] = env.event()
        return ev

    def note_queue(res: str, delta: int) -> None:
        qlen[res] += delta
        queue[res].append((env.now, qlen[res]))

    def transfer(r: int, k: int, u: str, v: str, nbytes: int):
        """Carry the input of stage ``k`` (``k_last``: the output) of request ``r`` from u to v."""
        if u != v:
            path = instance.path(u, v, nbytes)
            if not path:
                raise InputError(f"no path from {u!r} to {v!r} in instance {instance.name!r}")
            for lk in path:
                res = links[lk.resource]
                name = link_name(lk.src, lk.dst) if lk.medium is None else medium_name(lk.medium)
                with res.request() as req:
                    note_queue(name, +1)
                    yield req
                    note_queue(name, -1)
                    start = env.now
                    yield env.timeout(hop_time(lk, nbytes, start, traces_by_res.get(lk.resource)))
                    dur = env.now - start
                    busy[name] += dur
                    energy[0] += dur * (instance.device_by_name[lk.src].power_transmit_w or 0.0)
                    events.append(TraceEvent(name, "transfer", r, start, env.now, k))
        if k < k_last:
            note_queue(v, +1)
        slot((r, k, u, v)).succeed()

    def worker(dev: str, acts):
        device = instance.device_by_name[dev]
        for a in acts:
            if a.kind == "recv":
                yield slot((a.request, a.stage, a.peer, dev))
            elif a.kind == "compute":
                f = freqs.get((a.stage, dev), 1.0)
                t = instance.compute_s(a.first, a.last, dev, f) * mb
                if noise > 0:
                    t *= float(np.exp(rng.normal(-0.5 * noise * noise, noise)))
                note_queue(dev, -1)
                start = env.now
                yield env.timeout(t)
                busy[dev] += t
                energy[0] += t * device.active_power_w(f)
                events.append(TraceEvent(dev, "compute", a.request, start, env.now, a.stage))
            else:
                env.process(transfer(a.request, a.stage + 1, dev, a.peer, a.nbytes))

    def finish(r: int, last_dev: str):
        yield slot((r, k_last, last_dev, src))
        completion_s[r] = float(env.now)
        if open_times is None:
            yield slots.put(1)

    def client():
        for r in range(n_req):
            if open_times is None:
                yield slots.get(1)
            elif open_times[r] > env.now:
                yield env.timeout(open_times[r] - env.now)
            arrival_s[r] = float(env.now)
            env.process(finish(r, schedule.assignment[r][-1]))
            first_dev, nbytes = sends_in[r]
            env.process(transfer(r, 0, src, first_dev, nbytes))

    for dev in schedule.actions:
        env.process(worker(dev, worker_actions(schedule, dev)))
    env.process(client())
    env.run()

    missing = [r for r in range(n_req) if math.isnan(completion_s[r])]
    if missing:
        raise InputError(
            f"simulation ended with requests {missing[:8]} unfinished (schedule deadlock?)"
        )
    t0, t1 = min(arrival_s), max(completion_s)
    makespan = t1 - t0
    used = {d for d, acts in schedule.actions.items() if worker_actions(schedule, d)}
    has_power = all(instance.device_by_name[d].has_power for d in used)
    span = makespan if makespan > 0 else math.inf
    return SimResult(
        requests=n_req,
        microbatch=mb,
        arrivals=arrivals if isinstance(arrivals, str) else "trace",
        arrival_s=tuple(arrival_s),
        completion_s=tuple(completion_s),
        period_s=steady_period(completion_s),
        makespan_s=makespan,
        utilisation={d: busy.get(d, 0.0) / span for d in schedule.actions},
        link_utilisation={r: b / span for r, b in sorted(busy.items()) if "->" in r},
        energy_j=energy[0] / n_req if has_power else None,
        queue={r: tuple(pts) for r, pts in sorted(queue.items())},
        events=tuple(sorted(events, key=lambda e: (e.start_s, e.resource))),
    )
