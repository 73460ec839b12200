"""Shared helpers of the advanced planners (mincut, route, pso, bayes, fused).

What lives here and why:

- :func:`order_dp` — the exact partition DP for a FIXED device order (S4's inner step). Given
  devices in pipeline order it chooses which of them to use (a subsequence) and where to cut,
  in ``O(P^2 * D^2)``; PSO (S4), the fused planner's NFL baseline and the tests reuse it.
- :func:`enumerate_configs` / :func:`exhaustive_best` — every single-device-stage plan of a
  small instance (the search space of PSO and BO, and their ground truth in tests and the
  benchmark; B1's ``brute`` is the project-wide oracle, this is the same space written small).
- :func:`random_adv_instance` — a seeded generator of small heterogeneous instances for the
  advanced planners' tests and benchmark (B1's ``random_instances`` serves everyone else).
- :func:`finish_plan` — builds the :class:`Plan` with ``predicted = evaluate(stages)``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..core.evaluate import evaluate, objective_value, validate_stages
from ..core.instance import Device, Instance, Link, make_instance
from ..core.plans import Objective, Plan, Stage
from ..errors import InfeasibleError

Config = tuple[Stage, ...]


def finish_plan(
    instance: Instance,
    algo: str,
    objective: Objective,
    stages: Sequence[Stage],
    started: float,
    *,
    seed: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> Plan:
    """Validate ``stages`` and wrap them in a Plan whose prediction is the reference model's."""
    det = dict(details or {})
    validate_stages(instance, stages, allow_revisit=bool(det.get("allow_revisit", False)))
    return Plan(
        algo=algo,
        objective=objective,
        stages=tuple(stages),
        predicted=evaluate(instance, stages),
        planning_time_s=time.perf_counter() - started,
        seed=seed,
        details=det,
    )


def transfer_energy_j(instance: Instance, u: str, v: str, nbytes: float) -> float:
    """Radio energy of one transfer: each hop's time x its sender's transmit power."""
    if u == v:
        return 0.0
    total = 0.0
    for lk in instance.path(u, v, nbytes):
        total += lk.transfer_s(nbytes) * (instance.device_by_name[lk.src].power_transmit_w or 0.0)
    return total


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


def random_adv_instance(
    seed: int | np.random.Generator,
    pieces: int,
    devices: int,
    *,
    tight_memory: bool = False,
    sparse_links: bool = False,
    power: bool = False,
) -> Instance:
    """A small random heterogeneous instance (seeded) for tests and benchmarks.

    Modelling choices, each a rough edge-cluster figure: piece work 1-20 ms on the fastest
    device, device slow-downs 1-6x (a phone vs a laptop); cut sizes 10 kB-2 MB (CNN feature
    maps); links 1-100 MB/s with 0.1-5 ms latency. ``sparse_links`` keeps a ring plus a few
    chords so multi-hop paths matter; ``tight_memory`` gives each device room for 30-80 % of
    the model (one random device all of it, so a plan exists) and memory binds.
    """
    rng = np.random.default_rng(seed)
    names = [f"d{i}" for i in range(devices)]
    work = rng.uniform(1e-3, 20e-3, pieces)
    slow = rng.uniform(1.0, 6.0, devices)
    times = [{n: float(w * s) for n, s in zip(names, slow, strict=True)} for w in work]
    mem = rng.integers(10_000_000, 200_000_000, pieces)
    out = rng.integers(10_000, 2_000_000, pieces)
    total = int(mem.sum())
    roomy = int(rng.integers(devices))  # under tight memory one device holds everything: feasible
    devs = []
    for i, n in enumerate(names):
        if tight_memory and i != roomy:
            cap = int(total * rng.uniform(0.3, 0.8))
            cap = max(cap, int(mem.max()))  # every piece fits somewhere, keeping it feasible
        else:
            cap = 4 * total if not tight_memory else total
        pw = {}
        if power:
            active = float(rng.uniform(2.0, 15.0))
            pw = {
                "power_idle_w": active * 0.2,
                "power_active_w": active,
                "power_transmit_w": float(rng.uniform(0.5, 3.0)),
            }
        devs.append(Device(n, cap if tight_memory or i else max(cap, int(mem.max())), **pw))
    pairs = [(a, b) for a in range(devices) for b in range(devices) if a != b]
    if sparse_links and devices > 3:
        keep = {(i, (i + 1) % devices) for i in range(devices)} | {
            ((i + 1) % devices, i) for i in range(devices)
        }
        extra = [p for p in pairs if p not in keep]
        for idx in rng.choice(len(extra), size=min(len(extra), devices // 2), replace=False):
            keep.add(extra[int(idx)])
        pairs = sorted(keep)
    links = [
        Link(names[a], names[b], float(rng.uniform(1e6, 100e6)), float(rng.uniform(1e-4, 5e-3)))
        for a, b in pairs
    ]
    return make_instance(
        times,
        [int(m) for m in mem],
        [int(b) for b in out],
        int(rng.integers(100_000, 1_000_000)),
        devs,
        links,
        names[0],
        name=f"adv-{pieces}x{devices}",
    )
