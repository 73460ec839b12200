"""A changing network in the simulator: one fixed plan, an oracle that re-plans, a replayed timeline.

Bandwidth traces (piecewise constant, per directed link or shared medium) cut the time axis
into *segments* on which every bandwidth is constant (:func:`segments`); on each, the network is
an ordinary instance (:func:`instance_at`). Three figures compare plans under the traces, all
in requests per second averaged over a horizon ``[0, horizon_s)``:

- :func:`fixed_plan_throughput`: ONE plan runs through the whole horizon in the discrete-event
  simulator with the traces applied (closed loop; transfers integrate the trace, routes stay
  those of the given instance): requests completed within the horizon / horizon.
- :func:`oracle_throughput`: an oracle that knows the trace in advance. On each segment it uses
  a plan ``plan_for`` returns, credited with that plan's *steady-state* simulated throughput on
  the segment's network (no fill, no drain), weighted by segment length; a plan change serves
  nothing for ``switch_pause_s`` (spilling into later segments if they are shorter). By default
  it takes the planner's plan on every segment; ``choose="switch_aware"`` picks the best
  sequence of the planner's plans with the pauses counted, so it does not switch for a change
  too short to repay the pause.
- :func:`replay_plan_timeline`: a list of ``(t_s, plan)`` switches (e.g. the re-plans of a live
  session) replayed through the simulator, so a measured adaptive run can be compared with its
  simulated self. Each interval starts with an empty pipeline after ``switch_pause_s``; requests
  still in flight when the next plan takes over are not counted (they would be re-issued).

The planner is passed in as a callable (``simulate`` may not import ``plan``); any
``Instance -> Plan`` works, e.g. ``lambda inst: coinfer.plan.plan(inst, "dp", "throughput")``.

Traces are given as ``{key: trace}`` with ``key`` a ``(src, dst)`` pair or ``"src->dst"`` for a
dedicated link, or a medium's name, and ``trace`` a :class:`coinfer.cluster.BandwidthTrace`
(``cluster.traces`` works as is) or a sequence of ``(t_s, bytes_per_s)`` points; before its first
point a trace holds its first value, after its last point its last value.

Why one module: the three figures share one trace normalisation, one segment cut and one
"run a plan through a window of the trace" helper, and they are compared with each other; kept
together, the fixed plan and a one-plan replay are the same code path by construction.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..core.evaluate import evaluate
from ..core.instance import Instance, Resource
from ..core.plans import Plan
from ..core.trace import link_name
from ..errors import InputError
from ..schedule.scheduler import schedule
from .sim import simulate

Points = tuple[tuple[float, float], ...]
PlanFor = Callable[[Instance], Plan]

# Requests simulated to measure one plan's steady-state throughput on one segment: the
# simulator's slope estimate drops the first and last 20 % and is within ~1 % from 60 on.
STEADY_REQUESTS = 60
# Give up growing a fixed-plan run past this many requests (a plan that cannot finish the
# horizon with it is stalled by a trace near zero, and the figure would not mean much anyway).
MAX_REQUESTS = 2_000_000


@dataclass(frozen=True, slots=True)
class Segment:
    """``[start_s, end_s)`` on which every traced resource has a constant bandwidth (bytes/s),
    keyed ``"src->dst"`` for a link and by name for a medium."""

    start_s: float
    end_s: float
    bandwidth_Bps: Mapping[str, float]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "bandwidth_Bps": dict(self.bandwidth_Bps),
        }


@dataclass(frozen=True, slots=True)
class OracleSegment:
    """One segment of an oracle run: the plan used, its steady-state throughput there, and
    whether the plan changed at its start (then ``pause_s`` of it served nothing)."""

    start_s: float
    end_s: float
    bandwidth_Bps: Mapping[str, float]
    plan: str
    stages: tuple[dict[str, Any], ...]
    throughput_rps: float
    switched: bool
    pause_s: float

    @property
    def served(self) -> float:
        """Requests this segment contributes (throughput x time not spent switching)."""
        return self.throughput_rps * (self.end_s - self.start_s - self.pause_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "bandwidth_Bps": dict(self.bandwidth_Bps),
            "plan": self.plan,
            "stages": [dict(s) for s in self.stages],
            "throughput_rps": self.throughput_rps,
            "switched": self.switched,
            "pause_s": self.pause_s,
        }


@dataclass(frozen=True)
class OracleResult:
    """The oracle's mean throughput over the horizon and its per-segment table."""

    mean_throughput_rps: float
    horizon_s: float
    switch_pause_s: float
    switches: int
    segments: tuple[OracleSegment, ...] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_throughput_rps": self.mean_throughput_rps,
            "horizon_s": self.horizon_s,
            "switch_pause_s": self.switch_pause_s,
            "switches": self.switches,
            "plans": sorted({s.plan for s in self.segments}),
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True)
class ReplayResult:
    """A replayed plan timeline: mean throughput, completions per time bin, and per interval
    the plan and the requests it completed."""

    mean_throughput_rps: float
    horizon_s: float
    switch_pause_s: float
    completed: int
    bin_s: float
    throughput_rps: tuple[float, ...]
    intervals: tuple[dict[str, Any], ...] = field(repr=False)

    @property
    def bin_start_s(self) -> tuple[float, ...]:
        return tuple(i * self.bin_s for i in range(len(self.throughput_rps)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_throughput_rps": self.mean_throughput_rps,
            "horizon_s": self.horizon_s,
            "switch_pause_s": self.switch_pause_s,
            "completed": self.completed,
            "bin_s": self.bin_s,
            "bin_start_s": list(self.bin_start_s),
            "throughput_rps": list(self.throughput_rps),
            "intervals": [dict(i) for i in self.intervals],
        }


# ----- traces ------------------------------------------------------------------------------------


def _points(key: Any, raw: Any) -> Points:
    """A trace as sorted ``(t_s, bytes/s)`` points; a bad trace is one line naming its key."""
    if hasattr(raw, "times_s") and hasattr(raw, "bandwidth_Bps"):  # coinfer.cluster.BandwidthTrace
        raw = zip(raw.times_s, raw.bandwidth_Bps, strict=True)
    try:
        pts = tuple((float(t), float(b)) for t, b in raw)
    except (TypeError, ValueError):
        raise InputError(
            f"bandwidth trace for {key!r}: expected (time_s, bytes_per_s) points"
        ) from None
    if (
        not pts
        or any(not (math.isfinite(t) and math.isfinite(b) and b > 0) for t, b in pts)
        or any(a[0] >= b[0] for a, b in itertools.pairwise(pts))
    ):
        raise InputError(
            f"bandwidth trace for {key!r}: needs strictly increasing times and bandwidths > 0"
        )
    return pts


def _key(key: Any, media: Sequence[str] = ()) -> Resource:
    """``(src, dst)`` for a link (given as a pair or ``"src->dst"``), the name for a medium."""
    if isinstance(key, str):
        if key in media or "->" not in key:
            return key
        src, _, dst = key.partition("->")
        return (src, dst)
    pair = tuple(key)
    if len(pair) != 2:
        raise InputError(
            f"bandwidth trace key {key!r}: expected (src, dst), 'src->dst' or a medium"
        )
    return (str(pair[0]), str(pair[1]))


def _name(res: Resource) -> str:
    return res if isinstance(res, str) else link_name(*res)


def _normalise(
    traces: Mapping[Any, Any], instance: Instance | None = None
) -> dict[Resource, Points]:
    """Traces keyed by resource; with ``instance``, every key must be one of its dedicated links
    or media (the error names the key and the instance)."""
    media = tuple(instance.medium_by_name) if instance is not None else ()
    out: dict[Resource, Points] = {}
    for key, raw in traces.items():
        res = _key(key, media)
        if instance is not None:
            lk = instance.link_by_pair.get(res) if isinstance(res, tuple) else None
            if not (res in instance.medium_by_name or (lk is not None and lk.medium is None)):
                raise InputError(
                    f"bandwidth trace for {key!r}: no such link or medium in {instance.name!r}"
                )
        out[res] = _points(key, raw)
    return out


def _value_at(points: Points, t_s: float) -> float:
    i = bisect.bisect_right([p[0] for p in points], t_s) - 1
    return points[max(i, 0)][1]


def _shifted(points: Points, offset_s: float) -> Points:
    """``points`` seen from ``offset_s`` on, with time 0 at ``offset_s``."""
    head = ((0.0, _value_at(points, offset_s)),)
    return head + tuple((t - offset_s, b) for t, b in points if t > offset_s)


def _check_horizon(horizon_s: float) -> float:
    if not (horizon_s > 0 and math.isfinite(horizon_s)):
        raise InputError(f"horizon must be a finite number of seconds > 0, got {horizon_s!r}")
    return float(horizon_s)


def segments(traces: Mapping[Any, Any], horizon_s: float) -> tuple[Segment, ...]:
    """The maximal intervals of ``[0, horizon_s)`` on which every trace is constant.

    The union of all breakpoints inside the horizon, with neighbours of equal bandwidths merged
    (a breakpoint where nothing changes does not start a segment). No traces: one segment.
    """
    h = _check_horizon(horizon_s)
    norm = _normalise(traces)
    cuts = sorted({0.0} | {t for pts in norm.values() for t, _ in pts if 0.0 < t < h})
    starts: list[tuple[float, dict[str, float]]] = []
    for t in cuts:
        bw = {_name(r): _value_at(pts, t) for r, pts in norm.items()}
        if not starts or bw != starts[-1][1]:
            starts.append((t, bw))
    ends = [t for t, _ in starts[1:]] + [h]
    return tuple(Segment(t, e, bw) for (t, bw), e in zip(starts, ends, strict=True))


def instance_at(instance: Instance, traces: Mapping[Any, Any], t_s: float) -> Instance:
    """``instance`` with each traced link's and medium's bandwidth set to its value at ``t_s``
    (latencies, devices and pieces unchanged; routes re-derived for the new bandwidths)."""
    norm = _normalise(traces, instance)
    if not norm:
        return instance
    links = tuple(
        replace(lk, bandwidth_Bps=_value_at(norm[(lk.src, lk.dst)], t_s))
        if (lk.src, lk.dst) in norm
        else lk
        for lk in instance.dedicated_links
    )
    media = tuple(
        replace(m, bandwidth_Bps=_value_at(norm[m.name], t_s)) if m.name in norm else m
        for m in instance.media
    )
    return replace(instance, links=links, media=media)


# ----- simulation helpers -------------------------------------------------------------------------


def _plan_text(plan: Plan) -> str:
    return " | ".join(str(s) for s in plan.stages)


def _stages_key(plan: Plan) -> tuple[Any, ...]:
    return tuple((s.first, s.last, tuple(s.devices), s.freqs) for s in plan.stages)


def _stages_json(plan: Plan) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"pieces": [s.first, s.last], "devices": list(s.devices)}
        | ({"freqs": list(s.freqs)} if s.freqs is not None else {})
        for s in plan.stages
    )


def _completions(
    instance: Instance,
    plan: Plan,
    norm: Mapping[Resource, Points],
    offset_s: float,
    length_s: float,
    *,
    microbatch: int = 1,
    window: int | None = None,
) -> list[float]:
    """Completion times (seconds after ``offset_s``) within ``[0, length_s]`` of ``plan`` run
    closed-loop from an empty pipeline at ``offset_s`` through the traces.

    Enough requests are issued to keep the pipeline busy past ``length_s``: first the horizon
    times the plan's reference-model throughput with every trace at its peak (+25 %), doubled
    until the last request completes after ``length_s``.
    """
    if length_s <= 0:
        return []
    shifted = {r: _shifted(pts, offset_s) for r, pts in norm.items()}
    peak = instance_at(
        instance, {r: ((0.0, max(b for _, b in pts)),) for r, pts in norm.items()}, 0.0
    )
    rate = evaluate(peak, plan.stages).throughput_rps
    n = max(16, math.ceil(length_s * rate * 1.25) + 8) if rate > 0 else 64
    while True:
        sched = schedule(plan, instance, n, microbatch, window=window)
        res = simulate(sched, instance, traces=shifted)
        if max(res.completion_s) > length_s or n >= MAX_REQUESTS:
            return sorted(c for c in res.completion_s if c <= length_s)
        n = min(2 * n, MAX_REQUESTS)


def fixed_plan_throughput(
    instance: Instance,
    plan: Plan,
    traces: Mapping[Any, Any],
    horizon_s: float,
    *,
    microbatch: int = 1,
    window: int | None = None,
) -> float:
    """Mean throughput (requests/s) of ONE plan over ``[0, horizon_s)`` under the traces.

    The discrete-event simulator runs the plan's schedule closed-loop (``window`` in flight,
    default the scheduler's) from an empty pipeline at t = 0 with the traces applied; the result
    is the number of requests completed by ``horizon_s`` divided by ``horizon_s`` (pipeline fill
    included, as a real run would pay it). Routes are those of ``instance``, as priced.
    """
    h = _check_horizon(horizon_s)
    norm = _normalise(traces, instance)
    done = _completions(instance, plan, norm, 0.0, h, microbatch=microbatch, window=window)
    return len(done) / h


def steady_throughput(
    instance: Instance, plan: Plan, *, requests: int = STEADY_REQUESTS, microbatch: int = 1
) -> float:
    """Steady-state simulated throughput (requests/s) of ``plan`` on a constant network."""
    return simulate(schedule(plan, instance, requests, microbatch), instance).throughput_rps


def oracle_throughput(
    instance: Instance,
    traces: Mapping[Any, Any],
    horizon_s: float,
    plan_for: PlanFor,
    switch_pause_s: float = 0.0,
    *,
    choose: Literal["planner", "switch_aware"] = "planner",
    requests: int = STEADY_REQUESTS,
    microbatch: int = 1,
) -> OracleResult:
    """Throughput of an oracle that knows the traces in advance and re-plans with ``plan_for``.

    Per segment (:func:`segments`) the candidate is ``plan_for(instance_at(instance, traces,
    start))``, credited with its steady-state simulated throughput on that segment's network
    (:func:`steady_throughput`, ``requests`` requests) for the segment's length, less
    ``switch_pause_s`` (capped at the segment) when the plan differs from the previous segment's.

    ``choose="planner"`` uses the planner's plan on every segment (it switches whenever the
    planner's choice changes). ``choose="switch_aware"`` picks, among all the plans the planner
    returns over the horizon, the sequence that serves the most requests pause included (a
    dynamic programme over segments x candidates, ``O(S K^2)`` after ``S K`` simulations): it
    stays put when a switch would not repay its pause, and with no pause it is at least the
    planner's oracle. Plans and throughputs are cached per distinct set of bandwidths.

    Returns
    -------
    OracleResult
        ``mean_throughput_rps`` = requests served / ``horizon_s``, and one row per segment.
    """
    h = _check_horizon(horizon_s)
    if not (switch_pause_s >= 0 and math.isfinite(switch_pause_s)):
        raise InputError(
            f"switch pause must be a finite number of seconds >= 0, got {switch_pause_s!r}"
        )
    if choose not in ("planner", "switch_aware"):
        raise InputError(f"choose must be 'planner' or 'switch_aware', got {choose!r}")
    _normalise(traces, instance)  # every key names a link or medium of this instance
    segs = segments(traces, h)
    insts: dict[tuple[tuple[str, float], ...], Instance] = {}
    planned: dict[tuple[tuple[str, float], ...], Plan] = {}
    thr_cache: dict[tuple[tuple[str, float], ...], dict[tuple[Any, ...], float]] = {}

    def bw_key(seg: Segment) -> tuple[tuple[str, float], ...]:
        return tuple(sorted(seg.bandwidth_Bps.items()))

    def thr(seg: Segment, plan: Plan) -> float:
        per = thr_cache.setdefault(bw_key(seg), {})
        key = _stages_key(plan)
        if key not in per:
            per[key] = steady_throughput(
                insts[bw_key(seg)], plan, requests=requests, microbatch=microbatch
            )
        return per[key]

    for seg in segs:
        k = bw_key(seg)
        if k not in planned:
            insts[k] = instance_at(instance, traces, seg.start_s)
            planned[k] = plan_for(insts[k])
    if choose == "planner":
        chosen = [planned[bw_key(seg)] for seg in segs]
    else:
        chosen = _best_sequence(
            segs, list({_stages_key(p): p for p in planned.values()}.values()), thr, switch_pause_s
        )
    keys = [_stages_key(p) for p in chosen]
    paused = _paused(segs, keys, switch_pause_s)
    rows = [
        OracleSegment(
            start_s=seg.start_s,
            end_s=seg.end_s,
            bandwidth_Bps=seg.bandwidth_Bps,
            plan=_plan_text(plan),
            stages=_stages_json(plan),
            throughput_rps=thr(seg, plan),
            switched=i > 0 and keys[i] != keys[i - 1],
            pause_s=paused[i],
        )
        for i, (seg, plan) in enumerate(zip(segs, chosen, strict=True))
    ]
    return OracleResult(
        mean_throughput_rps=sum(r.served for r in rows) / h,
        horizon_s=h,
        switch_pause_s=float(switch_pause_s),
        switches=sum(r.switched for r in rows),
        segments=tuple(rows),
    )


def _overlap(start_s: float, pause_s: float, seg: Segment) -> float:
    """Seconds of ``[start_s, start_s + pause_s)`` inside ``seg``."""
    return max(0.0, min(seg.end_s, start_s + pause_s) - max(seg.start_s, start_s))


def _paused(segs: Sequence[Segment], keys: Sequence[Any], pause_s: float) -> list[float]:
    """Seconds of each segment spent switching: a plan change at a segment's start pauses
    ``[start, start + pause_s)``, across later segments if the pause is longer (a later change
    restarts the pause from its own time)."""
    out, last = [], None
    for i, seg in enumerate(segs):
        if i and keys[i] != keys[i - 1]:
            last = seg.start_s
        out.append(0.0 if last is None else _overlap(last, pause_s, seg))
    return out


def _best_sequence(
    segs: Sequence[Segment],
    candidates: Sequence[Plan],
    thr: Callable[[Segment, Plan], float],
    pause_s: float,
) -> list[Plan]:
    """The candidate per segment that serves the most requests with pauses counted as
    :func:`_paused` does (exact: a dynamic programme whose state is the plan in use and the time
    of the last change while its pause may still reach the next segment). Ties keep the earlier
    candidate and the earlier state, so equal choices are deterministic."""
    # state (plan index, last change time or None) -> (served so far, previous state)
    State = tuple[int, float | None]
    layer: dict[State, tuple[float, State | None]] = {}
    for j, plan in enumerate(candidates):
        layer[(j, None)] = (thr(segs[0], plan) * segs[0].duration_s, None)
    history = [layer]
    for seg in segs[1:]:
        nxt: dict[State, tuple[float, State | None]] = {}
        for state, (served, _) in layer.items():
            i, last = state
            for j, plan in enumerate(candidates):
                when = seg.start_s if j != i else last
                lost = 0.0 if when is None else _overlap(when, pause_s, seg)
                value = served + thr(seg, plan) * (seg.duration_s - lost)
                keep = when if when is not None and when + pause_s > seg.end_s else None
                key = (j, keep)
                if key not in nxt or value > nxt[key][0]:
                    nxt[key] = (value, state)
        layer = nxt
        history.append(layer)
    state = max(layer, key=lambda st: layer[st][0])
    picks: list[int] = []
    for layer_s in reversed(history):
        picks.append(state[0])
        before = layer_s[state][1]
        if before is None:  # the first segment's states have no predecessor
            break
        state = before
    return [candidates[j] for j in reversed(picks)]


def replay_plan_timeline(
    instance: Instance,
    traces: Mapping[Any, Any],
    timeline: Sequence[tuple[float, Plan]],
    horizon_s: float,
    switch_pause_s: float = 0.0,
    *,
    bin_s: float = 1.0,
    route_on: Literal["instance", "switch"] = "instance",
    microbatch: int = 1,
    window: int | None = None,
) -> ReplayResult:
    """Replay ``(t_s, plan)`` switches through the simulator under the traces.

    The first entry must start at t <= 0 (it is taken to start at 0); entries at or after the
    horizon are ignored, and (``route_on="instance"``) an entry whose stages equal the plan in
    use is not a switch. Each interval runs its plan from an empty pipeline after
    ``switch_pause_s`` (none for the first), exactly as :func:`fixed_plan_throughput` runs one
    plan, so a timeline of one plan gives the same figure. Throughput over time: completions per
    ``bin_s`` bin, divided by ``bin_s``.

    ``route_on`` says which network each plan's transfers are routed on (DESIGN.md: a transfer
    takes the route its plan was priced on): ``"instance"``, the given one for every plan (as
    :func:`fixed_plan_throughput`); ``"switch"``, the network at the plan's switch time
    (:func:`instance_at`), i.e. a re-plan priced with exact knowledge of the bandwidths then —
    there an entry with the stages in use is kept as a switch: a live controller re-plans to
    the same stages to take new routes (``"(same stages, new routes)"``), and those routes are
    the network's at that time.
    """
    if route_on not in ("instance", "switch"):
        raise InputError(f"route_on must be 'instance' or 'switch', got {route_on!r}")
    h = _check_horizon(horizon_s)
    if not (switch_pause_s >= 0 and math.isfinite(switch_pause_s)):
        raise InputError(
            f"switch pause must be a finite number of seconds >= 0, got {switch_pause_s!r}"
        )
    if not (bin_s > 0 and math.isfinite(bin_s)):
        raise InputError(f"bin width must be a finite number of seconds > 0, got {bin_s!r}")
    if not timeline:
        raise InputError("plan timeline is empty: give at least one (t_s, plan)")
    times = [float(t) for t, _ in timeline]
    if times[0] > 0:
        raise InputError(
            f"plan timeline starts at t = {times[0]} s; the first plan must start at 0"
        )
    if any(b < a for a, b in itertools.pairwise(times)):
        raise InputError("plan timeline times must be non-decreasing")
    norm = _normalise(traces, instance)
    # routed at each switch: the same stages later are new routes (a live re-route), a switch
    rerouted = route_on == "switch"
    # merge: drop entries past the horizon and re-statements of the plan in use
    kept: list[tuple[float, Plan]] = []
    for t, plan in zip(times, (p for _, p in timeline), strict=True):
        t = max(t, 0.0)
        if t >= h:
            break
        if kept and t == kept[-1][0]:
            kept[-1] = (t, plan)  # two plans at one instant: the later one stands
        elif not kept or rerouted or _stages_key(plan) != _stages_key(kept[-1][1]):
            kept.append((t, plan))
    # a same-instant overwrite may have made two neighbours equal: merge again
    merged: list[tuple[float, Plan]] = []
    for t, plan in kept:
        if not merged or rerouted or _stages_key(plan) != _stages_key(merged[-1][1]):
            merged.append((t, plan))
    done: list[float] = []
    intervals: list[dict[str, Any]] = []
    for i, (t0, plan) in enumerate(merged):
        t1 = merged[i + 1][0] if i + 1 < len(merged) else h
        pause = min(switch_pause_s, t1 - t0) if i else 0.0
        start = t0 + pause
        priced = instance if route_on == "instance" else instance_at(instance, traces, t0)
        got = _completions(
            priced, plan, norm, start, t1 - start, microbatch=microbatch, window=window
        )
        done.extend(start + c for c in got)
        intervals.append(
            {
                "start_s": t0,
                "end_s": t1,
                "pause_s": pause,
                "plan": _plan_text(plan),
                "completed": len(got),
                "throughput_rps": len(got) / (t1 - t0),
            }
        )
    nbins = max(1, math.ceil(h / bin_s - 1e-9))
    counts = [0] * nbins
    for c in done:
        counts[min(int(c // bin_s), nbins - 1)] += 1
    return ReplayResult(
        mean_throughput_rps=len(done) / h,
        horizon_s=h,
        switch_pause_s=float(switch_pause_s),
        completed=len(done),
        bin_s=float(bin_s),
        throughput_rps=tuple(n / (min(bin_s, h - i * bin_s)) for i, n in enumerate(counts)),
        intervals=tuple(intervals),
    )


__all__ = [
    "OracleResult",
    "OracleSegment",
    "ReplayResult",
    "Segment",
    "fixed_plan_throughput",
    "instance_at",
    "oracle_throughput",
    "replay_plan_timeline",
    "segments",
    "steady_throughput",
]
