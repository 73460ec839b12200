"""Measured vs simulated: the same schedule through the simulator, side by side with a real run.

It lives in ``report`` (not ``runtime``) because it needs both sides: the runtime executes a
schedule and never consults the simulator, so the comparison stays a check between the two.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.schedules import Schedule
from ..runtime.results import RunResult
from ..simulate import simulate


def _err_pct(measured: float, simulated: float) -> float | None:
    """Relative error of the simulation w.r.t. the measurement, in percent (None if undefined)."""
    if not (math.isfinite(measured) and math.isfinite(simulated)) or measured == 0:
        return None
    return 100.0 * (simulated - measured) / measured


def compare_with_simulation(result: RunResult, schedule: Schedule, instance: Any) -> dict[str, Any]:
    """Rows ``{metric, measured, simulated, error_pct}`` for throughput, latency and utilisation.

    Both sides use the same definitions: steady-state throughput (fill and drain trimmed, as in
    :func:`coinfer.core.trace.steady_period`) in requests (samples) per second, latency of a
    micro-batch from its release at the source to its output back there.
    """
    sim = simulate(schedule, instance)
    mb = schedule.microbatch
    rows = [
        ("throughput_rps", result.throughput_rps, sim.throughput_rps * mb),
        ("latency_p50_ms", result.latency_p50_s * 1e3, sim.p50_s * 1e3),
        ("latency_p95_ms", result.latency_p95_s * 1e3, sim.p95_s * 1e3),
    ]
    for d, u in result.utilisation.items():
        rows.append((f"util_{d}", u, float(sim.utilisation.get(d, 0.0))))
    for name, st in result.links.items():  # a shared medium is a resource like a device
        if name.endswith("<->") and result.wall_s > 0:
            busy = float(st.get("busy_s", 0.0)) / result.wall_s
            rows.append((f"util_{name[:-3]}", busy, float(sim.link_utilisation.get(name, 0.0))))
    if result.energy_j_per_request is not None and sim.energy_j is not None:
        rows.append(("energy_j_per_request", result.energy_j_per_request, sim.energy_j))
    return {
        "rows": [
            {"metric": m, "measured": a, "simulated": b, "error_pct": _err_pct(a, b)}
            for m, a, b in rows
        ],
        "simulated": sim.summary(),
    }


__all__ = ["compare_with_simulation"]
