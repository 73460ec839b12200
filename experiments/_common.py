"""Shared helpers of the seed experiments: model instances, planner runs, simulation, CSV output.

Every experiment is one command (``python experiments/expN_*.py``) writing a CSV and a PNG to
``experiments/results/``. Costs are *analytic* (FLOPs / effective GFLOP/s per device, cut bytes
from the captured graph) so the experiments are deterministic and quick on two shared cores;
``coinfer.profile.costmodel.build_instance`` is used instead when present and asked for.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from coinfer.core.instance import Device, Instance, Link, Medium, Piece
from coinfer.core.plans import Plan
from coinfer.errors import CoinferError

RESULTS = Path(__file__).parent / "results"
MBIT = 1e6 / 8  # bytes/s in one Mbit/s


@cache
def graph(model: str, max_pieces: int | None = None):
    """Captured graph of a zoo model (seeded random weights; shapes and FLOPs are what matter)."""
    import torch

    from coinfer.graph import capture
    from coinfer.zoo import load_model

    torch.manual_seed(0)
    net, inputs = load_model(model)
    g = capture(net, inputs)
    return g.with_max_pieces(max_pieces) if max_pieces else g


def model_instance(
    model: str,
    gflops: Mapping[str, float],
    links: Sequence[Link],
    source: str,
    *,
    max_pieces: int | None = None,
    mem_bytes: Mapping[str, int] | None = None,
    power: Mapping[str, tuple[float, float, float]] | None = None,
    name: str | None = None,
    media: Sequence[Medium] = (),
) -> Instance:
    """Analytic instance: piece time on ``d`` = FLOPs / (``gflops[d]`` x 1e9).

    ``power[d] = (idle, active, transmit)`` watts. Memory defaults to 4 GiB per device (a
    Raspberry Pi 4), which every model here fits.
    """
    g = graph(model, max_pieces)
    pieces = tuple(
        Piece(
            f"p{p.index}",
            {d: p.flops / (gf * 1e9) for d, gf in gflops.items()},
            int(p.mem_bytes),
            int(p.out_bytes),
        )
        for p in g.pieces
    )
    devs = []
    for d in gflops:
        pw = (power or {}).get(d)
        devs.append(
            Device(
                d,
                int((mem_bytes or {}).get(d, 4 * 2**30)),
                power_idle_w=pw[0] if pw else None,
                power_active_w=pw[1] if pw else None,
                power_transmit_w=pw[2] if pw else None,
            )
        )
    return Instance(
        pieces,
        int(g.input_bytes),
        tuple(devs),
        tuple(links),
        source,
        name=name or model,
        media=tuple(media),
    )


def full_mesh(names: Iterable[str], bandwidth_Bps: float, latency_s: float) -> list[Link]:
    names = list(names)
    return [Link(u, v, bandwidth_Bps, latency_s) for u in names for v in names if u != v]


def planners_for(objective: str, *, exclude: Iterable[str] = ()) -> list[str]:
    """Registered planners supporting ``objective`` (brute excluded: too large here)."""
    from coinfer.plan.registry import PLANNERS

    skip = {"brute", *exclude}
    return sorted(n for n, i in PLANNERS.items() if objective in i.objectives and n not in skip)


def run_planner(instance: Instance, algo: str, objective: str, **opts: Any) -> Plan | str:
    """The plan, or a one-line reason it could not be made (unavailable, unsupported, infeasible)."""
    try:
        from coinfer.plan import plan
    except ImportError as exc:  # pragma: no cover - planners land concurrently
        return f"planner front door unavailable ({exc})"
    try:
        return plan(instance, algo, objective, **opts)
    except CoinferError as exc:
        return str(exc)


def simulated(plan: Plan, instance: Instance, requests: int = 60, **kw: Any):
    """Simulate ``plan`` on ``instance`` (closed loop unless told otherwise)."""
    from coinfer.schedule import schedule
    from coinfer.simulate import simulate

    return simulate(schedule(plan, instance, requests), instance, **kw)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                    for k, v in r.items()
                }
            )
    return path


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
