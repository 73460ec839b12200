"""Every plan of a small instance, enumerated with itertools and scored by the cost oracle.

The ground truth of the planner tests. It shares no code with ``coinfer.plan`` (not even the
``brute`` planner, which it checks): cut sets by ``itertools.combinations``, device groups by
``itertools.permutations`` / subsets, memory by :func:`cost_oracle.oracle_fits`, values by the
oracle's formulas.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from cost_oracle import oracle_energy_j, oracle_fits, oracle_latency_s, oracle_period_s

from coinfer.core.plans import Stage


def _ranges(P: int, k: int) -> Iterator[list[tuple[int, int]]]:
    for cuts in itertools.combinations(range(1, P), k - 1):
        bounds = [0, *cuts, P]
        yield [(bounds[i], bounds[i + 1] - 1) for i in range(k)]


def _groups(names: list[str], k: int, replicas: bool) -> Iterator[tuple[tuple[str, ...], ...]]:
    """Ordered tuples of ``k`` disjoint device groups (singletons unless ``replicas``)."""
    if not replicas:
        for devs in itertools.permutations(names, k):
            yield tuple((d,) for d in devs)
        return
    # label every device with the stage it serves (or none), each stage at least one device
    for labels in itertools.product(range(-1, k), repeat=len(names)):
        groups = [
            tuple(n for n, lab in zip(names, labels, strict=True) if lab == s) for s in range(k)
        ]
        if all(groups):
            yield tuple(groups)


def _with_levels(instance: Any, stages: tuple[Stage, ...]) -> Iterator[tuple[Stage, ...]]:
    """``stages`` at every combination of its devices' DVFS levels."""
    slots = [(k, i) for k, st in enumerate(stages) for i in range(len(st.devices))]
    options = [
        next(d for d in instance.devices if d.name == stages[k].devices[i]).dvfs_levels
        for k, i in slots
    ]
    for levels in itertools.product(*options):
        per_stage: list[list[float]] = [[] for _ in stages]
        for (k, _), f in zip(slots, levels, strict=True):
            per_stage[k].append(f)
        yield tuple(
            Stage(st.first, st.last, st.devices, None if all(f == 1.0 for f in fs) else tuple(fs))
            for st, fs in zip(stages, per_stage, strict=True)
        )


def all_plans(
    instance: Any, *, replicas: bool = False, dvfs: bool = False
) -> Iterator[tuple[Stage, ...]]:
    """Every memory-feasible plan: contiguous stages, disjoint devices; at full speed, or at
    every DVFS level when ``dvfs``."""
    names = list(instance.device_names)
    P = instance.num_pieces
    for k in range(1, min(P, len(names)) + 1):
        for ranges in _ranges(P, k):
            for groups in _groups(names, k, replicas):
                stages = tuple(Stage(a, b, g) for (a, b), g in zip(ranges, groups, strict=True))
                if oracle_fits(instance, stages):
                    yield from _with_levels(instance, stages) if dvfs else (stages,)


def oracle_value(instance: Any, stages: Any, objective: str) -> float:
    if objective == "latency":
        return oracle_latency_s(instance, stages)
    if objective == "throughput":
        return oracle_period_s(instance, stages)
    e = oracle_energy_j(instance, stages)
    return math.inf if e is None else e


def best_value(instance: Any, objective: str, *, replicas: bool = False) -> float | None:
    """The optimum over :func:`all_plans` (``None`` when nothing fits); for energy every DVFS
    level is tried too (slowing down never helps latency or throughput)."""
    best = math.inf
    for stages in all_plans(instance, replicas=replicas, dvfs=objective == "energy"):
        best = min(best, oracle_value(instance, stages, objective))
    return None if math.isinf(best) else best
