"""Baselines: the plans people deploy without an optimiser, so the optimisers have something to beat.

- :func:`plan_single` — the best single device runs the whole model (no cooperation).
- :func:`plan_even` — equal piece counts per device, devices in the cluster's order (GPipe's
  "balanced by count" default; ignores speed, links and memory).
- :func:`plan_memory` — pieces in proportion to device memory, largest-remainder rounding, at
  least one piece per device (what exo and llama.cpp RPC do for LLM layers).

None of them looks at link speeds; ``even`` and ``memory`` ignore the objective altogether
(their split is fixed by counts or memory), which is exactly why they are baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...core.evaluate import objective_value, validate_stages
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage
from ...errors import InfeasibleError
from .._shared import REL_EPS, energy_devices, finish, stage_freqs


@dataclass(frozen=True)
class SingleOptions:
    """:func:`plan_single` has no knobs; the dataclass keeps the planner interface uniform."""


@dataclass(frozen=True)
class EvenOptions:
    """Options of :func:`plan_even`.

    Attributes
    ----------
    max_devices : use at most this many devices (the first ones in cluster order); ``None`` = all.
    """

    max_devices: int | None = None


@dataclass(frozen=True)
class MemoryOptions:
    """:func:`plan_memory` has no knobs; the dataclass keeps the planner interface uniform."""


def plan_single(
    instance: Instance, objective: Objective, options: SingleOptions | None = None
) -> Plan:
    """All pieces on the one device that is best for ``objective`` (exact among one-device plans).

    Complexity ``O(D)`` evaluations. Supports latency, throughput, energy (for energy each
    device runs at its energy-best DVFS level)."""
    names = energy_devices(instance) if objective == "energy" else instance.device_names
    whole = instance.mem_bytes(0, instance.num_pieces - 1)
    best: tuple[Stage, ...] | None = None
    best_val = math.inf
    for d in names:
        if instance.device_by_name[d].mem_bytes < whole:
            continue
        stages = (Stage(0, instance.num_pieces - 1, (d,), stage_freqs(instance, objective, (d,))),)
        val = objective_value(instance, stages, objective)
        if best is None or val < best_val * (1 - REL_EPS):
            best, best_val = stages, val
    if best is None:
        roomiest = max(names, key=lambda n: instance.device_by_name[n].mem_bytes)
        cap = instance.device_by_name[roomiest].mem_bytes
        raise InfeasibleError(
            f"single: the whole model needs {whole} bytes but the largest device {roomiest!r} has {cap} "
            f"({whole - cap} bytes short)"
        )
    return finish(instance, "single", objective, best)


def plan_even(instance: Instance, objective: Objective, options: EvenOptions | None = None) -> Plan:
    """Equal piece counts per device in cluster order, GPipe-style (heuristic baseline).

    With ``P`` pieces and ``D`` devices, ``min(P, D)`` stages get ``floor(P/D)`` or
    ``ceil(P/D)`` pieces (the first ones get the extra piece). Devices keep the order the
    cluster lists them in — the order a user wrote down — rather than a searched order, since
    searching orders is what the real planners are for. ``O(P)``.

    Raises
    ------
    InfeasibleError
        A device cannot hold its share (message names it and the bytes short).
    """
    opts = options or EvenOptions()
    names = list(energy_devices(instance) if objective == "energy" else instance.device_names)
    if opts.max_devices is not None:
        names = names[: max(1, opts.max_devices)]
    k = min(instance.num_pieces, len(names))
    sizes = [instance.num_pieces // k + (1 if i < instance.num_pieces % k else 0) for i in range(k)]
    stages = _stages_from_sizes(instance, objective, names[:k], sizes)
    _check_memory(instance, stages, "even")
    return finish(instance, "even", objective, stages)


def plan_memory(
    instance: Instance, objective: Objective, options: MemoryOptions | None = None
) -> Plan:
    """Pieces in proportion to device memory (exo / llama.cpp style; heuristic baseline).

    Device ``d`` gets ``P * M[d] / sum(M)`` pieces rounded by the largest-remainder method,
    then every device with zero pieces takes one from the device with the most (at least one
    piece per device). With more devices than pieces, only the ``P`` roomiest are used.
    Devices keep cluster order. ``O(P + D log D)``. Counts pieces, not bytes — like exo's
    layer split, it assumes pieces of similar size, so it can still overflow a device.

    Raises
    ------
    InfeasibleError
        A device cannot hold its share (message names it and the bytes short).
    """
    names = list(energy_devices(instance) if objective == "energy" else instance.device_names)
    if len(names) > instance.num_pieces:
        keep = set(
            sorted(names, key=lambda n: -instance.device_by_name[n].mem_bytes)[
                : instance.num_pieces
            ]
        )
        names = [n for n in names if n in keep]
    mems = [instance.device_by_name[n].mem_bytes for n in names]
    sizes = largest_remainder(instance.num_pieces, mems)
    stages = _stages_from_sizes(instance, objective, names, sizes)
    _check_memory(instance, stages, "memory")
    return finish(instance, "memory", objective, stages)


def largest_remainder(total: int, weights: list[int] | list[float]) -> list[int]:
    """Split ``total`` items in proportion to ``weights`` (largest remainder), at least 1 each.

    Requires ``total >= len(weights)``. Ties in the remainders go to the earlier entry. The
    result is monotone: a larger weight never gets fewer items."""
    n = len(weights)
    wsum = float(sum(weights))
    quotas = [total * w / wsum for w in weights]
    sizes = [math.floor(q) for q in quotas]
    left = total - sum(sizes)
    order = sorted(range(n), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in order[:left]:
        sizes[i] += 1
    for i in range(n):  # at least one piece each: take from the currently largest share
        if sizes[i] == 0:
            # among the largest shares, the one with the least weight (then the latest) gives,
            # so a device with more memory never ends up with fewer pieces than a smaller one
            donor = max(range(n), key=lambda j: (sizes[j], -weights[j], j))
            sizes[donor] -= 1
            sizes[i] = 1
    return sizes


def _stages_from_sizes(
    instance: Instance, objective: str, names: list[str], sizes: list[int]
) -> tuple[Stage, ...]:
    stages = []
    first = 0
    for d, n in zip(names, sizes, strict=True):
        stages.append(Stage(first, first + n - 1, (d,), stage_freqs(instance, objective, (d,))))
        first += n
    return tuple(stages)


def _check_memory(instance: Instance, stages: tuple[Stage, ...], algo: str) -> None:
    try:
        validate_stages(instance, stages)
    except InfeasibleError as exc:
        raise InfeasibleError(f"{algo}: {exc}") from None
