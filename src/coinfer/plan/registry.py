"""The planner registry: every planner by name, with what it can do and what it needs.

A planner is a pure function ``plan_x(instance, objective, options=None) -> Plan`` plus one
frozen options dataclass. The registry records, per planner, whether it is exact, which
objectives it supports, whether it is seeded, and what an instance must carry for it to apply
(``needs``). The front door (:func:`coinfer.plan.plan`), ``coinfer compare`` and the common test
suite all read this table — so adding a planner is one import and one entry below:

.. code-block:: python

    from .graph.mincut import MincutOptions, plan_mincut
    ...
    PlannerInfo("mincut", plan_mincut, MincutOptions, exact=True, objectives=TIME, needs="dag",
                summary="..."),

Names are case-insensitive. ``"default"`` is an alias for ``"pico"``: dp's exact one-device-per-
stage plan, improved by replicated stages where the reference model says they pay (for latency
and energy pico returns dp's plan unchanged). Why pico and not dp: on the testbed's fidelity
benchmark (8 zoo CNNs x 5 candidate plans, measured) pico's plan was the measured best, or within
5 % of it, for 6 of 8 models and dp's for 4; with per-range calibration, pico's for 8 of 8 and
dp's for 5 (``benchmarks/results/fidelity.md``). Callers that just
want "a good plan" ask for ``default``, so the alias can move again without breaking them. It
costs ~0.4-0.7 s on the testbed's models where dp takes ~20 ms; live re-planning, which plans
twice a second, therefore re-plans with dp (:data:`REPLAN_DEFAULT`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.instance import Instance
from ..errors import InputError
from .chain.baselines import (
    EvenOptions,
    MemoryOptions,
    SingleOptions,
    plan_even,
    plan_memory,
    plan_single,
)
from .chain.brute import BruteOptions, plan_brute
from .chain.dp import DPOptions, plan_dp
from .chain.pico import PicoOptions, plan_pico
from .chain.split2 import Split2Options, plan_split2
from .fused.planner import FusedOptions, plan_fused
from .graph.mincut import MincutOptions, plan_mincut
from .graph.route import RouteOptions, plan_route
from .reliability import ReliabilityOptions, plan_reliable
from .search.bayes import BayesOptions, plan_bayes
from .search.pso import PSOOptions, plan_pso

# Objective sets, named once so entries stay one line.
ALL = frozenset({"latency", "throughput", "energy"})
TIME = frozenset({"latency", "throughput"})

# The name "default" resolves to this planner (documented in docs/planners.md).
DEFAULT_ALIAS = "pico"
# What "default" means for a planner called in a loop (a session's adapter re-plans every half
# second): dp answers in ~20 ms on the testbed's models, pico in ~0.5 s of CPU.
REPLAN_DEFAULT = "dp"


@dataclass(frozen=True)
class PlannerInfo:
    """One registry entry.

    Attributes
    ----------
    name : lower-case registry name (``coinfer plan --algo NAME``).
    func : the planner, ``func(instance, objective, options) -> Plan``.
    options_type : its frozen options dataclass (the front door builds it from ``**options``).
    exact : optimal within its ``model`` on the small instances brute force can check (the
        common tests assert equality). Planners that switch to a heuristic past some size (dp
        beyond ``max_exact_devices``, pico's greedy regime) say so per plan in ``details["exact"]``.
    objectives : the objectives it supports.
    seeded : takes ``seed`` in its options and records it in the Plan.
    needs : what the instance must carry for the planner to apply (a key of :data:`NEEDS`), or None.
    summary : one line for tables and ``--help``.
    model : the plan space it searches — ``"chain"`` (one device per stage), ``"replicas"``
        (stages may hold several devices, PICO), ``"revisit"`` (a device may serve several
        stages), ``"dag"`` (cuts of the graph, not just the chain). Exactness and the "never
        better than brute force" checks are relative to this space.
    """

    name: str
    func: Callable[..., Any]
    options_type: type
    exact: bool
    objectives: frozenset[str]
    seeded: bool = False
    needs: str | None = None
    summary: str = ""
    model: str = "chain"


def _need_dag(instance: Instance) -> str | None:
    return (
        None
        if instance.meta.get("dag")
        else "the instance carries no DAG (plan from a model, not a bare instance)"
    )


def _need_two_devices(instance: Instance) -> str | None:
    return (
        None
        if len(instance.devices) >= 2
        else f"needs two devices, the instance has {len(instance.devices)}"
    )


def _need_conv_layers(instance: Instance) -> str | None:
    return (
        None
        if instance.meta.get("conv_layers") or instance.meta.get("conv_piece_layers")
        else "the instance carries no conv layer spec (meta 'conv_layers'; a model's instance "
        "has 'conv_piece_layers' when its first pieces are tileable conv/pool layers)"
    )


# need name -> check returning None when met, else one line saying why not. Extend by one entry.
NEEDS: dict[str, Callable[[Instance], str | None]] = {
    "conv layers": _need_conv_layers,
    "dag": _need_dag,
    "two devices": _need_two_devices,
}


PLANNERS: dict[str, PlannerInfo] = {
    info.name: info
    for info in (
        PlannerInfo(
            "brute",
            plan_brute,
            BruteOptions,
            exact=True,
            objectives=ALL,
            summary="exhaustive splits x device orders (ground truth, small instances)",
        ),
        PlannerInfo(
            "dp",
            plan_dp,
            DPOptions,
            exact=True,
            objectives=ALL,
            summary="exact DP over (pieces, last device, used set); per-link bw/latency, relays",
        ),
        PlannerInfo(
            "pico",
            plan_pico,
            PicoOptions,
            exact=True,
            objectives=ALL,
            summary="replicated stages (PICO many-to-many); exact B&B when small, else greedy",
            model="replicas",
        ),
        PlannerInfo(
            "split2",
            plan_split2,
            Split2Options,
            exact=False,
            objectives=ALL,
            summary="best single cut between the source and one server (Neurosurgeon-style)",
        ),
        PlannerInfo(
            "single",
            plan_single,
            SingleOptions,
            exact=False,
            objectives=ALL,
            summary="best single device runs everything (baseline)",
        ),
        PlannerInfo(
            "even",
            plan_even,
            EvenOptions,
            exact=False,
            objectives=ALL,
            summary="equal piece counts per device, cluster order (GPipe-style baseline)",
        ),
        PlannerInfo(
            "memory",
            plan_memory,
            MemoryOptions,
            exact=False,
            objectives=ALL,
            summary="pieces in proportion to device memory (exo/llama.cpp baseline)",
        ),
        PlannerInfo(
            "mincut",
            plan_mincut,
            MincutOptions,
            exact=False,
            objectives=ALL,
            summary="DADS min-cut device/server split of the full DAG (S5); exact latency of 2-location splits",
        ),
        PlannerInfo(
            "route",
            plan_route,
            RouteOptions,
            exact=False,
            objectives=frozenset({"latency"}),
            model="revisit",
            summary="layered-graph shortest path: devices + multi-hop paths (S11)",
        ),
        PlannerInfo(
            "pso",
            plan_pso,
            PSOOptions,
            exact=False,
            objectives=ALL,
            seeded=True,
            summary="particle swarm: PSOMW repair (S2) + S4 placement with exact order DP",
        ),
        PlannerInfo(
            "bayes",
            plan_bayes,
            BayesOptions,
            exact=False,
            objectives=ALL,
            seeded=True,
            summary="Bayesian optimisation, heteroscedastic GP on noisy measurements (S8 Flexi-BOPI)",
        ),
        PlannerInfo(
            "fused",
            plan_fused,
            FusedOptions,
            exact=False,
            seeded=True,
            objectives=frozenset({"latency"}),
            needs="conv layers",
            model="replicas",
            summary="fused-layer spatial tiling with halos across devices vs NFL (S2, DeepThings)",
        ),
        PlannerInfo(
            "reliable",
            plan_reliable,
            ReliabilityOptions,
            exact=False,
            objectives=frozenset({"throughput"}),
            model="replicas",
            summary="best expected goodput under device/link failure rates: plain, avoid, replicate (S1)",
        ),
    )
}


def get_planner(name: str) -> PlannerInfo:
    """Look a planner up by name (case-insensitive; ``"default"`` → :data:`DEFAULT_ALIAS`).

    Raises
    ------
    InputError
        Unknown name; the message lists the valid ones.
    """
    key = name.strip().lower()
    if key == "default":
        key = DEFAULT_ALIAS if DEFAULT_ALIAS in PLANNERS else "brute"
    info = PLANNERS.get(key)
    if info is None:
        valid = ", ".join(["default", *sorted(PLANNERS)])
        raise InputError(f"unknown planner {name!r}; choose one of: {valid}")
    return info


def unmet_need(info: PlannerInfo, instance: Instance) -> str | None:
    """Why ``info`` cannot plan ``instance`` (its ``needs`` unmet), or None if it can."""
    if info.needs is None:
        return None
    check = NEEDS.get(info.needs)
    if check is None:
        return f"unknown need {info.needs!r}"
    return check(instance)


__all__ = [
    "ALL",
    "DEFAULT_ALIAS",
    "NEEDS",
    "PLANNERS",
    "REPLAN_DEFAULT",
    "TIME",
    "PlannerInfo",
    "get_planner",
    "unmet_need",
]
