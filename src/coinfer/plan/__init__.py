"""coinfer.plan — the front door to every planner.

:func:`plan` picks a planner from the registry by name, checks the request (objective known
and supported, the planner's needs met, the model can fit in memory at all), runs it, times
it and checks the result against the reference cost model before handing it back. :func:`compare`
runs several planners on one instance for a side-by-side table.

Planners themselves are pure functions of an :class:`~coinfer.core.instance.Instance`, grouped by
the space they search: ``chain/`` (dp, brute, pico, split2, baselines), ``search/`` (pso, bayes),
``graph/`` (mincut, cic, route), ``fused/`` (fused-layer tiles); ``_shared`` holds what they have
in common. See :mod:`coinfer.plan.registry` for the table and ``docs/planners.md`` for the
catalogue. Nothing here imports torch or anything outside :mod:`coinfer.core`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from ..core.cores import has_core_groups
from ..core.evaluate import check_plan, evaluate, memory_bound_check
from ..core.instance import Instance, load_instance
from ..core.plans import Metrics, Objective, Plan, Stage, check_objective
from ..errors import CoinferError, InputError
from .percore import plan_core_groups
from .registry import PLANNERS, PlannerInfo, get_planner, unmet_need


def plan(
    instance: Instance, algo: str = "default", objective: str = "throughput", **options: Any
) -> Plan:
    """Plan ``instance`` with planner ``algo`` for ``objective``; the one entry point users need.

    Parameters
    ----------
    instance : the planning problem (pieces, devices, links, source).
    algo : a registry name (case-insensitive); ``"default"`` is pico (dp's exact plan plus replicas where they pay).
    objective : ``"latency"``, ``"throughput"`` (minimise the period) or ``"energy"``.
    **options : fields of the planner's options dataclass (e.g. ``seed=3`` for seeded ones).

    Returns
    -------
    Plan
        With ``predicted`` equal to the reference evaluation and ``planning_time_s`` measured here.
        On an instance with SoC core groups the planner runs once per family of disjoint groups
        and the best plan is returned (:mod:`coinfer.plan.percore`).

    Raises
    ------
    InputError
        Unknown planner/objective/option, unsupported objective, unmet needs.
    InfeasibleError
        Nothing fits in memory (the message names the tightest device and the bytes short).
    """
    obj = check_objective(objective)
    info = get_planner(algo)
    _check_applicable(info, instance, obj)
    memory_bound_check(instance)
    opts = _build_options(info, options)
    t0 = time.perf_counter()
    if has_core_groups(instance):  # a SoC's cores: search how many each stage gets (percore)
        result = plan_core_groups(instance, lambda sub: info.func(sub, obj, opts), obj)
    else:
        result = info.func(instance, obj, opts)
    elapsed = time.perf_counter() - t0
    check_plan(instance, result)
    return result.with_timing(elapsed)


def compare(
    instance: Instance,
    objective: str = "throughput",
    algos: Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> list[Plan | CoinferError]:
    """Run several planners on ``instance``; one entry per planner, in order.

    ``algos=None`` means every registered planner. Each entry is the :class:`Plan`, or the
    :class:`~coinfer.errors.CoinferError` that planner raised (unsupported objective, unmet
    needs, infeasible, too large for brute force) so one failure never hides the others.
    Seeded planners get ``seed``.
    """
    obj = check_objective(objective)
    names = list(algos) if algos is not None else sorted(PLANNERS)
    infos = [get_planner(a) for a in names]  # unknown names fail up front, before any work
    out: list[Plan | CoinferError] = []
    for info in infos:
        try:
            extra = {"seed": seed} if info.seeded else {}
            out.append(plan(instance, info.name, obj, **extra))
        except CoinferError as exc:
            out.append(exc)
    return out


def skip_reason(info: PlannerInfo, instance: Instance, objective: str) -> str | None:
    """Why ``info`` does not apply to ``instance``/``objective`` (None when it does)."""
    if objective not in info.objectives:
        return f"supports {', '.join(sorted(info.objectives))}, not {objective}"
    if objective == "energy" and not any(d.has_power for d in instance.devices):
        return "objective 'energy' needs power figures (power_active) on at least one device; none has any"
    return unmet_need(info, instance)


def _check_applicable(info: PlannerInfo, instance: Instance, objective: str) -> None:
    why = skip_reason(info, instance, objective)
    if why is not None:
        raise InputError(f"planner {info.name!r} cannot plan {instance.name!r}: {why}")


def _build_options(info: PlannerInfo, options: dict[str, Any]) -> Any:
    if not options:
        return None
    fields = {f.name for f in dataclasses.fields(info.options_type)}
    unknown = sorted(set(options) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise InputError(
            f"planner {info.name!r} has no option {unknown[0]!r}; its options: {valid}"
        )
    try:
        return info.options_type(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"planner {info.name!r}: bad options {options}: {exc}") from None


__all__ = [
    "PLANNERS",
    "Instance",
    "Metrics",
    "Objective",
    "Plan",
    "PlannerInfo",
    "Stage",
    "compare",
    "evaluate",
    "get_planner",
    "load_instance",
    "plan",
    "skip_reason",
]
