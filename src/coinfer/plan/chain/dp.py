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

**Beyond exact reach.** Bitsets of ``2^D`` bits stop being cheap near 20 devices. With more than
``max_exact_devices`` usable devices the planner keeps the source and the fastest others (by
total compute time over the model) and solves that sub-cluster exactly; ``details["exact"]`` is
then False. ``benchmarks/bench_planners.py`` measures the gap this costs.

Complexity summary: throughput ``O(log(C) (P D^2 + P^2 D) 2^D / w)`` with ``C`` candidates and
``w`` = machine word bits; latency/energy ``O(P^2 D + P D^2)`` when the relaxation is tight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.instance import Instance
from ...core.plans import Objective, Plan
from .._shared import finish
from ._dp_model import ChainModel
from ._dp_period import min_period_path, polish_latency
from ._dp_sum import least_sum_path, min_sum_path


@dataclass(frozen=True)
class DPOptions:
    """Options of :func:`plan_dp`.

    Attributes
    ----------
    max_exact_devices : above this many usable devices, plan over the source + the fastest
        others (exact on that sub-cluster only). 16 keeps a 2^16-bit state set per (piece, device).
    tie_break_latency : for throughput, among period-optimal plans return one with least latency.
    node_limit : cap on branch-and-bound nodes of the shared-link period search before settling
        for the best plan found (``details["exact"]`` turns False if the cap is hit).
    reuse_branch_limit : cap on search nodes of the latency/energy search when the relaxation
        reuses devices (each node is one numpy relaxation); past it, a heuristic dive.
    """

    max_exact_devices: int = 16
    tie_break_latency: bool = True
    node_limit: int = 50_000
    reuse_branch_limit: int = 2_000


def plan_dp(instance: Instance, objective: Objective, options: DPOptions | None = None) -> Plan:
    """Optimal one-device-per-stage pipeline (exact; latency, throughput, energy). See module docs.

    Raises
    ------
    InfeasibleError
        No plan fits in memory or reaches the source (message names the tightest device).
    InputError
        Energy objective on an instance without power figures.
    """
    opts = options or DPOptions()
    devices, complete = select_devices(instance, objective, opts.max_exact_devices)
    model = ChainModel(instance, objective, devices)
    details: dict[str, Any] = {"devices_considered": len(devices)}
    if objective == "throughput":
        path, exact, bound, tied = min_period_path(model, opts.node_limit, opts.tie_break_latency)
        details["period_lower_bound_s"] = bound
        details["least_latency_among_optimal"] = tied
    else:
        path, exact = min_sum_path(model, opts.reuse_branch_limit)
    details["exact"] = bool(exact and complete)
    return finish(instance, "dp", objective, model.stages(path), details=details)


def select_devices(instance: Instance, objective: str, limit: int) -> tuple[list[str], bool]:
    """Usable devices (power figures for energy), cut to ``limit``: the source + the fastest.

    Returns the names in instance order and whether nothing was cut."""
    from .._shared import energy_devices

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
