"""PICO's many-to-many mapping: a stage may run on several devices that take turns (S7).

A stage served by devices ``G`` handles requests in proportion to each replica's speed, so its
period is ``1 / sum_{d in G} 1 / T_d`` (the "replicas-rate"; see :mod:`coinfer.plan.evaluate`),
and between replicated stages every replica pair ``(u, v)`` carries the share ``w_u * w_v`` of
the traffic. Replication lets a pipeline use devices that a one-device-per-stage plan would
leave idle, which is how PICO reaches its 1.8–6.8x on 2–8 Raspberry Pis.

Objectives. Replicas only pay off for **throughput**. For latency, the reference model routes a
lone request through one replica per stage, and the one-device plan along that route is also
valid, so :func:`~coinfer.plan.dp.plan_dp` is already optimal; for energy, a replicated plan's
energy is the average over the routes a request may take, never below the best route. For those
two objectives this planner returns dp's plan (exact).

Throughput, two regimes:

- **Exact** (when the brute-force candidate count is at most ``exact_limit``): a depth-first
  branch and bound over ordered sequences of (piece range, disjoint device group) with *exact*
  per-device and per-link loads, pruned by the incumbent (dp's optimum, then anything better)
  and by a lower bound on the pieces left (each remaining piece needs at least
  ``1 / sum of the rates of the unused devices`` of some stage's time). Exact in PICO's model;
  tested equal to brute force with replicas.
- **Greedy** (larger instances): start from dp's optimal one-device plan and hill-climb with
  three moves, each scored by the reference model — add an unused device as a replica to a stage
  (PICO's grouping of devices onto the bottleneck); merge two neighbouring stages onto one side's
  devices and give the freed devices to some stage as replicas (dp's optimum usually uses every
  device, so replication must first free one); shift a stage boundary by one piece to rebalance —
  taking the best improving move until none is left. Heuristic; ``O(rounds * (D K + K^2))``
  evaluations.

Either way the result is never worse than dp's plan (it is the starting incumbent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._common import REL_EPS, TransferTable, finish
from .brute import count_candidates
from .dp import DPOptions, plan_dp
from .evaluate import period_s
from .instance import Instance
from .types import Objective, Plan, Stage


@dataclass(frozen=True)
class PicoOptions:
    """Options of :func:`plan_pico`.

    Attributes
    ----------
    exact_limit : solve exactly by branch and bound when brute force with replicas would score
        at most this many candidates (the B&B visits far fewer); otherwise hill-climb.
    node_limit : cap on branch-and-bound nodes (``details["exact"]`` False if hit).
    max_rounds : cap on hill-climbing rounds.
    """

    exact_limit: int = 200_000
    node_limit: int = 300_000
    max_rounds: int = 200


def plan_pico(instance: Instance, objective: Objective, options: PicoOptions | None = None) -> Plan:
    """Pipeline with replicated stages (PICO, S7); see the module docstring.

    Exact (small instances) or greedy hill-climbing from dp's optimum (large ones) for
    throughput; dp's exact plan for latency and energy. Never worse than :func:`plan_dp`.
    """
    opts = options or PicoOptions()
    base = plan_dp(instance, objective, DPOptions())
    if objective != "throughput":
        return finish(
            instance,
            "pico",
            objective,
            base.stages,
            details={"exact": base.details.get("exact", True)},
        )
    count = count_candidates(instance, instance.device_names, replicas=True, energy=False)
    details: dict[str, Any] = {}
    if count <= opts.exact_limit:
        stages, complete = _branch_and_bound(instance, base.stages, opts.node_limit)
        details["method"] = "branch-and-bound"
        details["exact"] = complete
    else:
        stages = _hill_climb(instance, base.stages, opts.max_rounds)
        details["method"] = "greedy"
        details["exact"] = False
    details["replicated_stages"] = sum(len(s.devices) > 1 for s in stages)
    return finish(instance, "pico", objective, stages, details=details)


def _weights(times: list[float]) -> list[float]:
    """Replica shares exactly as :func:`coinfer.plan.evaluate.replica_weights` computes them."""
    zero = [i for i, t in enumerate(times) if t <= 0.0]
    if zero:
        return [(1.0 / len(zero)) if i in zero else 0.0 for i in range(len(times))]
    rates = [1.0 / t for t in times]
    total = sum(rates)
    return [r / total for r in rates]


def _branch_and_bound(
    instance: Instance, incumbent: tuple[Stage, ...], node_limit: int
) -> tuple[tuple[Stage, ...], bool]:
    names = list(instance.device_names)
    n, P = len(names), instance.num_pieces
    src = names.index(instance.source)
    tt = TransferTable(instance)
    mem_cap = [instance.device_by_name[d].mem_bytes for d in names]
    piece_t = [[pc.time_s[d] for d in names] for pc in instance.pieces]
    best: list[Any] = [period_s(instance, incumbent), incumbent]
    nodes = [0]
    complete = [True]
    groups = [[e for e in range(n) if m >> e & 1] for m in range(1 << n)]

    def better(v: float) -> bool:
        return v < best[0] * (1 - REL_EPS)

    def rest_bound(i: int, S: int) -> float:
        """Each remaining piece shares a stage whose period is >= its time on all unused devices."""
        free = [e for e in range(n) if not S >> e & 1]
        lb = 0.0
        for p in range(i, P):
            rate = sum(1.0 / piece_t[p][e] if piece_t[p][e] > 0 else math.inf for e in free)
            lb = max(lb, 0.0 if rate == math.inf else (math.inf if rate == 0 else 1.0 / rate))
        return lb

    def add_transfer(loads: dict, k: int, g_from, w_from, g_to, w_to, touched: list) -> float:  # type: ignore[no-untyped-def,type-arg]
        peak = 0.0
        for u, wu in zip(g_from, w_from, strict=True):
            for v, wv in zip(g_to, w_to, strict=True):
                share = wu * wv
                if share == 0.0 or u == v:
                    continue
                path = tt.paths[k][u][v]
                if not path:
                    return math.inf
                for key, t in path:
                    old = loads.get(key)
                    touched.append((key, old))
                    new = (old or 0.0) + share * t
                    loads[key] = new
                    peak = max(peak, new)
        return peak

    def undo(loads: dict, touched: list) -> None:  # type: ignore[type-arg]
        for key, old in reversed(touched):
            if old is None:
                loads.pop(key, None)
            else:
                loads[key] = old

    def rec(
        i: int,
        g_prev: list[int],
        w_prev: list[float],
        S: int,
        cur: float,
        loads: dict,
        stages: list,
    ) -> None:  # type: ignore[type-arg]
        nodes[0] += 1
        if nodes[0] > node_limit:
            complete[0] = False
            return
        if i == P:
            touched: list = []  # type: ignore[type-arg]
            v = max(cur, add_transfer(loads, P, g_prev, w_prev, [src], [1.0], touched))
            undo(loads, touched)
            if better(v):
                best[0] = v
                best[1] = tuple(Stage(a, b, tuple(names[e] for e in g)) for a, b, g in stages)
            return
        if not better(max(cur, rest_bound(i, S))):
            return
        free = ((1 << n) - 1) & ~S
        sub = free
        while sub:
            g = groups[sub]
            sub = (sub - 1) & free
            cap = min(mem_cap[e] for e in g)
            times = [0.0] * len(g)
            for j in range(i, P):
                if instance.mem_bytes(i, j) > cap:
                    break
                times = [times[x] + piece_t[j][e] for x, e in enumerate(g)]
                w = _weights(times)
                stage_p = max(wi * ti for wi, ti in zip(w, times, strict=True))
                c = max(cur, stage_p)
                if not better(c):
                    break  # longer stages on the same group only get slower
                touched: list = []  # type: ignore[type-arg]
                c = max(c, add_transfer(loads, i, g_prev, w_prev, g, w, touched))
                if better(c):
                    stages.append((i, j, g))
                    rec(j + 1, g, w, S | sum(1 << e for e in g), c, loads, stages)
                    stages.pop()
                undo(loads, touched)

    rec(0, [src], [1.0], 0, 0.0, {}, [])
    return best[1], complete[0]


def _hill_climb(
    instance: Instance, stages: tuple[Stage, ...], max_rounds: int
) -> tuple[Stage, ...]:
    """Best-improvement local search: add a replica, or shift a boundary by one piece."""
    cur = tuple(stages)
    cur_val = period_s(instance, cur)
    for _ in range(max_rounds):
        best, best_val = None, cur_val
        for cand in _neighbours(instance, cur):
            v = period_s(instance, cand)
            if v < best_val * (1 - REL_EPS):
                best, best_val = cand, v
        if best is None:
            break
        cur, cur_val = best, best_val
    return cur


def _neighbours(instance: Instance, stages: tuple[Stage, ...]):  # type: ignore[no-untyped-def]
    used = {d for s in stages for d in s.devices}
    unused = [d for d in instance.device_names if d not in used]
    for k, st in enumerate(stages):
        need = instance.mem_bytes(st.first, st.last)
        for d in unused:
            if instance.device_by_name[d].mem_bytes >= need:
                yield (*stages[:k], Stage(st.first, st.last, (*st.devices, d)), *stages[k + 1 :])
    for k in range(len(stages) - 1):
        a, b = stages[k], stages[k + 1]
        # merge two neighbours onto one side's devices and reuse the freed devices as replicas of
        # some stage (possibly the merged one): how a pipeline using every device makes room
        merged_span = (a.first, b.last)
        for keep, freed in ((a.devices, b.devices), (b.devices, a.devices)):
            merged = Stage(*merged_span, keep)
            if not _fits(instance, merged):
                continue
            base = (*stages[:k], merged, *stages[k + 2 :])
            for q, st in enumerate(base):
                grown = Stage(st.first, st.last, (*st.devices, *freed))
                if _fits(instance, grown):
                    yield (*base[:q], grown, *base[q + 1 :])
        for delta in (-1, 1):
            cut = a.last + delta
            if not (a.first <= cut < b.last):
                continue
            na, nb = Stage(a.first, cut, a.devices), Stage(cut + 1, b.last, b.devices)
            if _fits(instance, na) and _fits(instance, nb):
                yield (*stages[:k], na, nb, *stages[k + 2 :])


def _fits(instance: Instance, st: Stage) -> bool:
    need = instance.mem_bytes(st.first, st.last)
    return all(instance.device_by_name[d].mem_bytes >= need for d in st.devices)


__all__ = ["PicoOptions", "plan_pico"]
