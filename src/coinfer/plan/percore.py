"""Planning SoCs down to single cores: any planner, run once per family of core groups.

A multi-core SoC reaches the planners as *core groups* (``soc.big0``, ``soc.big0-1``, ...; see
:mod:`coinfer.core.cores`): one device per run of cores of one type, of which a plan may use
only groups that share no core. No planner knows that rule, so :func:`plan_core_groups` searches
the core-count dimension around them: for every maximal family of pairwise-disjoint groups it
plans the instance restricted to that family (every plain device kept) and returns the best plan.
Every valid plan lives in some maximal family, so with an exact planner per family (``dp``,
``brute``) the result is exact over how many cores each stage gets; with a heuristic it is the
heuristic's best over the families. ``details["core_families"]`` says how many were planned.

Routing: a family's instance drops the other groups, so transfers cannot be relayed through
them. That changes nothing for a SoC from a cluster file — all its groups share its hand-off
figures and its links to other devices, so a route through an outside group is never cheaper
than the direct hop or the same route through a group in the family — and the winner is priced
on the whole instance in any case (its prediction is the reference evaluation there).

Cost: one planner run per family — 16 for 2 big + 4 LITTLE cores, each on at most 7 devices
(``dp`` takes milliseconds each on ResNet-18's pieces).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.cores import core_families, family_instance
from ..core.evaluate import check_plan, evaluate, memory_bound_check, objective_value
from ..core.instance import Instance
from ..core.plans import Plan
from ..errors import InfeasibleError


def plan_core_groups(instance: Instance, run: Callable[[Instance], Plan], objective: str) -> Plan:
    """The best of ``run`` over the maximal core-group families of ``instance`` for ``objective``.

    The winner is checked against the *whole* instance (its prediction must equal the
    reference evaluation there, and no two of its stages may hold one core).

    Raises
    ------
    InfeasibleError
        No family can hold the model (the last family's reason).
    """
    families = core_families(instance)
    best: tuple[float, int, Plan, tuple[str, ...]] | None = None
    exact = True
    failure: InfeasibleError | None = None
    for n, family in enumerate(families):
        sub = family_instance(instance, family)
        try:
            memory_bound_check(sub)
            result = run(sub)
        except InfeasibleError as exc:
            failure = exc
            continue
        used = {d for st in result.stages for d in st.devices}
        src = instance.source
        if src in used and src not in family and instance.device_by_name[src].cores:
            continue  # the source was priced out of reach here; only chosen when nothing fits
        exact = exact and bool(result.details.get("exact", True))
        value = objective_value(instance, result.stages, objective)
        if best is None or value < best[0]:
            best = (value, n, result, family)
    if best is None:
        raise failure or InfeasibleError(
            f"{instance.name}: no core-group family can hold the model"
        )
    _, _, result, family = best
    details = {
        **dict(result.details),
        "core_families": len(families),
        "core_family": list(family),
    }
    if "exact" in result.details:
        details["exact"] = exact
    chosen = Plan(
        algo=result.algo,
        objective=result.objective,
        stages=result.stages,
        predicted=evaluate(instance, result.stages),
        planning_time_s=result.planning_time_s,
        seed=result.seed,
        details=details,
    )
    check_plan(instance, chosen)
    return chosen


__all__ = ["plan_core_groups"]
