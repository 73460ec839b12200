"""Seeded failure traces replayed against a plan: how many requests it completes when parts fail.

The instance's failure rates (``Device.failure_rate_per_h``, ``Instance.link_failure_per_h``)
become a trace: every device, and every device pair joined by dedicated links (rate: the larger
of its two directions'; a failed pair loses both), is up for an exponential time of mean
``1 / rate``, down for ``repair_s``, up again, and so on over ``horizon_s``. A trace depends only
on the instance and the seed, so two plans replayed with the same seed meet the same failures
(common random numbers: their difference has far less noise than either figure).

The stream then follows the fail-over policy of the closed-form model
(:mod:`coinfer.plan.reliability`), close to what coinfer's runtime does:

- while the parts down cut off only replicas (a replica device that is neither the source nor a
  relay, or a link pair every transfer over which has such a replica at one end) and every
  stage keeps one, the plan runs without them: no pause, the other replicas carry on;
- otherwise the stream runs the re-plan over the parts still up, ``replan(instance without the
  parts down)`` (the session re-plans over the survivors); nothing completes if that cannot
  serve;
- a failure that breaks the configuration running at that moment (a part it cannot lose: the
  source, a one-device stage, a relay, a link between non-replicas) stops completions for
  ``recovery_s`` (the runtime's measured fail-over median, 1.27 s,
  ``benchmarks/results/failover.md``); any other change — a repair, a failure of something the
  running configuration does not need — is a planned hand-over, taken as free;
- while anything is down the stream runs no faster than the original plan (a faster re-plan is
  not credited to a failure; the closed-form model makes the same choice).

Requests are a fluid here: between events the stream completes ``throughput`` requests per
second of the configuration in effect — by default the reference model's ``1 / period``, or the
discrete-event simulator's measured steady throughput (:func:`simulated_throughput`, cached per
configuration). Overlapping failures, failures during a recovery and repairs cut off by the
horizon are all replayed as they fall, which is what the closed-form expected goodput of
:mod:`coinfer.plan.reliability` leaves out; this module does not import it (the import rules
keep ``simulate`` below ``plan``), so the two are independent and are checked against each other
in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.evaluate import evaluate, period_s, transfers
from ..core.instance import Instance, surviving
from ..core.plans import Plan, Stage
from ..errors import InputError

SECONDS_PER_HOUR = 3600.0
# Median fault -> first new result of the live session (benchmarks/results/failover.md).
RECOVERY_S = 1.27

Part = str | tuple[str, str]  # a device, or a sorted device pair joined by dedicated links
Stages = tuple[Stage, ...]
Replan = Callable[[Instance], Sequence[Stage] | None]
Throughput = Callable[[Instance, Stages], float]


@dataclass(frozen=True)
class FailureEvent:
    """``part`` fails (``kind="fail"``) or is back (``"repair"``) at ``time_s``."""

    time_s: float
    kind: str
    part: Part

    @property
    def name(self) -> str:
        return self.part if isinstance(self.part, str) else f"{self.part[0]}<->{self.part[1]}"


@dataclass(frozen=True)
class FailureRun:
    """One replay: completions, goodput and what happened (seconds, requests)."""

    seed: int
    horizon_s: float
    completed: float
    failures: int
    interruptions: int
    paused_s: float
    degraded_s: float
    segments: tuple[tuple[float, float, float, str], ...]

    @property
    def goodput_rps(self) -> float:
        return self.completed / self.horizon_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "horizon_s": self.horizon_s,
            "completed": self.completed,
            "goodput_rps": self.goodput_rps,
            "failures": self.failures,
            "interruptions": self.interruptions,
            "paused_s": self.paused_s,
            "degraded_s": self.degraded_s,
        }


def part_rates_per_h(instance: Instance) -> dict[Part, float]:
    """Every part that may fail and its failures per hour, in a fixed order."""
    out: dict[Part, float] = {}
    for d in instance.devices:
        if d.failure_rate_per_h > 0:
            out[d.name] = d.failure_rate_per_h
    pairs: dict[Part, float] = {}
    for (u, v), r in instance.link_failure_per_h.items():
        if r > 0:
            key = (min(u, v), max(u, v))
            pairs[key] = max(pairs.get(key, 0.0), r)
    out.update(sorted(pairs.items()))
    return out


def failure_trace(
    instance: Instance, horizon_s: float, repair_s: float, seed: int
) -> tuple[FailureEvent, ...]:
    """Failures and repairs of every part over ``[0, horizon_s)``, time-ordered (seeded)."""
    if not (horizon_s > 0 and math.isfinite(horizon_s)):
        raise InputError(f"horizon_s must be finite and > 0 (got {horizon_s!r})")
    if not (repair_s >= 0 and math.isfinite(repair_s)):
        raise InputError(f"repair_s must be finite and >= 0 (got {repair_s!r})")
    rng = np.random.default_rng(seed)
    events: list[FailureEvent] = []
    for part, rate_h in part_rates_per_h(instance).items():
        mean_up_s = SECONDS_PER_HOUR / rate_h
        t = 0.0
        while True:
            t += float(rng.exponential(mean_up_s))
            if t >= horizon_s:
                break
            events.append(FailureEvent(t, "fail", part))
            t += repair_s
            if t >= horizon_s:
                break
            events.append(FailureEvent(t, "repair", part))
    # repairs before failures at the same instant (a part back and another down: both hold)
    return tuple(sorted(events, key=lambda e: (e.time_s, e.kind != "repair", e.name)))


def reduced(instance: Instance, down: Iterable[Part]) -> Instance:
    """``instance`` without the parts in ``down`` (devices removed, link pairs cut both ways)."""
    down = set(down)
    devices = [d for d in instance.device_names if d not in down]
    inst = instance if len(devices) == len(instance.device_names) else surviving(instance, devices)
    cut = {frozenset(p) for p in down if not isinstance(p, str)}
    if not cut:
        return inst
    return replace(
        inst,
        links=tuple(lk for lk in inst.dedicated_links if frozenset((lk.src, lk.dst)) not in cut),
        link_failure_per_h={
            k: r for k, r in inst.link_failure_per_h.items() if frozenset(k) not in cut
        },
    )


def uses(instance: Instance, stages: Stages) -> tuple[set[Part], dict[Part, set[str]]]:
    """``(hard, soft)``: the parts whose failure stops ``stages`` (the source, one-device stages,
    relays, link pairs carrying a transfer between two non-replicas) and, for every other part
    they use, the replicas its failure cuts off (a replica itself; for a link pair, the replica
    ends of the transfers over it)."""
    hard: set[Part] = {instance.source}
    replicas: set[str] = set()
    for st in stages:
        (hard if len(st.devices) == 1 else replicas).update(st.devices)
    crossing: list[tuple[set[Part], str, str]] = []  # (link pairs on the path, ends)
    for u, v, nbytes, _share in transfers(instance, stages):
        pairs: set[Part] = set()
        for i, lk in enumerate(instance.path(u, v, nbytes)):
            if i > 0:
                hard.add(lk.src)
            if lk.medium is None:
                pairs.add((min(lk.src, lk.dst), max(lk.src, lk.dst)))
        crossing.append((pairs, u, v))
    spare = replicas - hard
    soft: dict[Part, set[str]] = {d: {d} for d in spare}
    for pairs, u, v in crossing:
        ends = {u, v} & spare
        for pair in pairs:
            if not ends:
                hard.add(pair)
            else:
                soft.setdefault(pair, set()).update(ends)
    for pair in [p for p in soft if p in hard]:
        del soft[pair]
    for part, lost in list(soft.items()):
        if any(not set(st.devices) - lost for st in stages):
            hard.add(part)
            del soft[part]
    return hard, soft


def reference_throughput(instance: Instance, stages: Stages) -> float:
    """1 / the reference period (0 when a transfer has no path)."""
    p = period_s(instance, stages)
    return 0.0 if p <= 0 or not math.isfinite(p) else 1.0 / p


def simulated_throughput(requests: int = 120) -> Throughput:
    """A throughput function measuring each configuration with the discrete-event simulator
    (closed loop, ``requests`` requests, steady state), cached per configuration."""
    from ..schedule.scheduler import schedule
    from .sim import simulate

    cache: dict[tuple[Any, ...], float] = {}

    def measure(instance: Instance, stages: Stages) -> float:
        key = (_instance_key(instance), stages)
        if key not in cache:
            if not math.isfinite(period_s(instance, stages)):
                cache[key] = 0.0
            else:
                plan = Plan("replay", "throughput", stages, evaluate(instance, stages))
                sched = schedule(plan, instance, requests)
                cache[key] = simulate(sched, instance).throughput_rps
        return cache[key]

    return measure


def simulate_failures(
    instance: Instance,
    stages: Sequence[Stage],
    *,
    replan: Replan,
    horizon_s: float,
    repair_s: float,
    recovery_s: float = RECOVERY_S,
    seed: int = 0,
    throughput: Throughput = reference_throughput,
    events: Sequence[FailureEvent] | None = None,
) -> FailureRun:
    """Replay one seeded failure trace against ``stages`` (module docstring).

    Parameters
    ----------
    instance, stages : the plan and the instance with its failure rates.
    replan : the plan the stream moves to over the parts still up (``None``: cannot serve);
        e.g. ``lambda inst: coinfer.plan.plan(inst, "dp").stages``.
    horizon_s, repair_s, recovery_s : seconds of the replay, to repair a part, to recover.
    seed : the failure trace's seed.
    throughput : requests/s of a configuration (default the reference model).
    events : replay these failures and repairs (time-ordered) instead of drawing a trace.
    """
    if not (recovery_s >= 0 and math.isfinite(recovery_s)):
        raise InputError(f"recovery_s must be finite and >= 0 (got {recovery_s!r})")
    original: Stages = tuple(stages)
    if events is None:
        events = failure_trace(instance, horizon_s, repair_s, seed)
    memo: dict[tuple[frozenset[Part], Stages | None], float] = {}

    def rate(down: frozenset[Part], config: Stages | None) -> float:
        if config is None:
            return 0.0
        key = (down, config)
        if key not in memo:
            memo[key] = throughput(reduced(instance, down), config)
            if down:  # never faster than the plan itself while something is down (docstring)
                memo[key] = min(memo[key], memo[(frozenset(), original)])
        return memo[key]

    down: set[Part] = set()
    full_rate = rate(frozenset(), original)  # first: the cap of every other rate
    original_uses = uses(instance, original)
    config: Stages | None = original
    config_down: frozenset[Part] = frozenset()  # the parts down when the config was chosen
    label = "plan"
    pause_end = 0.0
    now = 0.0
    completed = paused = degraded = 0.0
    failures = interruptions = 0
    segments: list[tuple[float, float, float, str]] = []

    def target(down_now: frozenset[Part]) -> tuple[Stages | None, str]:
        """What runs while ``down_now`` is down: the plan (less the replicas it cut off) while
        it stands, else the re-plan over the parts up."""
        if not down_now:
            return original, "plan"
        pruned = _prune(original, original_uses, set(down_now))
        if pruned is not None:
            return pruned, "degraded"
        try:
            inst = reduced(instance, down_now)
        except InputError:  # no device left
            return None, "down"
        got = replan(inst)
        return (None, "down") if got is None else (tuple(got), "replan")

    def advance(until: float) -> None:
        nonlocal completed, paused, degraded, now
        if until <= now:
            return
        start = min(max(now, pause_end), until)
        paused += start - now
        x = rate(config_down, config)
        completed += x * (until - start)
        if x < full_rate * (1 - 1e-12):
            degraded += until - start
        if start > now:
            segments.append((now, start, 0.0, "recovering"))
        if until > start:
            segments.append((start, until, x, label))
        now = until

    for ev in events:
        if ev.time_s >= horizon_s:
            break
        advance(ev.time_s)
        if ev.kind == "fail":
            failures += 1
            if config is not None and ev.part in uses(reduced(instance, config_down), config)[0]:
                interruptions += 1
                pause_end = ev.time_s + recovery_s
            down.add(ev.part)
        else:
            down.discard(ev.part)
        config_down = frozenset(down)
        config, label = target(config_down)
    advance(horizon_s)
    return FailureRun(
        seed=seed,
        horizon_s=horizon_s,
        completed=completed,
        failures=failures,
        interruptions=interruptions,
        paused_s=paused,
        degraded_s=degraded,
        segments=tuple(segments),
    )


def _prune(
    original: Stages, original_uses: tuple[set[Part], dict[Part, set[str]]], down: set[Part]
) -> Stages | None:
    """``original`` without the replicas the parts in ``down`` cut off; ``None`` when one of
    them stops it (see :func:`uses`) or a stage would be left empty."""
    hard, soft = original_uses
    if hard & down:
        return None
    lost = {d for part in down for d in soft.get(part, ())}
    out = []
    for st in original:
        keep = tuple(d for d in st.devices if d not in lost)
        if not keep:
            return None
        out.append(st if len(keep) == len(st.devices) else replace(st, devices=keep, freqs=None))
    return tuple(out)


def _instance_key(instance: Instance) -> tuple[Any, ...]:
    return (
        instance.device_names,
        instance.source,
        tuple(sorted((lk.src, lk.dst) for lk in instance.dedicated_links)),
    )


def _cached_replan(replan: Replan) -> Replan:
    cache: dict[tuple[Any, ...], Sequence[Stage] | None] = {}

    def cached(instance: Instance) -> Sequence[Stage] | None:
        key = _instance_key(instance)
        if key not in cache:
            cache[key] = replan(instance)
        return cache[key]

    return cached


def _cached_throughput(throughput: Throughput) -> Throughput:
    cache: dict[tuple[Any, ...], float] = {}

    def cached(instance: Instance, stages: Stages) -> float:
        key = (_instance_key(instance), stages)
        if key not in cache:
            cache[key] = throughput(instance, stages)
        return cache[key]

    return cached


def goodput_over_seeds(
    instance: Instance,
    plans: Mapping[str, Sequence[Stage]],
    seeds: Iterable[int],
    *,
    replan: Replan,
    horizon_s: float,
    repair_s: float,
    recovery_s: float = RECOVERY_S,
    throughput: Throughput = reference_throughput,
) -> dict[str, list[FailureRun]]:
    """Replay every plan against the same seeded traces (one run per seed per plan); re-plans
    and throughputs are cached across runs (both depend only on the parts up)."""
    seeds = list(seeds)
    replan = _cached_replan(replan)
    throughput = _cached_throughput(throughput)
    return {
        name: [
            simulate_failures(
                instance,
                st,
                replan=replan,
                horizon_s=horizon_s,
                repair_s=repair_s,
                recovery_s=recovery_s,
                seed=s,
                throughput=throughput,
            )
            for s in seeds
        ]
        for name, st in plans.items()
    }


__all__ = [
    "RECOVERY_S",
    "FailureEvent",
    "FailureRun",
    "failure_trace",
    "goodput_over_seeds",
    "part_rates_per_h",
    "reduced",
    "reference_throughput",
    "simulate_failures",
    "simulated_throughput",
    "uses",
]
