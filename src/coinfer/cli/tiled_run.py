"""``coinfer run`` of a fused (tiled) plan: run it with :mod:`coinfer.tiled`, print measured vs
predicted latency.

Why apart from ``run_cmds``: a tiled plan takes another runtime (one request fans out into tiles
on several devices) and another prediction — its block is re-priced under the ``links`` model,
which is what that runtime does, whatever link model the plan was made with.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from ..errors import InputError


def is_fused(plan: Any) -> bool:
    """Whether ``plan`` tiles its first pieces (a ``fused`` plan that beat the layer-wise one)."""
    return bool((getattr(plan, "details", None) or {}).get("fused", {}).get("used"))


def refuse_options(streaming: bool, netns: bool, coordinator_bind: str | None, mb: int) -> None:
    """One line naming what a tiled run cannot do, instead of ignoring it."""
    if streaming:
        raise InputError(
            "a fused plan runs one request at a time: drop --arrivals/--duration/--inject/--adapt"
        )
    if netns or coordinator_bind is not None:
        raise InputError(
            "a fused plan runs on local workers with emulated links: drop --netns/--coordinator-bind"
        )
    if mb != 1:
        raise InputError("a fused plan runs batch-1 requests: drop --microbatch")


def run_fused(
    model: str,
    cluster: Any,
    instance: Any,
    plan: Any,
    *,
    requests: int,
    input_shape: tuple[int, ...] | None,
    max_pieces: int | None,
    timeout: float,
    check: bool,
    as_json: bool,
) -> None:
    """Run ``plan`` and print the result (JSON with ``--json``)."""
    from ..plan.fused import price_fused
    from ..tiled import run_tiled_plan

    priced = price_fused(instance, plan, "links")
    result = run_tiled_plan(
        model, cluster, plan, instance, requests=requests,
        predicted_latency_s=priced["latency_s"], input_shape=input_shape,
        max_pieces=max_pieces, check=check, timeout_s=timeout,
    )  # fmt: skip
    if as_json:
        out = {"plan": plan.to_dict(), "predicted": priced, "measured": result.to_dict()}
        for d in out["measured"]["devices"]:
            d.pop("transfers")
        typer.echo(json.dumps(out, indent=2))
        return
    fused = plan.details["fused"]
    p = result.program
    typer.echo(
        f"fused plan: pieces 0..{p.depth - 1} tiled {p.grid[0]}x{p.grid[1]} over "
        f"{', '.join(sorted(set(p.assignment)))}; then "
        + (", ".join(f"[{a}-{b}]->{d}" for a, b, d in p.suffix) or "nothing")
    )
    typer.echo(
        f"latency p50: measured {result.latency_p50_s * 1e3:.1f} ms, predicted "
        f"{priced['latency_s'] * 1e3:.1f} ms ({result.error:+.1%}); layer-wise optimum "
        f"{plan.details['nfl_latency_s'] * 1e3:.1f} ms; halo redundancy {fused['redundancy']:.0%}"
    )
    err = "unchecked" if result.max_abs_err is None else f"{result.max_abs_err:.3g}"
    typer.echo(f"outputs vs unsplit model: max abs error {err}")
    for d in result.devices:
        typer.echo(
            f"  {d['device']}: {d['tiles']} tiles, {d['stages']} suffix stages, busy "
            f"{d['busy_s'] / len(result.latencies_s) * 1e3:.1f} ms per request ({d['emulation']})"
        )
