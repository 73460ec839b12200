"""Helpers every planner in ``coinfer.plan`` shares (private: planners import, users don't).

Why a module: each planner ends the same way — turn its stages into a :class:`Plan` whose
``predicted`` is exactly the reference :func:`~coinfer.plan.evaluate.evaluate` — and several
need the same per-transfer quantities (one request's path time, the busiest hop, the
transmit energy). Keeping them here keeps the planners' own files about their algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError
from .evaluate import evaluate
from .instance import Device, Instance
from .types import Objective, Plan, Stage

# Relative tolerance when planners compare float objective values (ties, "equal to bound").
# Costs are sums of at most a few hundred float terms, so 1e-12 relative is far above rounding
# noise yet far below any real difference between two plans.
REL_EPS = 1e-12


def finish(
    instance: Instance,
    algo: str,
    objective: Objective,
    stages: Sequence[Stage],
    *,
    seed: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> Plan:
    """Wrap ``stages`` into a :class:`Plan` predicted by the reference model (never by hand)."""
    stages = tuple(stages)
    return Plan(
        algo=algo,
        objective=objective,
        stages=stages,
        predicted=evaluate(instance, stages),
        seed=seed,
        details=dict(details or {}),
    )


def hop_max_s(instance: Instance, u: str, v: str, nbytes: float) -> float:
    """Busiest single link of the ``u -> v`` transfer: what that transfer alone adds to the period.

    The reference period counts each link's occupancy, not the whole path time, so a lower
    bound on the period contributed by a transfer is its largest hop (0 on one device,
    ``inf`` when unreachable)."""
    if u == v:
        return 0.0
    path = instance.path(u, v, nbytes)
    if not path:
        return math.inf
    return max(lk.transfer_s(nbytes) for lk in path)


def transfer_energy_j(instance: Instance, u: str, v: str, nbytes: float) -> float:
    """Radio energy of one ``u -> v`` transfer: each hop's time x its sender's transmit power."""
    if u == v:
        return 0.0
    path = instance.path(u, v, nbytes)
    if not path:
        return math.inf
    total = 0.0
    for lk in path:
        ptx = instance.device_by_name[lk.src].power_transmit_w or 0.0
        total += lk.transfer_s(nbytes) * ptx
    return total


def best_energy_freq(device: Device) -> float:
    """DVFS level minimising compute energy ``(t / f) * P(f)``; independent of the work ``t``.

    Energy of a fixed amount of work at level ``f`` is ``t * P(f) / f``, so the best level is a
    property of the device alone. Ties go to the higher level (faster for the same joules)."""
    best_f, best_e = 1.0, math.inf
    for f in sorted(device.dvfs_levels, reverse=True):
        e = device.active_power_w(f) / f
        if e < best_e * (1 - REL_EPS):
            best_f, best_e = f, e
    return best_f


def energy_devices(instance: Instance) -> tuple[str, ...]:
    """Devices a plan minimising energy may use: those with a power figure.

    The reference energy is undefined (``None``) for a plan touching a device without power
    figures, so such devices cannot be part of an energy-optimal plan."""
    usable = tuple(d.name for d in instance.devices if d.has_power)
    if not usable:
        raise InputError(
            f"{instance.name}: objective 'energy' needs power figures (power_active) on at least "
            "one device; none has any"
        )
    return usable


def stage_freqs(
    instance: Instance, objective: str, devices: Sequence[str]
) -> tuple[float, ...] | None:
    """Per-device DVFS levels for a stage: f_max for time objectives, the energy-best level for energy."""
    if objective != "energy":
        return None
    freqs = tuple(best_energy_freq(instance.device_by_name[d]) for d in devices)
    return None if all(f == 1.0 for f in freqs) else freqs


def close(a: float, b: float) -> bool:
    """Float equality at planner tolerance (see :data:`REL_EPS`)."""
    return a == b or math.isclose(a, b, rel_tol=REL_EPS, abs_tol=1e-300)


def infeasible_message(instance: Instance, algo: str, devices: Sequence[str] | None = None) -> str:
    """One line explaining why no plan fits in memory, naming the tightest device and bytes short.

    The diagnostic packs the pieces in order onto the allowed devices, largest memory first,
    each taking as many whole pieces as fit; the device left holding what remains is the
    tightest one and its overflow is the shortfall (a greedy witness, not a proof)."""
    names = list(devices) if devices is not None else list(instance.device_names)
    order = sorted(names, key=lambda d: -instance.device_by_name[d].mem_bytes)
    first = 0
    last_dev = order[0]
    for d in order:
        cap = instance.device_by_name[d].mem_bytes
        last = first - 1
        while last + 1 < instance.num_pieces and instance.mem_bytes(first, last + 1) <= cap:
            last += 1
        last_dev = d
        if last == instance.num_pieces - 1:
            break
        if last >= first:
            first = last + 1
    need = instance.mem_bytes(first, instance.num_pieces - 1)
    cap = instance.device_by_name[last_dev].mem_bytes
    return (
        f"{algo}: no plan fits in memory: after filling the larger devices, device {last_dev!r} "
        f"would need {need} bytes for pieces {first}..{instance.num_pieces - 1} but has {cap} "
        f"({need - cap} bytes short)"
    )
