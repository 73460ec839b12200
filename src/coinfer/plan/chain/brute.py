"""Brute force: every contiguous split x every ordered device assignment, evaluated by the reference model.

The ground truth the exact planners (:mod:`~coinfer.plan.chain.dp`, :mod:`~coinfer.plan.chain.pico`) are
tested against on small instances. It enumerates

- ``K = 1 .. min(P, D)`` stages and every way to cut ``P`` pieces into ``K`` contiguous runs
  (``C(P-1, K-1)``),
- every ordered assignment of devices to the stages: one distinct device per stage, or with
  ``replicas=True`` a non-empty set of devices per stage, sets disjoint (PICO's many-to-many
  mapping, S7),
- for the energy objective, every DVFS level of every used device,

and scores each candidate with :func:`~coinfer.core.evaluate.objective_value` — the one
reference cost model — so its answer is optimal by definition. Cost grows like
``C(P-1, K-1) * D! * levels^D`` (x the number of set partitions with replicas); keep it to
about 12 pieces x 4 devices (replicas: 6 x 3). ``max_plans`` refuses bigger problems instead
of running for hours.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ...core.evaluate import objective_value
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage
from ...errors import InfeasibleError, InputError
from .._shared import REL_EPS, energy_devices, finish, infeasible_message


@dataclass(frozen=True)
class BruteOptions:
    """Options of :func:`plan_brute`.

    Attributes
    ----------
    replicas : allow several devices (replicas taking turns) per stage.
    max_plans : refuse (InputError) when the candidate count exceeds this; 100 000 candidates
        is roughly ten seconds of pure-Python evaluation here (~100 us each, measured on 12 x 4).
    """

    replicas: bool = False
    max_plans: int = 100_000


def plan_brute(
    instance: Instance, objective: Objective, options: BruteOptions | None = None
) -> Plan:
    """Optimal plan by exhaustive enumeration (exact; latency, throughput, energy).

    Source: none needed — this is the definition of optimal under the reference cost model.
    Complexity: ``sum_K C(P-1, K-1) * D!/(D-K)!`` evaluations (more with replicas or DVFS),
    each ``O(P + D^2)``. Ties go to the first candidate in enumeration order (fewer stages,
    earlier cuts, devices in instance order), so the result is deterministic.

    Raises
    ------
    InputError
        More than ``options.max_plans`` candidates, or energy without power figures.
    InfeasibleError
        No candidate fits in memory (message names the tightest device and bytes short).
    """
    opts = options or BruteOptions()
    names = energy_devices(instance) if objective == "energy" else instance.device_names
    count = count_candidates(instance, names, replicas=opts.replicas, energy=objective == "energy")
    if count > opts.max_plans:
        raise InputError(
            f"brute: {count} candidate plans for {instance.num_pieces} pieces x {len(names)} devices "
            f"exceeds max_plans={opts.max_plans}; use dp/pico, or a smaller instance"
        )
    best: tuple[Stage, ...] | None = None
    best_val = float("inf")
    for stages in _candidates(instance, names, opts.replicas, objective == "energy"):
        val = objective_value(instance, stages, objective)
        if best is None or val < best_val * (1 - REL_EPS) - 1e-300:
            best, best_val = stages, val
    if best is None:
        raise InfeasibleError(infeasible_message(instance, "brute", names))
    return finish(
        instance, "brute", objective, best, details={"candidates": count, "replicas": opts.replicas}
    )


def count_candidates(
    instance: Instance, names: Sequence[str], *, replicas: bool, energy: bool
) -> int:
    """How many plans :func:`plan_brute` would score, before memory pruning (cheap to compute)."""
    p, d = instance.num_pieces, len(names)
    # levels factor: every used device picks one DVFS level; bound it by the largest level count.
    lv = max(len(instance.device_by_name[n].dvfs_levels) for n in names) if energy else 1
    total = 0
    for k in range(1, min(p, d) + 1):
        splits = _comb(p - 1, k - 1)
        if replicas:
            # ordered tuples of k disjoint non-empty device sets = k! * sum_j C(d, j) S(j, k)
            assign = sum(_comb(d, j) * _stirling2(j, k) for j in range(k, d + 1)) * _fact(k)
            total += splits * assign * lv**d
        else:
            total += splits * _fact(d) // _fact(d - k) * lv**k
    return total


def _candidates(
    instance: Instance, names: Sequence[str], replicas: bool, energy: bool
) -> Iterator[tuple[Stage, ...]]:
    p = instance.num_pieces
    for k in range(1, min(p, len(names)) + 1):
        for cuts in itertools.combinations(range(p - 1), k - 1):
            bounds = [(-1, *cuts)[i] + 1 for i in range(k)]
            ranges = [(bounds[i], (*cuts, p - 1)[i]) for i in range(k)]
            need = [instance.mem_bytes(a, b) for a, b in ranges]
            for groups in _assignments(names, k, replicas):
                if any(
                    instance.device_by_name[dv].mem_bytes < need[i]
                    for i, g in enumerate(groups)
                    for dv in g
                ):
                    continue
                if not energy:
                    yield tuple(Stage(a, b, g) for (a, b), g in zip(ranges, groups, strict=True))
                    continue
                level_sets = [
                    list(itertools.product(*(instance.device_by_name[dv].dvfs_levels for dv in g)))
                    for g in groups
                ]
                for levels in itertools.product(*level_sets):
                    yield tuple(
                        Stage(a, b, g, None if all(f == 1.0 for f in fs) else tuple(fs))
                        for (a, b), g, fs in zip(ranges, groups, levels, strict=True)
                    )


def _assignments(
    names: Sequence[str], k: int, replicas: bool
) -> Iterator[tuple[tuple[str, ...], ...]]:
    """Ordered tuples of ``k`` disjoint device groups (singletons unless ``replicas``)."""
    if not replicas:
        for perm in itertools.permutations(names, k):
            yield tuple((d,) for d in perm)
        return
    # label each device with a stage 0..k-1 or "unused" (k); keep labelings that use every stage
    for labels in itertools.product(range(k + 1), repeat=len(names)):
        if len(set(labels) - {k}) != k:
            continue
        yield tuple(
            tuple(n for n, lab in zip(names, labels, strict=True) if lab == s) for s in range(k)
        )


def _comb(n: int, r: int) -> int:
    return 0 if r < 0 or r > n else _fact(n) // (_fact(r) * _fact(n - r))


def _fact(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out


def _stirling2(n: int, k: int) -> int:
    """Stirling number of the second kind: ways to split ``n`` labelled items into ``k`` blocks."""
    table = [[0] * (k + 1) for _ in range(n + 1)]
    table[0][0] = 1
    for i in range(1, n + 1):
        for j in range(1, min(i, k) + 1):
            table[i][j] = j * table[i - 1][j] + table[i - 1][j - 1]
    return table[n][k]
