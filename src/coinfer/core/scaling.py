"""When and where to scale a served pipeline's key stage (Quart, S10): a pure policy.

A served plan is sized for some load; a burst above its capacity only queues, and every queued
request waits for the slowest (*key*) stage. Quart's answer is to replicate the key stage on an
idle device while the burst lasts and to drop the replica when load falls. This module decides;
the server's scaler (:mod:`coinfer.serve.scaler`) measures and acts, and the simulator runs the
same decisions on simulated signals, so both replay one policy.

**Signals** (:class:`LoadSample`, one per check): the demand (samples arriving per second over
the last seconds), the backlog (samples waiting in the server's queue or inside the pipeline)
and the instance corrected by live telemetry (:func:`measured_instance`: each device's measured
compute time per sample; the cost model's unit is one sample). From the corrected instance
the *key stage* is the stage with the longest period ``1 / sum_d 1/T_d`` over its replicas — the
measured service times, exactly what Quart ranks by; the backlog says whether it is overloaded.

**Scale out** when, for ``confirm`` consecutive checks, the demand exceeds ``out_load`` of the
predicted capacity *or* the backlog would take more than ``out_backlog_s`` to clear at that
capacity (a burst that has already queued). Replicas are added greedily: each round replicates
the key stage on the idle device (with memory for it) that shortens the predicted period most,
until the capacity covers ``headroom`` x the need (the demand plus the backlog cleared within
``out_backlog_s``), the gain of a round falls under
``min_gain`` (the key stage is no longer the bottleneck, e.g. a link is), or no device is left.
All replicas of one decision go in one hand-over: each hand-over costs a second or two.

**Scale in** when the demand has stayed under ``in_load`` of the capacity *without* the newest
replica for ``in_hold_s`` and the backlog would clear in half of ``out_backlog_s`` without it:
the newest added replica leaves (last in, first
out). Devices of the plan the server started with never leave.

**Hysteresis**: the gap between ``out_load`` (0.9) and ``in_load`` (0.5) of the smaller plan's
capacity, the confirmations, the long ``in_hold_s`` (10 s, a burst's off period must really be
over) and ``cooldown_s`` after any change (its telemetry must settle before it is judged) keep
the stream from flapping between plans.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from ..errors import InfeasibleError, InputError
from .evaluate import period_s, validate_stages
from .instance import Instance
from .plans import Stage

# How the signals are read, by the server's scaler and the serving simulator alike: demand is
# averaged over DEMAND_WINDOW_S (a burst shows within a second or two, one request's jitter does
# not); a plan is judged only once every device of it has computed for SETTLE_S (an epoch's
# first intervals mix start-up and the old epoch's drain on the same CPUs).
DEMAND_WINDOW_S = 2.0
SETTLE_S = 1.0


@dataclass(frozen=True)
class ScalingPolicy:
    """Thresholds of the scaling policy (see the module docstring for their roles)."""

    check_s: float = 0.5
    out_load: float = 0.9
    out_backlog_s: float = 0.5
    confirm: int = 2
    headroom: float = 1.2
    min_gain: float = 0.1
    in_load: float = 0.5
    in_hold_s: float = 10.0
    cooldown_s: float = 2.0
    max_replicas_per_decision: int = 8

    def __post_init__(self) -> None:
        if not self.check_s > 0:
            raise InputError(f"scaling check interval must be > 0 s, got {self.check_s}")
        if not 0 < self.in_load < self.out_load:
            raise InputError(
                f"scaling thresholds need 0 < in_load < out_load, got {self.in_load} and "
                f"{self.out_load}"
            )
        if self.confirm < 1 or self.max_replicas_per_decision < 1:
            raise InputError("scaling confirm and max_replicas_per_decision must be >= 1")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class LoadSample:
    """What one check sees: demand in samples/s, samples waiting, and the instance as measured
    (the planner's instance with live compute times, :func:`measured_instance`)."""

    t_s: float
    demand_rps: float
    backlog_samples: int
    instance: Instance


@dataclass(frozen=True)
class ScaleAction:
    """A decided change: the stages to switch to, and why (for the event log)."""

    kind: str  # "scale_out" | "scale_in"
    stages: tuple[Stage, ...]
    added: tuple[tuple[int, str], ...]  # (stage index, device) now replicating it
    removed: tuple[tuple[int, str], ...]
    key_stage: int
    capacity_rps: float  # predicted samples/s of the current stages
    new_capacity_rps: float
    demand_rps: float
    reason: str


@dataclass
class ScalerState:
    """What the policy remembers between checks (mutable, owned by one scaler)."""

    overloaded_checks: int = 0
    underloaded_since: float | None = None
    last_change_s: float = float("-inf")
    added: list[tuple[int, str]] = field(default_factory=list)  # LIFO of replicas added


def measured_instance(
    base: Instance, stage_ms: Mapping[str, float], stages: Sequence[Stage], microbatch: int
) -> Instance:
    """``base`` (priced per sample) with each device's compute times scaled by what it measured:
    ``stage_ms[d]`` is ``d``'s mean compute time of one micro-batch of its stage in ``stages``.
    A device without a measurement (an idle one) takes the median scale of those measured: the
    error common to all devices (calibration drift, batching efficiency against ``microbatch``
    x one sample) is the best guess for it too."""
    scale: dict[str, float] = {}
    for st in stages:
        for i, d in enumerate(st.devices):
            priced = base.compute_s(st.first, st.last, d, st.freq_of(i)) * microbatch
            ms = stage_ms.get(d)
            if ms is not None and ms > 0 and priced > 0:
                scale[d] = ms / 1e3 / priced
    if not scale:
        return base
    common = statistics.median(scale.values())
    pieces = tuple(
        replace(pc, time_s={d: t * scale.get(d, common) for d, t in pc.time_s.items()})
        for pc in base.pieces
    )
    return replace(base, pieces=pieces)


def capacity_rps(instance: Instance, stages: Sequence[Stage]) -> float:
    """Predicted samples per second of ``stages`` on ``instance`` (one sample per request)."""
    p = period_s(instance, stages)
    return 0.0 if p <= 0 or p == float("inf") else 1.0 / p


def stage_periods(instance: Instance, stages: Sequence[Stage]) -> list[float]:
    """Each stage's compute period over its replicas: ``1 / sum_d 1/T_d`` (seconds)."""
    out = []
    for st in stages:
        rate = 0.0
        for i, d in enumerate(st.devices):
            t = instance.compute_s(st.first, st.last, d, st.freq_of(i))
            rate += float("inf") if t <= 0 else 1.0 / t
        out.append(0.0 if rate == float("inf") else 1.0 / rate)
    return out


def key_stage(instance: Instance, stages: Sequence[Stage]) -> int:
    """The stage with the longest compute period (ties: the earliest)."""
    periods = stage_periods(instance, stages)
    return max(range(len(periods)), key=lambda k: (periods[k], -k))


def with_replica(stages: Sequence[Stage], k: int, device: str) -> tuple[Stage, ...]:
    st = stages[k]
    freqs = None if st.freqs is None else (*st.freqs, 1.0)
    grown = Stage(st.first, st.last, (*st.devices, device), freqs)
    return (*stages[:k], grown, *stages[k + 1 :])


def without_replica(stages: Sequence[Stage], k: int, device: str) -> tuple[Stage, ...]:
    st = stages[k]
    keep = [i for i, d in enumerate(st.devices) if d != device]
    freqs = None if st.freqs is None else tuple(st.freqs[i] for i in keep)
    shrunk = Stage(st.first, st.last, tuple(st.devices[i] for i in keep), freqs)
    return (*stages[:k], shrunk, *stages[k + 1 :])


def _fits(instance: Instance, stages: Sequence[Stage]) -> bool:
    try:
        validate_stages(instance, stages)
    except (InfeasibleError, InputError):
        return False
    return True


def grow(
    instance: Instance,
    stages: Sequence[Stage],
    idle: Sequence[str],
    demand_rps: float,
    policy: ScalingPolicy,
) -> tuple[tuple[Stage, ...], list[tuple[int, str]]]:
    """Replicate key stages greedily on ``idle`` devices (see the module docstring); the new
    stages and the ``(stage, device)`` replicas added, in order (none: nothing pays)."""
    cur = tuple(stages)
    free = [d for d in idle if d in instance.device_by_name]
    added: list[tuple[int, str]] = []
    while free and len(added) < policy.max_replicas_per_decision:
        cap = capacity_rps(instance, cur)
        if added and cap >= policy.headroom * demand_rps:
            break
        k = key_stage(instance, cur)
        best: tuple[float, str] | None = None
        for d in free:
            cand = with_replica(cur, k, d)
            if not _fits(instance, cand):
                continue
            c = capacity_rps(instance, cand)
            if best is None or c > best[0]:
                best = (c, d)
        if best is None or best[0] < (1.0 + policy.min_gain) * cap:
            break
        cur = with_replica(cur, k, best[1])
        free.remove(best[1])
        added.append((k, best[1]))
    return cur, added


def decide(
    policy: ScalingPolicy,
    state: ScalerState,
    sample: LoadSample,
    stages: Sequence[Stage],
    idle: Sequence[str],
) -> ScaleAction | None:
    """One check: a scale-out, a scale-in or nothing; updates ``state``'s counters (the caller
    records an action's replicas with :func:`applied` once it switches)."""
    inst = sample.instance
    cur = tuple(stages)
    cap = capacity_rps(inst, cur)
    backlog_s = sample.backlog_samples / cap if cap > 0 else float("inf")
    overloaded = sample.demand_rps > policy.out_load * cap or backlog_s > policy.out_backlog_s
    state.overloaded_checks = state.overloaded_checks + 1 if overloaded else 0
    cooling = sample.t_s - state.last_change_s < policy.cooldown_s
    if overloaded:
        state.underloaded_since = None
        if cooling or state.overloaded_checks < policy.confirm:
            return None
        k = key_stage(inst, cur)
        # size for the demand plus clearing what has queued within out_backlog_s
        need = sample.demand_rps + sample.backlog_samples / policy.out_backlog_s
        grown, added = grow(inst, cur, idle, need, policy)
        if not added:
            return None
        why = (
            f"demand {sample.demand_rps:.1f}/s vs capacity {cap:.1f}/s"
            if sample.demand_rps > policy.out_load * cap
            else f"backlog {backlog_s:.2f} s"
        )
        return ScaleAction(
            "scale_out", grown, tuple(added), (), k, cap, capacity_rps(inst, grown),
            sample.demand_rps, why,
        )  # fmt: skip
    if not state.added:
        state.underloaded_since = None
        return None
    k, d = state.added[-1]
    smaller = without_replica(cur, k, d)
    small_cap = capacity_rps(inst, smaller)
    small_backlog_s = sample.backlog_samples / small_cap if small_cap > 0 else float("inf")
    if (
        sample.demand_rps >= policy.in_load * small_cap
        or small_backlog_s > policy.out_backlog_s / 2
    ):
        state.underloaded_since = None
        return None
    if state.underloaded_since is None:
        state.underloaded_since = sample.t_s
    if cooling or sample.t_s - state.underloaded_since < policy.in_hold_s:
        return None
    return ScaleAction(
        "scale_in", smaller, (), ((k, d),), key_stage(inst, cur), cap, small_cap,
        sample.demand_rps,
        f"demand {sample.demand_rps:.1f}/s under {policy.in_load:g} x {small_cap:.1f}/s "
        f"for {sample.t_s - state.underloaded_since:.0f} s",
    )  # fmt: skip


def applied(state: ScalerState, action: ScaleAction, t_s: float) -> None:
    """Record that ``action`` was carried out at ``t_s``."""
    state.added.extend(action.added)
    for r in action.removed:
        state.added.remove(r)
    state.last_change_s = t_s
    state.overloaded_checks = 0
    state.underloaded_since = None


def failed(state: ScalerState, t_s: float) -> None:
    """The switch did not happen (the hand-over failed): wait a cooldown, then judge afresh."""
    state.last_change_s = t_s
    state.overloaded_checks = 0


__all__ = [
    "DEMAND_WINDOW_S",
    "SETTLE_S",
    "LoadSample",
    "ScaleAction",
    "ScalerState",
    "ScalingPolicy",
    "applied",
    "capacity_rps",
    "decide",
    "failed",
    "grow",
    "key_stage",
    "measured_instance",
    "stage_periods",
    "with_replica",
    "without_replica",
]
