"""Reliability-aware plans: the best *expected goodput* when devices and links fail (S1, AP²).

AP² asks for reliability beside throughput. Here devices and dedicated links may carry a
failure rate (``failure_rate_per_h``; 0 = never fails), and a plan is scored by the requests it
is expected to complete per second over a long run in which parts fail and come back.

The model (derivation)
----------------------
*Components.* Every device ``d`` with rate ``lambda_d`` (per hour in files, per second here),
and every device pair ``{u, v}`` joined by dedicated links, with rate ``lambda_uv`` = the larger
of its two directions' rates: a cable or radio failure takes both directions down at once, so a
bidirectional cluster link (both directions given the same rate) fails at that rate, not twice
it. Each component is up for an exponential time (constant hazard ``lambda``), then down for a
fixed ``T = repair_s`` (reboot, rejoin), then up again; components are independent. Shared
media never fail. In the long run component ``c`` is down a fraction
``u_c = lambda_c T / (1 + lambda_c T)`` of the time (alternating renewal), and by independence
the set ``S`` of components down at a random instant has probability
``P(S) = prod_{c in S} u_c prod_{c not in S} (1 - u_c)``.

*What a plan depends on.* The source (requests enter and leave there), every device of a stage,
every device that relays one of the plan's transfers, and every dedicated link pair on the
cheapest path of a transfer the plan makes. A device is *redundant* when it is one of two or
more replicas of a stage and neither the source nor a relay; a link pair is redundant when every
transfer crossing it has a redundant replica at one end (its failure only cuts those replicas
off). Everything else the plan touches is *critical*; what it does not touch cannot hurt it.

*What runs while ``S`` is down* (the fail-over policy; :mod:`coinfer.simulate.failures` replays
exactly this): if ``S`` holds nothing critical and every stage keeps a replica, the plan itself
without the replicas ``S`` cuts off — no pause, the other replicas carry on (a stage is down only
when all its replicas are); otherwise the re-plan over the parts still up (dp's throughput plan,
as the runtime's session re-plans over the survivors; nothing if nothing can serve). Its
throughput ``r(S)`` is capped at the plan's own ``X``: a re-plan faster than the plan would make
failures look profitable and reward poor plans. When parts come back the stream hands over to
the configuration for the new ``S`` (a planned hand-over, taken as free).

*What a failure costs beyond that.* A failure that breaks the configuration running at that
moment (it is critical for it) stops completions for the recovery time ``R`` (``recovery_s``:
detection, re-plan, re-submission; the runtime's measured median is 1.27 s,
``benchmarks/results/failover.md``), losing ``R r(S + c)`` requests. Component ``c`` fails from
state ``S`` (``c`` up) at rate ``lambda_c P(S)`` per second.

*Goodput.* Time-averaged completions per second:

    G = sum_S P(S) r(S)  -  min(R, T) sum_S P(S) sum_{c up, c breaks S} lambda_c r(S + c)

The first term is exact in steady state for independent components (every state ``S``, both
replicas of a stage down included); the second neglects a failure during a recovery (``O(lambda
R)``). States are enumerated up to ``max_states`` (all ``2^n`` when ``n`` flaky components allow;
else by number of parts down, fewest first); the probability of the states left out counts as no
throughput (``Goodput.unmodelled``), so ``G`` is then a lower bound. The horizon does not appear:
this is the long-run rate, valid when the horizon spans many repair times. ``G / X`` is the
plan's *availability*. With one flaky part and rare failures ``G`` reduces to the first-order
``X - f_c (X R + (X - X_c)(T - R))`` with ``f_c = lambda_c / (1 + lambda_c T)`` failures a
second and ``X_c`` the throughput while it is down.

The planner
-----------
:func:`plan_reliable` (registry name ``reliable``, objective ``throughput``) scores candidates
with :func:`expected_goodput` and returns the best (ties keep the earlier, plain first):

1. *plain*: dp's throughput-optimal one-device-per-stage plan, and pico's throughput plan
   (replicas chosen for speed alone; ``pico_candidate``);
2. *avoid*: dp's plan on the instance without each flaky component alone (a device, or a link
   pair) and without the 1, 2, ... flakiest devices together (up to ``max_avoid``), the source
   excepted;
3. *replicate*: from each of those, add a spare device (any device the plan leaves idle that
   holds the stage in memory) as a replica of a stage — the bottleneck's or the one a flaky
   device serves — greedily, up to ``max_replicas`` times, while expected goodput improves.

Re-plans are dp's throughput plans, cached per reduced instance (one dp run per failure state
that breaks some candidate, plus one per candidate). Without any failure rate goodput is
throughput, and the planner returns the faster of dp's and pico's plans. It is a heuristic over
a small candidate set, tested against exhaustive enumeration of replicated plans on small
instances (``tests/plan/test_reliability.py``: optimal on most, never below 95 % of the optimum
there); it never returns a plan with lower expected goodput than the plain ones (they are
candidates). Cost: candidates x failure states x one reference evaluation; with 9 flaky parts
(512 states) on a 16-piece, 5-device instance about 10 s.

Why one module: the model (components, what a plan depends on, the state enumeration) and the
planner that searches with it are one argument — the candidates are chosen for what the model
rewards (avoiding critical flaky parts, making them redundant) — and splitting them would put
the definition of "redundant" in one file and its only user in another.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core.evaluate import evaluate, period_s, transfers
from ..core.instance import Instance, surviving
from ..core.plans import Objective, Plan, Stage
from ..errors import CoinferError, InputError
from ._shared import REL_EPS, finish
from .chain.dp import plan_dp
from .chain.pico import plan_pico

# Median time from a fault to the first new result of the live session over 20 injected faults
# (benchmarks/results/failover.md): detection + re-plan + re-submission.
RECOVERY_S = 1.27
# Assumed time to bring a failed edge device or link back (reboot / rejoin the network): five
# minutes. Not measured here; pass ``repair_s`` when the site knows better.
REPAIR_S = 300.0
SECONDS_PER_HOUR = 3600.0

# A component: a device name, or a device pair (sorted) joined by dedicated links.
Component = str | tuple[str, str]
# The fail-over planner: stages over a reduced instance, or None when nothing can serve.
Replan = Callable[[Instance], Sequence[Stage] | None]


@dataclass(frozen=True)
class ReliabilityOptions:
    """Options of :func:`plan_reliable`.

    Attributes
    ----------
    recovery_s : seconds nothing completes after a critical failure (default: measured median).
    repair_s : seconds until a failed component is back (default: an assumed 5 minutes).
    max_replicas : replicas the greedy step may add to one candidate.
    max_avoid : the most flaky devices avoided together (the cumulative avoid sets).
    pico_candidate : also start from pico's throughput plan (replicas chosen for speed alone),
        so the result is never below it in expected goodput either.
    max_states : failure states enumerated per plan (:func:`expected_goodput`).
    """

    recovery_s: float = RECOVERY_S
    repair_s: float = REPAIR_S
    max_replicas: int = 2
    max_avoid: int = 4
    pico_candidate: bool = True
    max_states: int = 1024

    def __post_init__(self) -> None:
        for name in ("recovery_s", "repair_s"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be finite and >= 0 (got {v!r})")
        if self.max_replicas < 0 or self.max_avoid < 0 or self.max_states < 1:
            raise ValueError("max_replicas and max_avoid must be >= 0, max_states >= 1")


@dataclass(frozen=True)
class ComponentRisk:
    """One flaky component the plan touches: whether it is critical, the throughput while it
    alone is down, and the first-order requests lost per failure (see the module docstring)."""

    component: str
    rate_per_h: float
    critical: bool
    degraded_rps: float
    loss_per_failure: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "rate_per_h": self.rate_per_h,
            "critical": self.critical,
            "degraded_rps": self.degraded_rps,
            "loss_per_failure": self.loss_per_failure,
        }


@dataclass(frozen=True)
class Goodput:
    """A plan's throughput, its expected goodput under failures, and the risks behind the gap.

    ``unmodelled`` is the probability of the failure states not enumerated (counted as no
    throughput, so ``goodput_rps`` is then a lower bound)."""

    throughput_rps: float
    goodput_rps: float
    risks: tuple[ComponentRisk, ...]
    unmodelled: float = 0.0

    @property
    def availability(self) -> float:
        return 0.0 if self.throughput_rps <= 0 else self.goodput_rps / self.throughput_rps


def component_name(c: Component) -> str:
    """``"d1"`` for a device, ``"d0<->d1"`` for a link pair."""
    return c if isinstance(c, str) else f"{c[0]}<->{c[1]}"


def failure_rates_per_h(instance: Instance) -> dict[Component, float]:
    """Every component that may fail, with its failures per hour (devices, then link pairs)."""
    out: dict[Component, float] = {
        d.name: d.failure_rate_per_h for d in instance.devices if d.failure_rate_per_h > 0
    }
    for (u, v), r in sorted(instance.link_failure_per_h.items()):
        if r > 0:
            pair = (min(u, v), max(u, v))
            out[pair] = max(out.get(pair, 0.0), r)
    return out


def dependencies(
    instance: Instance, stages: Sequence[Stage]
) -> tuple[set[Component], dict[Component, frozenset[str]]]:
    """``(critical, redundant)``: what ``stages`` depend on (module docstring).

    ``redundant`` maps each component whose failure only costs replicas to the replicas it
    takes out: a replica device itself, or a link pair all of whose transfers have a replica
    at one end (both ends' replicas are counted out). Anything else the plan touches is
    critical."""
    critical: set[Component] = {instance.source}
    replicas: set[str] = set()
    for st in stages:
        if len(st.devices) == 1:
            critical.add(st.devices[0])
        else:
            replicas.update(st.devices)
    pair_ends: dict[Component, set[str]] = {}
    for u, v, nbytes, share in transfers(instance, stages):
        if share == 0.0:
            continue
        for i, lk in enumerate(instance.path(u, v, nbytes)):
            if i > 0:
                critical.add(lk.src)  # a relay
            if lk.medium is None:
                pair = (min(lk.src, lk.dst), max(lk.src, lk.dst))
                pair_ends.setdefault(pair, set()).update((u, v))
    devices_critical = {c for c in critical if isinstance(c, str)}
    soft = replicas - devices_critical
    redundant: dict[Component, frozenset[str]] = {d: frozenset((d,)) for d in soft}
    for pair, ends in pair_ends.items():
        lost = frozenset(ends & soft)
        # soft only if every transfer over it has a replica end (else a critical end remains)
        # and no stage loses all its devices
        if (
            lost
            and _every_transfer_has_soft_end(pair, instance, stages, soft)
            and all(set(st.devices) - lost for st in stages)
        ):
            redundant[pair] = lost
        else:
            critical.add(pair)
    return critical, redundant


def _every_transfer_has_soft_end(
    pair: tuple[str, str], instance: Instance, stages: Sequence[Stage], soft: set[str]
) -> bool:
    for u, v, nbytes, _share in transfers(instance, stages):
        hops = {
            (min(lk.src, lk.dst), max(lk.src, lk.dst))
            for lk in instance.path(u, v, nbytes)
            if lk.medium is None
        }
        if pair in hops and u not in soft and v not in soft:
            return False
    return True


def without(instance: Instance, component: Component) -> Instance:
    """``instance`` with ``component`` down: a device removed (:func:`surviving`), or both
    directions of a link pair removed (their traffic then takes another path, a shared medium
    included)."""
    if isinstance(component, str):
        return surviving(instance, [d for d in instance.device_names if d != component])
    pair = set(component)
    return replace(
        instance,
        links=tuple(lk for lk in instance.dedicated_links if {lk.src, lk.dst} != pair),
        link_failure_per_h={k: r for k, r in instance.link_failure_per_h.items() if set(k) != pair},
    )


def throughput_rps(instance: Instance, stages: Sequence[Stage]) -> float:
    """1 / reference period (0 when a transfer is impossible)."""
    p = period_s(instance, stages)
    return 0.0 if p <= 0 or not math.isfinite(p) else 1.0 / p


def dp_replan(instance: Instance) -> tuple[Stage, ...] | None:
    """dp's throughput plan on ``instance`` (``None`` when nothing can be planned)."""
    try:
        return plan_dp(instance, "throughput").stages
    except CoinferError:
        return None


def _reduced(instance: Instance, down: Iterable[Component]) -> Instance | None:
    """``instance`` without every component in ``down`` (``None`` if no device is left)."""
    inst = instance
    try:
        for c in sorted(down, key=component_name):
            inst = without(inst, c)
    except CoinferError:
        return None
    return inst


def _states(parts: Sequence[Component], max_states: int) -> Iterator[frozenset[Component]]:
    """Subsets of ``parts`` by size, fewest first, at most ``max_states`` of them (whole sizes)."""
    total = 0
    for k in range(len(parts) + 1):
        n_k = math.comb(len(parts), k)
        if k > 0 and total + n_k > max_states:
            return
        total += n_k
        for combo in itertools.combinations(parts, k):
            yield frozenset(combo)


def expected_goodput(
    instance: Instance,
    stages: Sequence[Stage],
    *,
    recovery_s: float = RECOVERY_S,
    repair_s: float = REPAIR_S,
    replan: Replan = dp_replan,
    max_states: int = 1024,
) -> Goodput:
    """Expected goodput (requests/s) of ``stages`` on ``instance`` under its failure rates.

    ``replan(reduced_instance)`` gives the stages the stream moves to when a critical part is
    down (default: dp's throughput plan; ``None``: cannot serve). See the module docstring for
    the model, its assumptions and ``max_states``.
    """
    stages = tuple(stages)
    x = throughput_rps(instance, stages)
    rates = failure_rates_per_h(instance)
    if x <= 0 or not rates:
        return Goodput(x, x, ())
    parts = list(rates)
    lam = {c: rates[c] / SECONDS_PER_HOUR for c in parts}
    down_frac = {c: lam[c] * repair_s / (1.0 + lam[c] * repair_s) for c in parts}
    critical0, redundant0 = dependencies(instance, stages)
    memo: dict[frozenset[Component], tuple[float, set[Component]]] = {}

    def state(down: frozenset[Component]) -> tuple[float, set[Component]]:
        """(throughput, critical parts) of what runs while ``down`` is down."""
        if down in memo:
            return memo[down]
        if not down:
            out = (x, critical0)
        else:
            inst = _reduced(instance, down)
            config: tuple[Stage, ...] | None = None
            if inst is not None and not (down & critical0):
                lost = {d for c in down for d in redundant0.get(c, ())}
                kept = tuple(
                    replace(st, devices=tuple(d for d in st.devices if d not in lost), freqs=None)
                    if lost & set(st.devices)
                    else st
                    for st in stages
                )
                config = kept if all(st.devices for st in kept) else None
            if config is None and inst is not None:
                got = replan(inst)
                config = None if got is None else tuple(got)
            if config is None or inst is None:
                out = (0.0, set())
            else:
                out = (min(throughput_rps(inst, config), x), dependencies(inst, config)[0])
        memo[down] = out
        return out

    pause = min(recovery_s, repair_s)
    goodput = covered = 0.0
    enumerated = list(_states(parts, max_states))
    largest = max(len(s_) for s_ in enumerated)
    for down in enumerated:
        p = math.prod(down_frac[c] if c in down else 1.0 - down_frac[c] for c in parts)
        covered += p
        r, crit = state(down)
        goodput += p * r
        if len(down) < largest or largest == len(parts):
            for c in parts:
                if c not in down and c in crit:
                    goodput -= p * lam[c] * pause * state(down | {c})[0]
    risks = []
    for c in parts:
        if c not in critical0 and c not in redundant0:
            continue
        xc = state(frozenset((c,)))[0]
        hard = c in critical0
        loss = (x * pause if hard else 0.0) + (x - xc) * max(repair_s - (pause if hard else 0), 0)
        risks.append(ComponentRisk(component_name(c), rates[c], hard, xc, loss))
    return Goodput(x, max(goodput, 0.0), tuple(risks), max(1.0 - covered, 0.0))


# ----- the planner --------------------------------------------------------------------------


def plan_reliable(
    instance: Instance, objective: Objective, options: ReliabilityOptions | None = None
) -> Plan:
    """The candidate plan with the best expected goodput (module docstring).

    Parameters
    ----------
    instance : the planning problem; failure rates on its devices and links.
    objective : ``"throughput"`` only (goodput is throughput under failures).
    options : :class:`ReliabilityOptions`.

    Returns
    -------
    Plan
        ``details``: ``candidate`` (how it was built), ``expected_goodput_rps``,
        ``availability``, the plain plan's ``plain_goodput_rps`` / ``plain_throughput_rps``,
        the model parameters and the per-component ``risks``.

    Raises
    ------
    InputError
        An objective other than throughput.
    InfeasibleError
        Nothing fits in memory (dp's message).
    """
    if objective != "throughput":
        raise InputError(
            f"planner 'reliable' maximises expected goodput (objective throughput), not {objective}"
        )
    opts = options or ReliabilityOptions()
    plain = plan_dp(instance, "throughput")
    if not instance.has_failure_rates:  # goodput is throughput: the faster plain plan
        best_plain = plain.stages
        if opts.pico_candidate:
            pico = plan_pico(instance, "throughput")
            if pico.predicted.period_s < plain.predicted.period_s * (1 - REL_EPS):
                best_plain = pico.stages
        return finish(
            instance, "reliable", objective, best_plain,
            details={"candidate": "plain" if best_plain == plain.stages else "pico",
                     "note": "no failure rates: the throughput plan"},
        )  # fmt: skip

    cache: dict[tuple[Any, ...], tuple[Stage, ...] | None] = {}

    def replan(reduced: Instance) -> tuple[Stage, ...] | None:
        key = (
            reduced.device_names,
            reduced.source,
            tuple(sorted((lk.src, lk.dst) for lk in reduced.dedicated_links)),
        )
        if key not in cache:
            cache[key] = dp_replan(reduced)
        return cache[key]

    def score(stages: tuple[Stage, ...]) -> Goodput:
        return expected_goodput(
            instance, stages, recovery_s=opts.recovery_s, repair_s=opts.repair_s, replan=replan,
            max_states=opts.max_states,
        )  # fmt: skip

    bases: list[tuple[str, tuple[Stage, ...]]] = [("plain", plain.stages)]
    if opts.pico_candidate:
        bases.append(("pico", plan_pico(instance, "throughput").stages))
    for label, reduced in _avoid_instances(instance, opts.max_avoid):
        try:
            bases.append((label, plan_dp(reduced, "throughput").stages))
        except CoinferError:
            continue  # nothing fits or nothing reachable without those parts: not a candidate

    plain_g = score(plain.stages)
    best_label, best_stages, best = "plain", plain.stages, plain_g
    n_scored = 0
    for label, stages in bases:
        for cand_label, cand, g in _with_replicas(
            instance, label, stages, opts.max_replicas, score
        ):
            n_scored += 1
            if g.goodput_rps > best.goodput_rps * (1 + REL_EPS):
                best_label, best_stages, best = cand_label, cand, g
    return finish(
        instance,
        "reliable",
        objective,
        best_stages,
        details={
            "candidate": best_label,
            "expected_goodput_rps": best.goodput_rps,
            "availability": best.availability,
            "unmodelled_probability": best.unmodelled,
            "plain_goodput_rps": plain_g.goodput_rps,
            "plain_throughput_rps": plain_g.throughput_rps,
            "recovery_s": opts.recovery_s,
            "repair_s": opts.repair_s,
            "candidates_scored": n_scored,
            "risks": [r.to_dict() for r in best.risks],
        },
    )


def _avoid_instances(instance: Instance, max_avoid: int) -> Iterable[tuple[str, Instance]]:
    """Reduced instances without flaky parts: each part alone, then the flakiest devices
    together (the source is never avoided: requests enter there)."""
    rates = failure_rates_per_h(instance)
    ranked = sorted(rates, key=lambda c: (-rates[c], component_name(c)))
    for comp in ranked:
        if comp != instance.source:
            yield f"avoid {component_name(comp)}", without(instance, comp)
    devices = [c for c in ranked if isinstance(c, str) and c != instance.source]
    for k in range(2, min(max_avoid, len(devices)) + 1):
        gone = set(devices[:k])
        keep = [d for d in instance.device_names if d not in gone]
        yield f"avoid {'+'.join(devices[:k])}", surviving(instance, keep)


def _with_replicas(
    instance: Instance,
    label: str,
    stages: tuple[Stage, ...],
    max_replicas: int,
    score: Callable[[tuple[Stage, ...]], Goodput],
) -> Iterable[tuple[str, tuple[Stage, ...], Goodput]]:
    """The base plan, then greedy one-replica additions while the expected goodput improves.

    Each step tries every (stage, spare device) pair whose memory fits and moves to the best
    if it beats the current plan; every plan tried is yielded with its score."""
    current, current_label = stages, label
    current_g = score(current)
    yield label, stages, current_g
    for _ in range(max_replicas):
        used = {d for st in current for d in st.devices}
        spares = [d for d in instance.device_names if d not in used]
        step: tuple[Goodput, str, tuple[Stage, ...]] | None = None
        for k, st in enumerate(current):
            need = instance.mem_bytes(st.first, st.last)
            for s in spares:
                if instance.device_by_name[s].mem_bytes < need:
                    continue
                cand = (
                    *current[:k],
                    Stage(st.first, st.last, (*st.devices, s)),
                    *current[k + 1 :],
                )
                if not math.isfinite(evaluate(instance, cand).period_s):
                    continue
                g = score(cand)
                cand_label = f"{current_label} + replica {s} on stage {k}"
                yield cand_label, cand, g
                if step is None or g.goodput_rps > step[0].goodput_rps * (1 + REL_EPS):
                    step = (g, cand_label, cand)
        if step is None or step[0].goodput_rps <= current_g.goodput_rps * (1 + REL_EPS):
            return
        current_g, current_label, current = step


__all__ = [
    "RECOVERY_S",
    "REPAIR_S",
    "ComponentRisk",
    "Goodput",
    "ReliabilityOptions",
    "component_name",
    "dependencies",
    "dp_replan",
    "expected_goodput",
    "failure_rates_per_h",
    "plan_reliable",
    "throughput_rps",
    "without",
]
