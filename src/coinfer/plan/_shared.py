"""Helpers every planner in ``coinfer.plan`` shares (private: planners import, users don't).

Why a module: each planner ends the same way — turn its stages into a :class:`Plan` whose
``predicted`` is exactly the reference :func:`~coinfer.core.evaluate.evaluate` — and several
need the same per-transfer quantities (one request's path time, the busiest hop, the
transmit energy). Keeping them here keeps the planners' own files about their algorithm.

What lives here:

- :func:`finish` — validate stages, price them with the reference model, wrap them in a Plan;
- per-transfer quantities: :func:`hop_max_s`, :func:`transfer_energy_j` (an unreachable
  transfer can never happen, so it costs ``inf`` joules as it costs ``inf`` seconds);
- DVFS and memory helpers shared by the chain planners (:func:`best_energy_freq`,
  :func:`stage_freqs`, :func:`memory_feasible`, :func:`infeasible_message`, :class:`TransferTable`);
- the single-device-stage search space: :func:`order_dp` — the exact partition DP for a FIXED
  device order (S4's inner step, ``O(P^2 * D^2)``), reused by PSO, the fused planner's NFL
  baseline and routing; :func:`enumerate_configs` / :func:`exhaustive_best` — every such plan
  of a small instance (PSO's and BO's space, and their ground truth in tests and benchmarks).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..core.evaluate import evaluate, objective_value, validate_stages
from ..core.instance import Device, Instance, Resource
from ..core.plans import Objective, Plan, Stage
from ..errors import InfeasibleError, InputError

# Relative tolerance when planners compare float objective values (ties, "equal to bound").
# Costs are sums of at most a few hundred float terms, so 1e-12 relative is far above rounding
# noise yet far below any real difference between two plans.
REL_EPS = 1e-12


def finish(
    instance: Instance,
    algo: str,
    objective: Objective,
    stages: Sequence[Stage],
    *,
    started: float | None = None,
    seed: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> Plan:
    """Validate ``stages`` and wrap them in a :class:`Plan` predicted by the reference model.

    The prediction is never computed by hand: it is :func:`~coinfer.core.evaluate.evaluate` of
    the stages, so every planner is priced the same way. ``started`` (a ``perf_counter`` value)
    records the planning time for callers that bypass the front door's own timing;
    ``details["allow_revisit"]`` lets planners that reuse a device (routing) pass validation.
    """
    stages = tuple(stages)
    det = dict(details or {})
    validate_stages(instance, stages, allow_revisit=bool(det.get("allow_revisit", False)))
    return Plan(
        algo=algo,
        objective=objective,
        stages=stages,
        predicted=evaluate(instance, stages),
        planning_time_s=0.0 if started is None else time.perf_counter() - started,
        seed=seed,
        details=det,
    )


def hop_max_s(instance: Instance, u: str, v: str, nbytes: float) -> float:
    """Busiest single resource of the ``u -> v`` transfer: what that transfer alone adds to the period.

    The reference period counts each link's occupancy, not the whole path time, so a lower
    bound on the period contributed by a transfer is its busiest resource — a link, or a
    medium that several of its hops cross (0 on one device, ``inf`` when unreachable)."""
    if u == v:
        return 0.0
    path = instance.path(u, v, nbytes)
    if not path:
        return math.inf
    load: dict[Resource, float] = {}
    for lk in path:
        load[lk.resource] = load.get(lk.resource, 0.0) + lk.transfer_s(nbytes)
    return max(load.values())


def transfer_energy_j(instance: Instance, u: str, v: str, nbytes: float) -> float:
    """Radio energy of one ``u -> v`` transfer: each hop's time x its sender's transmit power."""
    if u == v:
        return 0.0
    path = instance.path(u, v, nbytes)
    if not path:
        return math.inf
    total = 0.0
    for lk in path:
        ptx = instance.device_by_name[lk.src].power_transmit_w or 0.0
        total += lk.transfer_s(nbytes) * ptx
    return total


def best_energy_freq(device: Device) -> float:
    """DVFS level minimising compute energy ``(t / f) * P(f)``; independent of the work ``t``.

    Energy of a fixed amount of work at level ``f`` is ``t * P(f) / f``, so the best level is a
    property of the device alone. Ties go to the higher level (faster for the same joules)."""
    best_f, best_e = 1.0, math.inf
    for f in sorted(device.dvfs_levels, reverse=True):
        e = device.active_power_w(f) / f
        if e < best_e * (1 - REL_EPS):
            best_f, best_e = f, e
    return best_f


def energy_devices(instance: Instance) -> tuple[str, ...]:
    """Devices a plan minimising energy may use: those with a power figure.

    The reference energy is undefined (``None``) for a plan touching a device without power
    figures, so such devices cannot be part of an energy-optimal plan."""
    usable = tuple(d.name for d in instance.devices if d.has_power)
    if not usable:
        raise InputError(
            f"{instance.name}: objective 'energy' needs power figures (power_active) on at least "
            "one device; none has any"
        )
    return usable


def stage_freqs(
    instance: Instance, objective: str, devices: Sequence[str]
) -> tuple[float, ...] | None:
    """Per-device DVFS levels for a stage: f_max for time objectives, the energy-best level for energy."""
    if objective != "energy":
        return None
    freqs = tuple(best_energy_freq(instance.device_by_name[d]) for d in devices)
    return None if all(f == 1.0 for f in freqs) else freqs


def close(a: float, b: float) -> bool:
    """Float equality at planner tolerance (see :data:`REL_EPS`)."""
    return a == b or math.isclose(a, b, rel_tol=REL_EPS, abs_tol=1e-300)


def infeasible_message(instance: Instance, algo: str, devices: Sequence[str] | None = None) -> str:
    """One line explaining why no plan fits in memory, naming the tightest device and bytes short.

    The diagnostic packs the pieces in order onto the allowed devices, largest memory first,
    each taking as many whole pieces as fit; the smallest device, left holding what remains, is
    the tightest one and its overflow is the shortfall (a greedy witness, not a proof). If that
    packing fits, memory is not the obstacle and the message names the missing routes instead."""
    names = list(devices) if devices is not None else list(instance.device_names)
    order = sorted(names, key=lambda d: -instance.device_by_name[d].mem_bytes)
    first = 0
    for d in order[:-1]:  # every device but the smallest takes as many whole pieces as fit
        cap = instance.device_by_name[d].mem_bytes
        while first < instance.num_pieces - 1 and instance.mem_bytes(first, first) <= cap:
            cap -= instance.mem_bytes(first, first)
            first += 1
    last_dev = order[-1]  # ... and the smallest must hold the rest
    need = instance.mem_bytes(first, instance.num_pieces - 1)
    cap = instance.device_by_name[last_dev].mem_bytes
    if need <= cap or memory_feasible(instance, names):  # memory fits: the links rule plans out
        cut = [
            f"{u!r} -> {v!r}"
            for d in names
            for u, v in ((instance.source, d), (d, instance.source))
            if u != v and not instance.path(u, v, 1.0)
        ]
        return (
            f"{algo}: no plan both fits in memory and reaches the source {instance.source!r}: "
            f"no route for {', '.join(cut[:4]) or 'the transfers the memory-feasible plans need'}"
        )
    return (
        f"{algo}: no plan fits in memory: after filling the larger devices, device {last_dev!r} "
        f"would need {need} bytes for pieces {first}..{instance.num_pieces - 1} but has {cap} "
        f"({need - cap} bytes short)"
    )


def memory_feasible(instance: Instance, names: Sequence[str]) -> bool:
    """Whether some ordered split onto distinct devices of ``names`` fits in memory (links ignored).

    Exact: reachability over (pieces done, used-device set) with the sets of each step held as one
    bitset (a Python int over the ``2^D`` subsets), as in :mod:`coinfer.plan.chain.dp`."""
    n, P = len(names), instance.num_pieces
    if n > 20:  # 2^20-bit sets: beyond this, assume memory is not the obstacle
        return True
    size = 1 << n
    caps = [instance.device_by_name[d].mem_bytes for d in names]
    without = []
    for e in range(n):  # bitset of the subsets that do not contain device e
        run = 1 << e
        pattern, length = (1 << run) - 1, 2 * run
        while length < size:
            pattern |= pattern << length
            length *= 2
        without.append(pattern & ((1 << size) - 1))
    reach = [0] * (P + 1)
    reach[0] = 1  # only the empty set before any stage
    for i in range(P):
        if not reach[i]:
            continue
        for e in range(n):
            shifted = (reach[i] & without[e]) << (1 << e)
            if not shifted:
                continue
            j = i
            while j < P and instance.mem_bytes(i, j) <= caps[e]:
                reach[j + 1] |= shifted
                j += 1
    return reach[P] != 0


class TransferTable:
    """Every transfer a chain plan can make, precomputed: ``[k, u, v]`` for cut ``k`` (bytes ``b[k]``).

    ``total_s`` is the one-request time (latency term), ``hop_s`` the busiest single link (the
    transfer's own contribution to the period) and ``energy_j`` the radio energy; devices are
    indexed in instance order. Paths are exactly :meth:`Instance.path`'s: an all-pairs
    single-source run of the same Dijkstra per device and distinct byte size replaces the
    ``D^2`` per-pair searches (``tests/plan/test_plan_common.py`` checks they agree).
    ``paths[k][u][v]`` lists ``(resource, hop seconds)`` for exact load accounting: the resource
    is the directed link, or the shared medium the hop crosses (hops over one medium add up).
    """

    def __init__(self, instance: Instance) -> None:
        import numpy as np

        names = instance.device_names
        n = len(names)
        idx = {d: i for i, d in enumerate(names)}
        ncut = instance.num_pieces + 1
        self.total_s = np.zeros((ncut, n, n))
        self.hop_s = np.zeros((ncut, n, n))
        self.energy_j = np.zeros((ncut, n, n))
        self.paths: list[list[list[tuple[Resource, float]]]] = []
        ptx = [instance.device_by_name[d].power_transmit_w or 0.0 for d in names]
        by_bytes: dict[int, tuple] = {}
        for k in range(ncut):
            x = instance.cut_bytes(k)
            if x not in by_bytes:
                by_bytes[x] = self._for_bytes(instance, names, idx, ptx, x, np)
            tot, hop, en, paths = by_bytes[x]
            self.total_s[k], self.hop_s[k], self.energy_j[k] = tot, hop, en
            self.paths.append(paths)

    @staticmethod
    def _for_bytes(instance: Instance, names, idx, ptx, x: int, np):  # type: ignore[no-untyped-def]
        n = len(names)
        tot = np.zeros((n, n))
        hop = np.zeros((n, n))
        en = np.zeros((n, n))
        paths: list[list[list[tuple[Resource, float]]]] = [[[] for _ in range(n)] for _ in range(n)]
        for u in range(n):
            tree = instance.paths_from(names[u], x)
            for v in range(n):
                if u == v:
                    continue
                path = tree.get(names[v])
                if path is None:
                    tot[u, v] = hop[u, v] = en[u, v] = np.inf
                    continue
                times = [h.transfer_s(x) for h in path]
                tot[u, v] = sum(times)
                load: dict[Resource, float] = {}
                for h, t in zip(path, times, strict=True):
                    load[h.resource] = load.get(h.resource, 0.0) + t
                hop[u, v] = max(load.values())
                en[u, v] = sum(t * ptx[idx[h.src]] for h, t in zip(path, times, strict=True))
                paths[u][v] = [(h.resource, t) for h, t in zip(path, times, strict=True)]
        return tot, hop, en, paths


# ----- the single-device-stage search space (S4's inner DP, PSO/BO's space, small ground truth)

Config = tuple[Stage, ...]


def order_dp(
    instance: Instance, order: Sequence[str], objective: Objective
) -> tuple[float, Config] | None:
    """Exact best partition of the pieces over a subsequence of ``order`` (one device per stage).

    The DP runs over ``(pieces done i, last used position j)``; a transition picks the next
    used position ``j' > j`` and the next cut ``i' > i``. Latency and energy are sums over the
    stages, so the DP is exact for them; for throughput it minimises the bottleneck of the
    per-stage compute and per-transfer link times, which is exact unless two transfers of the
    plan share a directed link on multi-hop paths (the caller re-evaluates with the reference
    model, so the returned value is always the true one). Returns ``None`` when no subsequence
    fits in memory. Complexity ``O(P^2 * D^2)`` time, ``O(P * D)`` memory.
    """
    P = instance.num_pieces
    D = len(order)
    src = instance.source
    bottleneck = objective == "throughput"
    energy = objective == "energy"
    if energy and not all(instance.device_by_name[d].has_power for d in order):
        energy = False  # no power figures: fall back to latency's additive form (documented)

    def comb(a: float, b: float) -> float:
        return max(a, b) if bottleneck else a + b

    def hop(u: str, v: str, nbytes: float) -> float:
        if energy:
            return transfer_energy_j(instance, u, v, nbytes)
        return instance.transfer_s(u, v, nbytes)

    def comp(i: int, k: int, d: str) -> float:
        t = instance.compute_s(i, k, d)
        return t * instance.device_by_name[d].active_power_w() if energy else t

    inf = math.inf
    # best[j][i]: cost with pieces 0..i-1 done, the last stage on order[j]
    best = [[inf] * (P + 1) for _ in range(D)]
    back: dict[tuple[int, int], tuple[int, int]] = {}
    mem = {d: instance.device_by_name[d].mem_bytes for d in order}
    for j, d in enumerate(order):
        for i2 in range(1, P + 1):
            if instance.mem_bytes(0, i2 - 1) > mem[d]:
                break
            v = comb(hop(src, d, instance.input_bytes), comp(0, i2 - 1, d))
            if v < best[j][i2]:
                best[j][i2] = v
                back[(j, i2)] = (-1, 0)
    for i in range(1, P):
        for j in range(D):
            base = best[j][i]
            if base == inf:
                continue
            u = order[j]
            nbytes = instance.cut_bytes(i)
            for j2 in range(j + 1, D):
                d = order[j2]
                tr = comb(base, hop(u, d, nbytes))
                for i2 in range(i + 1, P + 1):
                    if instance.mem_bytes(i, i2 - 1) > mem[d]:
                        break
                    v = comb(tr, comp(i, i2 - 1, d))
                    if v < best[j2][i2]:
                        best[j2][i2] = v
                        back[(j2, i2)] = (j, i)
    final, at = inf, -1
    for j in range(D):
        if best[j][P] < inf:
            v = comb(best[j][P], hop(order[j], src, instance.output_bytes))
            if v < final:
                final, at = v, j
    if at < 0:
        return None
    stages: list[Stage] = []
    j, i = at, P
    while j >= 0:
        pj, pi = back[(j, i)]
        stages.append(Stage(pi, i - 1, (order[j],)))
        j, i = pj, pi
    cfg = tuple(reversed(stages))
    return objective_value(instance, cfg, objective), cfg


def enumerate_configs(instance: Instance, *, feasible_only: bool = True) -> Iterator[Config]:
    """Every plan with one device per stage and no device reused (B1's brute-force space)."""
    P = instance.num_pieces
    names = instance.device_names
    mem = {d.name: d.mem_bytes for d in instance.devices}
    for k in range(1, min(P, len(names)) + 1):
        for cuts in itertools.combinations(range(P - 1), k - 1):
            bounds = [-1, *cuts, P - 1]
            ranges = [(bounds[s] + 1, bounds[s + 1]) for s in range(k)]
            needs = [instance.mem_bytes(a, b) for a, b in ranges]
            for devs in itertools.permutations(names, k):
                if feasible_only and any(n > mem[d] for n, d in zip(needs, devs, strict=True)):
                    continue
                yield tuple(Stage(a, b, (d,)) for (a, b), d in zip(ranges, devs, strict=True))


def exhaustive_best(instance: Instance, objective: Objective) -> tuple[float, Config]:
    """Ground truth over :func:`enumerate_configs` (small instances only)."""
    best_v, best_c = math.inf, None
    for cfg in enumerate_configs(instance):
        v = objective_value(instance, cfg, objective)
        if v < best_v:
            best_v, best_c = v, cfg
    if best_c is None:
        raise InfeasibleError(f"{instance.name}: no single-device-stage plan fits in memory")
    return best_v, best_c
