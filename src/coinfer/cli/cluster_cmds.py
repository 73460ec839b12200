"""CLI for clusters, the profiler and the affinity predictor.

``coinfer cluster show FILE`` / ``coinfer cluster check FILE``, ``coinfer profile MODEL`` and
``coinfer predict MODEL``. Thin: parse options, call the library, print. Library errors are
:class:`~coinfer.errors.CoinferError` and become one line + exit 2 in :func:`coinfer.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

cluster_app = typer.Typer(help="Inspect and validate cluster files.", no_args_is_help=True)


def _load(file: str):
    from ..cluster import default_local_cluster, load_cluster

    return default_local_cluster() if file in ("local", "default") else load_cluster(file)


@cluster_app.command("show")
def show(
    file: str = typer.Argument(
        ..., help="Cluster YAML file (or 'local' for the embedded testbed)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the parsed cluster as JSON."),
) -> None:
    """Print the devices and links of a cluster file as tables."""
    from rich.console import Console
    from rich.table import Table

    from ..cluster.units import Bps_to_mbps, format_bytes

    cl = _load(file)
    if as_json:
        typer.echo(json.dumps(cl.to_dict(), indent=2))
        return
    console = Console()
    dev = Table(title=f"{cl.name}: devices (source = {cl.source})")
    for col in (
        "name",
        "kind",
        "speed",
        "memory",
        "power idle/active/tx W",
        "DVFS levels",
        "emulate",
    ):
        dev.add_column(col)
    for d in cl.devices:
        speed = []
        if d.gflops is not None:
            speed.append(f"{d.gflops:g} GFLOP/s")
        if d.profile is not None:
            speed.append(f"profile {Path(d.profile).name}")
        if d.features is not None:
            speed.append("predict")
        power = "/".join(
            "-" if v is None else f"{v:g}"
            for v in (d.power_idle_w, d.power_active_w, d.power_transmit_w)
        )
        emu = (
            "-" if d.emulate is None else f"quota {d.emulate.cpu_quota:g}, {d.emulate.threads} thr"
        )
        dev.add_row(
            d.name,
            d.kind,
            ", ".join(speed),
            format_bytes(d.mem_bytes),
            power,
            " ".join(f"{f:g}" for f in d.dvfs_levels),
            emu,
        )
    console.print(dev)
    lk = Table(title=f"{cl.name}: directed links")
    for col in ("src", "dst", "bandwidth Mbit/s", "latency ms", "trace"):
        lk.add_column(col)
    for link in cl.links:
        lk.add_row(
            link.src,
            link.dst,
            f"{Bps_to_mbps(link.bandwidth_Bps):.1f}",
            f"{link.latency_s * 1000:g}",
            "-" if link.trace is None else Path(link.trace).name,
        )
    console.print(lk)


@cluster_app.command("check")
def check(file: str = typer.Argument(..., help="Cluster YAML file.")) -> None:
    """Validate a cluster file; prints one line, exits 2 on a bad file."""
    cl = _load(file)
    typer.echo(
        f"ok: {file}: {len(cl.devices)} devices, {len(cl.links)} directed links, source {cl.source!r}"
    )


def register(app: typer.Typer) -> None:
    """Add ``cluster``, ``profile`` and ``predict`` to ``app``."""
    app.add_typer(cluster_app, name="cluster")
