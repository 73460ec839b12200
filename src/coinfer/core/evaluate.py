"""The reference cost model: the one evaluation every planner, the simulator and the tests share.

Given an :class:`~coinfer.core.instance.Instance` and a tuple of stages this module computes

- **latency**: one request through an idle system. The request enters at the source, visits
  one replica of every stage, and returns to the source; with replicas it takes the cheapest
  route through them (a small DP over stages), which is the "fastest replica" of DESIGN.md
  generalised to account for the links too.
- **period** (steady state, 1 / throughput): the largest per-request busy time of any device
  or any directed link. Replicas of a stage take requests in proportion to their speed
  (weight ``w_i = (1/T_i) / sum_j 1/T_j``), so a device's busy time per request is
  ``w_i * T_i = 1 / sum_j (1/T_j)`` — the stage's "replicas-rate" period. A transfer of ``x``
  bytes from ``u`` to ``v`` occupies every link on its cheapest path for ``L + x / B`` (a link
  carries one transfer at a time; latency is counted as occupancy, which the simulator mirrors).
  A hop over a shared medium occupies the medium instead, so a medium's busy time is the sum of
  all hops over it, in every direction (half-duplex); without media this is the per-link model.
  Between replicated stages, pair ``(i, j)`` carries the fraction ``w_i * w_j`` of requests.
- **energy** per request: device busy time x active power at its DVFS level, plus each hop's
  time x the sending device's transmit power; ``None`` unless every used device has a power figure.

Devices serving several stages (allowed only with ``allow_revisit``, for layered-graph routing)
sum their busy time and memory over those stages.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

from ..errors import InfeasibleError, InputError
from .cores import core_conflict
from .instance import Instance, Resource
from .plans import Metrics, Plan, Stage


def replica_weights(instance: Instance, stage: Stage) -> tuple[float, ...]:
    """Share of requests each replica of ``stage`` serves (proportional to its speed)."""
    times = [
        instance.compute_s(stage.first, stage.last, d, stage.freq_of(i))
        for i, d in enumerate(stage.devices)
    ]
    zero = [i for i, t in enumerate(times) if t <= 0.0]
    if zero:  # zero-time replicas absorb everything, shared equally
        return tuple((1.0 / len(zero)) if i in zero else 0.0 for i in range(len(times)))
    rates = [1.0 / t for t in times]
    total = sum(rates)
    return tuple(r / total for r in rates)


def _endpoints(
    instance: Instance, stages: Sequence[Stage]
) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
    """Sender/receiver groups along the pipeline: source, each stage's replicas, source again."""
    groups: list[tuple[tuple[str, ...], tuple[float, ...]]] = [((instance.source,), (1.0,))]
    for st in stages:
        groups.append((st.devices, replica_weights(instance, st)))
    groups.append(((instance.source,), (1.0,)))
    return groups


def transfers(instance: Instance, stages: Sequence[Stage]) -> Iterator[tuple[str, str, int, float]]:
    """Every transfer a request of ``stages`` makes between two different devices, as
    ``(sender, receiver, bytes, share)``: the source's input to the first stage's replicas, each
    stage's replicas to the next's, the last stage's back to the source; ``share`` is the
    fraction of requests taking that pair (the product of the two replicas' weights)."""
    groups = _endpoints(instance, stages)
    sizes = [instance.cut_bytes(st.first) for st in stages] + [instance.output_bytes]
    for k, nbytes in enumerate(sizes):
        (srcs, ws), (dsts, wd) = groups[k], groups[k + 1]
        for u, wu in zip(srcs, ws, strict=True):
            for v, wv in zip(dsts, wd, strict=True):
                if u != v:
                    yield u, v, nbytes, wu * wv


def latency_s(instance: Instance, stages: Sequence[Stage]) -> float:
    """Single-request latency through an idle system (cheapest route through the replicas)."""
    # best[d] = cheapest arrival-and-compute time at the current stage's replica d
    best: dict[str, float] = {instance.source: 0.0}
    for st in stages:
        nbytes = instance.cut_bytes(st.first)
        nxt: dict[str, float] = {}
        for i, d in enumerate(st.devices):
            comp = instance.compute_s(st.first, st.last, d, st.freq_of(i))
            arrive = min(t + instance.transfer_s(u, d, nbytes) for u, t in best.items())
            nxt[d] = arrive + comp
        best = nxt
    out = instance.output_bytes
    return min(t + instance.transfer_s(u, instance.source, out) for u, t in best.items())


def busy_times(
    instance: Instance, stages: Sequence[Stage]
) -> tuple[dict[str, float], dict[Resource, float]]:
    """Per-request busy seconds of every device and every network resource used by ``stages``:
    a directed link is keyed ``(src, dst)``, a shared medium by its name."""
    dev_busy: dict[str, float] = defaultdict(float)
    link_busy: dict[Resource, float] = defaultdict(float)
    for st in stages:
        w = replica_weights(instance, st)
        for i, d in enumerate(st.devices):
            dev_busy[d] += w[i] * instance.compute_s(st.first, st.last, d, st.freq_of(i))
    for u, v, nbytes, share in transfers(instance, stages):
        if share == 0.0:
            continue
        path = instance.path(u, v, nbytes)
        if not path:
            link_busy[(u, v)] = math.inf
            continue
        for lk in path:
            link_busy[lk.resource] += share * lk.transfer_s(nbytes)
    return dict(dev_busy), dict(link_busy)


def period_s(instance: Instance, stages: Sequence[Stage]) -> float:
    """Steady-state seconds per request: the busiest device, link or medium (compute and comms
    overlap)."""
    dev_busy, link_busy = busy_times(instance, stages)
    return max([0.0, *dev_busy.values(), *link_busy.values()])


def energy_j(instance: Instance, stages: Sequence[Stage]) -> float | None:
    """Joules per request, or ``None`` when a used device lacks a power figure.

    A plan that needs a transfer between devices with no path costs ``inf`` joules, as its
    latency is ``inf`` seconds (the planners' per-transfer energy agrees)."""
    used = {d for st in stages for d in st.devices}
    if not all(instance.device_by_name[d].has_power for d in used):
        return None
    total = 0.0
    for st in stages:
        w = replica_weights(instance, st)
        for i, d in enumerate(st.devices):
            f = st.freq_of(i)
            dev = instance.device_by_name[d]
            total += w[i] * instance.compute_s(st.first, st.last, d, f) * dev.active_power_w(f)
    for u, v, nbytes, share in transfers(instance, stages):
        if share == 0.0:
            continue
        path = instance.path(u, v, nbytes)
        if not path:  # an unreachable transfer never happens: inf J, as it is inf s
            return math.inf
        for lk in path:
            ptx = instance.device_by_name[lk.src].power_transmit_w or 0.0
            total += share * lk.transfer_s(nbytes) * ptx
    return total


def evaluate(instance: Instance, stages: Sequence[Stage]) -> Metrics:
    """All reference metrics of ``stages`` (no validation; see :func:`validate_stages`)."""
    return Metrics(
        latency_s(instance, stages), period_s(instance, stages), energy_j(instance, stages)
    )


def objective_value(instance: Instance, stages: Sequence[Stage], objective: str) -> float:
    """The scalar a planner minimises: latency, period (throughput) or energy."""
    if objective == "latency":
        return latency_s(instance, stages)
    if objective == "throughput":
        return period_s(instance, stages)
    e = energy_j(instance, stages)
    return math.inf if e is None else e


def validate_stages(
    instance: Instance, stages: Sequence[Stage], *, allow_revisit: bool = False
) -> None:
    """Raise :class:`InputError` for a malformed plan and :class:`InfeasibleError` for one that
    does not fit in memory. Checked: pieces covered once and in order, known devices, one stage
    per device (unless ``allow_revisit``), no two stage devices holding one core (core groups of
    a SoC, :mod:`.cores`), DVFS levels allowed, memory per device."""
    if not stages:
        raise InputError("plan has no stages")
    expect = 0
    seen: dict[str, int] = {}
    mem_need: dict[str, int] = defaultdict(int)
    for k, st in enumerate(stages):
        if st.first != expect or st.last < st.first:
            raise InputError(
                f"stage {k} covers pieces [{st.first}, {st.last}] but must start at piece {expect}"
            )
        if st.last >= instance.num_pieces:
            raise InputError(
                f"stage {k} covers pieces [{st.first}, {st.last}] but the instance has "
                f"{instance.num_pieces} (0-{instance.num_pieces - 1})"
            )
        expect = st.last + 1
        if not st.devices:
            raise InputError(f"stage {k} has no devices")
        if len(set(st.devices)) != len(st.devices):
            raise InputError(f"stage {k} lists a device twice: {list(st.devices)}")
        if st.freqs is not None and len(st.freqs) != len(st.devices):
            raise InputError(f"stage {k}: {len(st.freqs)} freqs for {len(st.devices)} devices")
        for i, d in enumerate(st.devices):
            if d not in instance.device_by_name:
                raise InputError(
                    f"stage {k} names unknown device {d!r} (devices: {list(instance.device_names)})"
                )
            if d in seen and not allow_revisit:
                raise InputError(
                    f"device {d!r} serves stages {seen[d]} and {k}; each device serves one stage"
                )
            seen.setdefault(d, k)
            f = st.freq_of(i)
            if st.freqs is not None and f not in instance.device_by_name[d].dvfs_levels:
                raise InputError(f"stage {k}: device {d!r} has no DVFS level {f}")
            mem_need[d] += instance.mem_bytes(st.first, st.last)
    if expect != instance.num_pieces:
        raise InputError(
            f"plan covers pieces 0..{expect - 1} but the instance has {instance.num_pieces}"
        )
    clash = core_conflict(instance, seen)
    if clash is not None:
        raise InputError(f"plan uses overlapping core groups: {clash}; a core runs one stage")
    short = [
        (need - instance.device_by_name[d].mem_bytes, d, need)
        for d, need in mem_need.items()
        if need > instance.device_by_name[d].mem_bytes
    ]
    if short:
        over, d, need = max(short)
        raise InfeasibleError(
            f"device {d!r} needs {need} bytes for its stage but has {instance.device_by_name[d].mem_bytes} "
            f"({over} bytes short)"
        )


def check_plan(instance: Instance, plan: Plan, *, rel_tol: float = 1e-9) -> Metrics:
    """Validate ``plan`` and confirm its recorded prediction matches an independent evaluation."""
    revisit = bool(plan.details.get("allow_revisit", False))
    validate_stages(instance, plan.stages, allow_revisit=revisit)
    m = evaluate(instance, plan.stages)
    for name in ("latency_s", "period_s"):
        a, b = getattr(m, name), getattr(plan.predicted, name)
        if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-15):
            raise InputError(
                f"plan {plan.algo!r} predicts {name}={b!r} but the reference model gives {a!r}"
            )
    return m


def memory_bound_check(instance: Instance) -> None:
    """Raise :class:`InfeasibleError` if no device can hold even the largest single piece.

    A cheap necessary condition planners call first so an infeasible instance fails with a
    message naming the tightest device instead of an empty search."""
    biggest = max(range(instance.num_pieces), key=lambda i: instance.pieces[i].mem_bytes)
    need = instance.pieces[biggest].mem_bytes
    roomiest = max(instance.devices, key=lambda d: d.mem_bytes)
    if need > roomiest.mem_bytes:
        raise InfeasibleError(
            f"piece {biggest} ({instance.pieces[biggest].name!r}) needs {need} bytes but the largest "
            f"device {roomiest.name!r} has {roomiest.mem_bytes} ({need - roomiest.mem_bytes} bytes short)"
        )
    total = instance.mem_bytes(0, instance.num_pieces - 1)
    capacity = sum(d.mem_bytes for d in instance.devices)
    if total > capacity:
        raise InfeasibleError(
            f"the model needs {total} bytes but all devices together hold {capacity} "
            f"(tightest device {min(instance.devices, key=lambda d: d.mem_bytes).name!r})"
        )
