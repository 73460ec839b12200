"""PICO's many-to-many mapping: a stage may run on several devices that take turns (S7).

A stage served by devices ``G`` handles requests in proportion to each replica's speed, so its
period is ``1 / sum_{d in G} 1 / T_d`` (the "replicas-rate"; see :mod:`coinfer.core.evaluate`),
and between replicated stages every replica pair ``(u, v)`` carries the share ``w_u * w_v`` of
the traffic. Replication lets a pipeline use devices that a one-device-per-stage plan would
leave idle, which is how PICO reaches its 1.8–6.8x on 2–8 Raspberry Pis.

Objectives. Replicas only pay off for **throughput**. For latency, the reference model routes a
lone request through one replica per stage, and the one-device plan along that route is also
valid, so :func:`~coinfer.plan.chain.dp.plan_dp` is already optimal; for energy, a replicated plan's
energy is the average over the routes a request may take, never below the best route. For those
two objectives this planner returns dp's plan (exact).

Throughput, two regimes:

- **Exact** (when the brute-force candidate count is at most ``exact_limit``): a depth-first
  branch and bound over ordered sequences of (piece range, disjoint device group) with *exact*
  per-device and per-link loads, pruned by the incumbent (dp's optimum, then anything better)
  and by a lower bound on the pieces left (each remaining piece needs at least
  ``1 / sum of the rates of the unused devices`` of some stage's time). Exact in PICO's model;
  tested equal to brute force with replicas.
- **Greedy** (larger instances; ``details["method"] == "greedy"``): a multi-start local search.
  Starts: dp's optimal one-device plan; PICO's own idea, *grouping devices into stages* — lay
  the devices out in an order (fastest first, slowest first, source first, and more orders: all
  of them for up to 5 devices, else seeded random ones) and let a polynomial DP
  (:func:`_grouped_dp`) choose the piece cuts and which consecutive run of the order serves each
  stage as its replicas; and data parallelism (every device that can hold the model replicates
  all of it). Each start descends by the best improving move, scored by an exact memoised copy
  of the reference period: add / drop / move / swap a replica, merge two neighbouring stages
  (their freed devices optionally becoming replicas elsewhere — dp's optimum usually uses every
  device, so replication must first free one), split a replicated stage, shift a boundary. Then
  seeded kicks (iterated local search) perturb the best plan by 2–3 random moves and descend
  again. Budgets are counts of scored plans, so the result is deterministic given the seed.
  On random 10 x 4 instances it matched the exact optimum on all 130 measured (the old
  hill-climb from dp alone: 4.8 % mean, 33 % worst gap on the benchmark's 30).

Either way the result is never worse than dp's plan (it is the first start / the incumbent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...core.evaluate import period_s, replica_weights
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage
from .._shared import REL_EPS, TransferTable, finish
from ._pico_search import replica_shares, search_from_starts
from .brute import count_candidates
from .dp import DPOptions, plan_dp

# A replica serving less than this share of its stage's requests is dropped from the plan (see
# ``_without_idle_replicas``); far below any speed ratio between real devices (1e-6 = a replica a
# million times slower than its stage's others).
MIN_REPLICA_SHARE = 1e-6


@dataclass(frozen=True)
class PicoOptions:
    """Options of :func:`plan_pico`.

    Attributes
    ----------
    exact_limit : solve exactly by branch and bound when brute force with replicas would score
        at most this many candidates (the B&B visits far fewer); otherwise search heuristically.
    node_limit : cap on branch-and-bound nodes (``details["exact"]`` False if hit).
    max_rounds : cap on local-search rounds per starting plan.
    max_evals : cap on distinct plans one descent scores. A count, not a clock, so the result
        does not depend on machine load; a plan costs ~10 us (10 x 4) to ~60 us (48 x 16) to
        score here, and 4 000 binds only on the largest instances (dp's start at 48 x 16).
    kicks : at most this many perturbation rounds after the starts' descents (iterated local
        search; 200 is reached only by small instances that keep improving): 2–3
        random moves applied to the best plan, then a descent; kept if better. Local optima
        of the move set are common under tight memory, where most single moves are infeasible.
    kick_evals : cap on plans scored by all kicks together (keeps 48 x 16 under ~2 s; small
        instances finish all ``kicks`` well within it).
    patience : stop kicking after this many kicks in a row found nothing better.
    orders : grouped-DP runs over further device orders (every order when ``D!`` is at most
        this; 120 = all orders of 5 devices; ~1-4 ms each on small instances).
    order_cells : cap on ``orders * P * D^2`` (a grouped DP costs ~2 us per cell here), so
        48 x 16 runs ~8 further orders, 10 x 4 all 24.
    seed : seed of the random device orders and the kicks' random moves (the search is
        deterministic given it).
    """

    exact_limit: int = 200_000
    node_limit: int = 300_000
    max_rounds: int = 200
    max_evals: int = 4_000
    kicks: int = 200
    kick_evals: int = 8_000
    patience: int = 100
    orders: int = 120
    order_cells: int = 100_000
    seed: int = 0


def plan_pico(instance: Instance, objective: Objective, options: PicoOptions | None = None) -> Plan:
    """Pipeline with replicated stages (PICO, S7); see the module docstring.

    Exact (small instances) or a seeded multi-start local search (large ones: dp's optimum,
    PICO-style grouped-DP plans and data parallelism as starts) for throughput; dp's exact plan
    for latency and energy. Never worse than :func:`plan_dp`. ``details`` records the method,
    whether the result is proven optimal, and for the search the winning start and the seed.
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
        stages, details["start"] = search_from_starts(instance, base.stages, opts)
        details["method"] = "greedy"
        details["exact"] = False
        details["seed"] = opts.seed
    stages = _without_idle_replicas(instance, stages)
    details["replicated_stages"] = sum(len(s.devices) > 1 for s in stages)
    return finish(instance, "pico", objective, stages, details=details)


def _without_idle_replicas(instance: Instance, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """Each replicated stage without the replicas that would serve less than
    :data:`MIN_REPLICA_SHARE` of its requests.

    Why: a device priced out of the work (a SoC family's outside source, timed at millions of
    seconds) still adds its ~1e-8 of rate, so the search may "improve" a plan by adding it — a
    replica that never gets a request in practice but holds a core, a worker and a route (on a
    SoC it even clashes with the core group beside it). Dropping it changes the period by less
    than the share it would have served."""
    out = []
    for st in stages:
        if len(st.devices) > 1:
            w = replica_weights(instance, st)
            keep = [i for i, x in enumerate(w) if x >= MIN_REPLICA_SHARE]
            if len(keep) < len(st.devices):
                st = Stage(
                    st.first,
                    st.last,
                    tuple(st.devices[i] for i in keep),
                    None if st.freqs is None else tuple(st.freqs[i] for i in keep),
                )
        out.append(st)
    return tuple(out)


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
                w = replica_shares(times)
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


__all__ = ["PicoOptions", "plan_pico"]
