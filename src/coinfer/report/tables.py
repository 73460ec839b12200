"""Rich tables for plans, schedules and simulation results (what the CLI prints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from ..core.schedules import Schedule
from ..simulate.sim import SimResult


def sim_table(
    result: SimResult, *, predicted: Mapping[str, float] | None = None, title: str = "simulation"
) -> Table:
    """Headline metrics of ``result``; with ``predicted`` (a plan's) a side-by-side column and the gap."""
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("simulated", justify="right")
    if predicted is not None:
        t.add_column("reference model", justify="right")
        t.add_column("gap", justify="right")
    rows: list[tuple[str, float | None, float | None, str]] = [
        # request 0 enters an empty system: the reference model's one-request latency
        (
            "latency, request 0 (ms)",
            result.latency_s[0] * 1e3,
            (predicted or {}).get("latency_s"),
            "ms",
        ),
        ("latency p50 (ms)", result.p50_s * 1e3, None, "ms"),
        ("latency p95 (ms)", result.p95_s * 1e3, None, "ms"),
        ("latency p99 (ms)", result.p99_s * 1e3, None, "ms"),
        ("throughput (req/s)", result.throughput_rps, (predicted or {}).get("throughput_rps"), ""),
        ("period (ms)", result.period_s * 1e3, (predicted or {}).get("period_s"), "ms"),
        ("energy / request (J)", result.energy_j, (predicted or {}).get("energy_j"), ""),
    ]
    for name, sim, ref, unit in rows:
        cells = [name, "-" if sim is None else f"{sim:.4g}"]
        if predicted is not None:
            refv = None if ref is None else ref * (1e3 if unit == "ms" else 1.0)
            gap = "" if refv in (None, 0) or sim is None else f"{(sim / refv - 1) * 100:+.1f}%"
            cells += ["-" if refv is None else f"{refv:.4g}", gap]
        t.add_row(*cells)
    return t


def utilisation_table(result: SimResult, *, title: str = "utilisation") -> Table:
    """Busy fraction and longest queue per device and per used link."""
    t = Table(title=title)
    t.add_column("resource")
    t.add_column("busy", justify="right")
    t.add_column("max queue", justify="right")
    mq = result.max_queue
    for name, u in {**result.utilisation, **result.link_utilisation}.items():
        t.add_row(name, f"{u * 100:.1f}%", str(mq.get(name, 0)))
    return t


def schedule_table(sched: Schedule, *, max_actions: int = 24) -> Table:
    """One row per device: its first ``max_actions`` actions in text form."""
    t = Table(
        title=f"schedule: {sched.requests} requests x {sched.microbatch}, source {sched.source}, window {sched.window}"
    )
    t.add_column("device")
    t.add_column("actions", overflow="fold")
    for dev, acts in sched.actions.items():
        shown = " ".join(str(a) for a in acts[:max_actions])
        more = f" … (+{len(acts) - max_actions})" if len(acts) > max_actions else ""
        t.add_row(dev, shown + more)
    return t


def rows_table(rows: Sequence[Mapping[str, Any]], *, title: str = "") -> Table:
    """A generic table from dict rows (columns = keys of the first row; floats to 4 figures)."""
    t = Table(title=title)
    if not rows:
        return t
    cols = list(rows[0])
    for c in cols:
        t.add_column(str(c))
    for r in rows:
        t.add_row(
            *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in (r.get(c, "") for c in cols)]
        )
    return t


__all__ = ["rows_table", "schedule_table", "sim_table", "utilisation_table"]
