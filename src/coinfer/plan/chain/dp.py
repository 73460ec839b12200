"""Exact pipeline planning by dynamic programming over (pieces done, last device, devices used).

The problem (DESIGN.md's reference model, one device per stage): cut the chain of ``P`` pieces
into contiguous stages and give each stage its own device, in pipeline order, minimising the
period (throughput), the latency or the energy per request. Links differ per direction, so the
*order* of devices matters and a device may not be reused — the state must remember the set of
devices used, as PipeEdge's DP does (S-peer; ``usc-isi/PipeEdge``). Unlike PipeEdge, transfers
use per-link bandwidth *and* latency, may be relayed over several hops, and include the source
sending the input and receiving the output.

**Throughput** (parametric search). The period of a plan is at least the largest of its *items*:
each stage's compute time and each transfer's busiest hop (every item occupies one resource for
that long per request). "Is there a plan whose items are all <= T?" is a reachability question
over states ``(i pieces done, last device d, used set S)``; for a fixed ``(i, d)`` the reachable
``S`` form a bitset over ``2^D`` subsets, kept as one Python int, so a transition for all ``S``
at once is an AND with a mask and a shift. The optimum is one of the finitely many item values,
so a binary search over the sorted candidates finds the smallest feasible ``T*`` with
``O(log(P^2 D + P D^2))`` feasibility checks of ``O((P D^2 + P^2 D) * 2^D / 64)`` word operations.
Among plans at ``T*`` the one with the least latency is chosen (the latency search below, on the
items <= ``T*`` only, within a node budget).
When no link carries two transfers of the plan, its period equals ``T*`` and — since ``T*``
bounds every plan from below — it is optimal. If a relayed path makes two transfers share a
link (sparse networks), the true period can exceed ``T*``; then a branch-and-bound over plans
with exact link loads finishes the job (bounded by ``node_limit``; ``details["exact"]`` says
whether optimality was proven).

**Latency and energy** (branch on reuse). Both are sums over stages and transfers. Dropping the
"each device once" rule gives a plain shortest path over ``(i, d)``, solved backwards in
``O(P^2 D + P D^2)`` with numpy; if its optimum already uses every device at most once (the usual
case: a request rarely benefits from leaving a device and coming back), it is optimal. Otherwise
a best-first search branches on the first reused device ``x`` and a piece ``m`` between its two
stages — ``x``'s one stage ends before ``m``, starts at ``m`` or later, or spans ``m - 1..m`` —
solving the same relaxation with those (device, piece range) pairs forbidden in each child; the
first reuse-free relaxed optimum popped is optimal (see :func:`least_sum_path`). Energy runs
every device at its energy-best DVFS level (the level minimising ``P(f)/f``, which does not depend
on the work) and uses only devices with power figures.

**Device classes** (:mod:`._dp_classes`). Devices that are interchangeable — identical
figures, and swapping any two of them maps the instance onto itself — form a class; the used
set then only needs *how many* members of each class are used, ``prod(n_c + 1)`` vectors
instead of ``2^D`` subsets (5 096 for a fleet of 48 phones, 12 boards, 3 servers and a source),
and the same reachability code runs with mixed-radix numbers in place of bit masks
(:mod:`._dp_period`). Transfers between classes are routed on a quotient graph instead of
``D`` Dijkstra runs per cut size. The class DP is chosen automatically when some class has two
or more members and its state count is within ``max_class_states``; it lifts the device limit
(it is exact at 64 devices when they fall into few classes). Its transfer items are lower
bounds on the reference's (ties between cheapest paths), so a plan is reported optimal only
when the reference prices it at the bound; with shared media or links loaded twice it may not
be, and then — if the bitset DP fits — the bitset DP runs instead, else the class plan is
returned with its bound.

**Beyond exact reach** (:mod:`._dp_bound`). With neither DP in reach, the plan is the old cut
(the source and the fastest ``max_exact_devices - 1`` others, solved exactly on them) or, with
``beyond_reach="search"``, the best of that and plans over all devices; in both cases
``details["lower_bound"]`` is a proven lower bound on the optimum over *all* usable devices
(for throughput: the item threshold of a DP over groups of devices priced at each group's best
member, a relaxation of every real plan) and ``details["gap_bound"]`` =
``(value - lower_bound) / lower_bound``. ``benchmarks/bench_replan_fleet.py`` measures both.

Complexity summary: throughput ``O(log(C) (P D^2 + P^2 D) 2^D / w)`` with ``C`` candidates and
``w`` = machine word bits; latency/energy ``O(P^2 D + P D^2)`` when the relaxation is tight.
With ``K`` classes, replace ``D`` by ``K`` and ``2^D`` by ``prod(n_c + 1)`` (plus ``O(D^2)`` to
find the classes and ``O(P K^4)`` numpy work to route between them); 64 devices x 100 pieces
in 4 classes plan in ~0.1-0.2 s here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ...core.evaluate import objective_value, period_s
from ...core.instance import Instance
from ...core.plans import Objective, Plan
from .._shared import close, energy_devices, finish
from ._dp_bound import plan_beyond_reach
from ._dp_classes import ClassModel, class_states, class_sum_path, device_classes
from ._dp_model import ChainModel
from ._dp_period import min_period_path
from ._dp_polish import polish_latency
from ._dp_sum import least_sum_path, min_sum_path, relaxed_to_go

# Dijkstra runs (devices x cut sizes) up to which the beyond-reach cut is solved on the
# reference's own paths (TransferTable, ~0.8 ms a run here); past it, on Floyd–Warshall figures.
TABLE_RUNS_BUDGET = 1500


@dataclass(frozen=True)
class DPOptions:
    """Options of :func:`plan_dp`.

    Attributes
    ----------
    max_exact_devices : most usable devices the bitset DP takes (a 2^16-bit state set per
        (piece, device) at 16).
    max_class_states : most used-count vectors (``prod(n_c + 1)`` over the device classes) the
        class DP takes; 2^16 matches the bitset DP's memory at 16 devices.
    use_classes : group interchangeable devices into classes when that shrinks the state space.
    tie_break_latency : for throughput, among period-optimal plans return one with least latency.
    node_limit : cap on branch-and-bound nodes of the shared-link period search before settling
        for the best plan found (``details["exact"]`` turns False if the cap is hit).
    reuse_branch_limit : cap on search nodes of the latency/energy search when the relaxation
        reuses devices (each node is one numpy relaxation); past it, a heuristic dive.
    beyond_reach : the plan past exact reach: ``"cut"`` keeps the source + the fastest
        ``max_exact_devices`` (the long-standing behaviour); ``"search"`` also tries plans over
        all devices (:mod:`._dp_bound`) and returns the best. Either way the bound is over all.
    bound_states : state budget of the relaxed class DP that bounds the optimum beyond exact
        reach (:mod:`._dp_bound`); larger is a tighter bound and a slower plan.
    """

    max_exact_devices: int = 16
    max_class_states: int = 1 << 16
    use_classes: bool = True
    tie_break_latency: bool = True
    node_limit: int = 50_000
    reuse_branch_limit: int = 2_000
    bound_states: int = 1 << 12
    beyond_reach: Literal["cut", "search"] = "cut"


def plan_dp(instance: Instance, objective: Objective, options: DPOptions | None = None) -> Plan:
    """Optimal one-device-per-stage pipeline (exact; latency, throughput, energy). See module docs.

    ``details``: ``method`` (``"bitset"``, ``"classes"`` or ``"bound"``), ``classes`` (how many
    classes of interchangeable usable devices), ``exact``; when not proven optimal,
    ``lower_bound`` (a proven lower bound on the optimum over all devices, in the objective's
    unit: seconds of period for throughput) and ``gap_bound`` = (value - bound) / bound.

    Raises
    ------
    InfeasibleError
        No plan fits in memory or reaches the source (message names the tightest device).
    InputError
        Energy objective on an instance without power figures.
    """
    opts = options or DPOptions()
    names = list(energy_devices(instance) if objective == "energy" else instance.device_names)
    classes = (
        device_classes(instance) if opts.use_classes else tuple((d,) for d in instance.device_names)
    )
    usable = set(names)
    ucls = [c for c, g in enumerate(classes) if g[0] in usable]
    states = class_states([min(len(classes[c]), instance.num_pieces) for c in ucls])
    details: dict[str, Any] = {"classes": len(ucls)}
    fits_bitset = len(names) <= opts.max_exact_devices
    if states <= opts.max_class_states and len(ucls) < len(names):
        model = ClassModel(instance, objective, classes, ucls)
        path, det = _solve(model, objective, opts)
        if det["exact"] or not fits_bitset:
            details.update(method="classes", devices_considered=len(names), **det)
            return finish(instance, "dp", objective, model.stages(path), details=details)
    if fits_bitset:
        model = ChainModel(instance, objective, names)
        path, det = _solve(model, objective, opts)
        details.update(method="bitset", devices_considered=len(names), **det)
        return finish(instance, "dp", objective, model.stages(path), details=details)
    cut = None
    kept, _ = select_devices(instance, objective, opts.max_exact_devices)
    if len(instance.devices) * (instance.num_pieces + 1) <= TABLE_RUNS_BUDGET:
        model = ChainModel(instance, objective, kept)  # the old cut, solved exactly on its devices
        cut = model.stages(_solve(model, objective, opts)[0])
    stages, det = plan_beyond_reach(
        instance,
        objective,
        names,
        cut,
        max_exact_devices=opts.max_exact_devices,
        bound_states=opts.bound_states,
        search=opts.beyond_reach == "search",
    )
    details.update(method="bound", devices_considered=len(names), **det)
    return finish(instance, "dp", objective, stages, details=details)


def _solve(
    model, objective: str, opts: DPOptions
) -> tuple[list[tuple[int, int, int]], dict[str, Any]]:  # type: ignore[no-untyped-def]
    """One exact search over a model's units; the details it proves (``exact``, bounds)."""
    det: dict[str, Any] = {}
    if objective == "throughput":
        # exact here already means "the reference period of the plan is proven least"
        path, exact, bound, tied = min_period_path(model, opts.node_limit, opts.tie_break_latency)
        det["period_lower_bound_s"] = bound
        det["least_latency_among_optimal"] = tied
        value = period_s(model.instance, model.stages(path))
    elif isinstance(model, ChainModel):
        path, exact = min_sum_path(model, opts.reuse_branch_limit)
        if exact:
            return path, {"exact": True}
        # past the reuse-branching budget: the reuse-allowed relaxation still bounds the optimum
        _H, _G, bound = relaxed_to_go(model.sc, *model.transfer_cost(), "sum")
        value = objective_value(model.instance, model.stages(path), objective)
    else:
        # the class arrays bound the reference's transfer figures from below (ties between
        # cheapest paths): optimal only if the reference prices the plan at the DP's value
        path, proven, bound = class_sum_path(model)
        value = objective_value(model.instance, model.stages(path), objective)
        exact = proven and close(value, bound)
    det["exact"] = bool(exact)
    if not exact:
        det["lower_bound"] = bound
        det["gap_bound"] = (value - bound) / bound if bound > 0 else (0.0 if value == 0 else None)
    return path, det


def select_devices(instance: Instance, objective: str, limit: int) -> tuple[list[str], bool]:
    """Usable devices (power figures for energy), cut to ``limit``: the source + the fastest.

    Returns the names in instance order and whether nothing was cut. (The beyond-reach cut:
    :func:`plan_dp` solves it exactly and :mod:`._dp_bound` bounds its gap.)"""
    names = list(energy_devices(instance) if objective == "energy" else instance.device_names)
    if len(names) <= limit:
        return names, True
    work = {d: sum(pc.time_s[d] for pc in instance.pieces) for d in names}
    keep = {instance.source} & set(names)
    for d in sorted(names, key=lambda d: (work[d], names.index(d))):
        if len(keep) >= limit:
            break
        keep.add(d)
    return [d for d in names if d in keep], False


__all__ = [
    "ChainModel",
    "DPOptions",
    "least_sum_path",
    "min_period_path",
    "min_sum_path",
    "plan_dp",
    "polish_latency",
    "select_devices",
]
