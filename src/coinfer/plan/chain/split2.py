"""Neurosurgeon-style two-way split: the source runs a prefix, one server runs the rest.

The classic device + edge/cloud partition (Neurosurgeon, DADS): the request's own device (the
source) computes pieces ``0..c`` and ships the cut tensor to a single server, which computes the
rest and returns the output. The candidates are every cut ``c`` (including none: all-local, and
all pieces on the server: all-remote) for every server, scored by the reference model. It is
exact within that plan space and the natural baseline for "is a multi-device pipeline worth it".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...core.evaluate import objective_value
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage
from ...errors import InfeasibleError
from .._shared import REL_EPS, energy_devices, finish, stage_freqs


@dataclass(frozen=True)
class Split2Options:
    """Options of :func:`plan_split2`.

    Attributes
    ----------
    server : only consider this server (a device name); ``None`` = the best of all.
    """

    server: str | None = None


def plan_split2(
    instance: Instance, objective: Objective, options: Split2Options | None = None
) -> Plan:
    """Best single cut between the source and one server (exact in its space; all objectives).

    Complexity ``O(P * D)`` evaluations of ``O(1)`` stages each. Ties prefer all-local, then
    earlier servers and cuts.

    Raises
    ------
    InfeasibleError
        No candidate fits in memory.
    InputError
        ``server`` names no device, or energy without power figures.
    """
    from ...errors import InputError

    opts = options or Split2Options()
    src = instance.source
    usable = set(energy_devices(instance) if objective == "energy" else instance.device_names)
    servers = [d for d in instance.device_names if d != src and d in usable]
    if opts.server is not None:
        if opts.server not in instance.device_by_name:
            raise InputError(
                f"split2: server {opts.server!r} is not a device ({list(instance.device_names)})"
            )
        servers = [opts.server] if opts.server in usable and opts.server != src else []
    P = instance.num_pieces
    cands: list[tuple[Stage, ...]] = []
    local_ok = src in usable
    if local_ok:
        cands.append((_stage(instance, objective, 0, P - 1, src),))
    for s in servers:
        cands.append((_stage(instance, objective, 0, P - 1, s),))
        if local_ok:
            for c in range(P - 1):
                cands.append(
                    (
                        _stage(instance, objective, 0, c, src),
                        _stage(instance, objective, c + 1, P - 1, s),
                    )
                )
    best, best_val = None, math.inf
    for stages in cands:
        if not all(
            instance.mem_bytes(st.first, st.last)
            <= instance.device_by_name[st.devices[0]].mem_bytes
            for st in stages
        ):
            continue
        v = objective_value(instance, stages, objective)
        if best is None or v < best_val * (1 - REL_EPS):
            best, best_val = stages, v
    if best is None:
        need = instance.mem_bytes(0, P - 1)
        roomiest = max([src, *servers], key=lambda d: instance.device_by_name[d].mem_bytes)
        cap = instance.device_by_name[roomiest].mem_bytes
        raise InfeasibleError(
            f"split2: no source/server split fits in memory; the model needs {need} bytes, the roomiest "
            f"candidate {roomiest!r} has {cap} and the source {src!r} {instance.device_by_name[src].mem_bytes} "
            f"(together {need - cap - instance.device_by_name[src].mem_bytes} bytes short at best)"
        )
    server = next((st.devices[0] for st in best if st.devices[0] != src), None)
    return finish(
        instance,
        "split2",
        objective,
        best,
        details={"server": server, "cut_after": best[0].last if len(best) == 2 else None},
    )


def _stage(instance: Instance, objective: str, first: int, last: int, device: str) -> Stage:
    return Stage(first, last, (device,), stage_freqs(instance, objective, (device,)))


__all__ = ["Split2Options", "plan_split2"]
