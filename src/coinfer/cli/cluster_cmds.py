"""CLI for clusters, the profiler and the affinity predictor.

``coinfer cluster show FILE`` / ``coinfer cluster check FILE``, ``coinfer profile MODEL`` and
``coinfer predict MODEL``. Thin: parse options, call the library, print. Library errors are
:class:`~coinfer.errors.CoinferError` and become one line + exit 2 in :func:`coinfer.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._console import make_console

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
    from rich.table import Table

    from ..cluster.units import Bps_to_mbps, format_bytes

    cl = _load(file)
    if as_json:
        typer.echo(json.dumps(cl.to_dict(), indent=2))
        return
    console = make_console()
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
    if cl.media:
        md = Table(title=f"{cl.name}: shared media (one capacity for all members, both directions)")
        for col in ("name", "members", "bandwidth Mbit/s", "latency ms", "trace"):
            md.add_column(col)
        for m in cl.media:
            md.add_row(
                m.name,
                ", ".join(m.members),
                f"{Bps_to_mbps(m.bandwidth_Bps):.1f}",
                f"{m.latency_s * 1000:g}",
                "-" if m.trace is None else Path(m.trace).name,
            )
        console.print(md)


@cluster_app.command("check")
def check(file: str = typer.Argument(..., help="Cluster YAML file.")) -> None:
    """Validate a cluster file; prints one line, exits 2 on a bad file."""
    cl = _load(file)
    typer.echo(
        f"ok: {file}: {len(cl.devices)} devices, {len(cl.links)} directed links, "
        f"{len(cl.media)} shared media, source {cl.source!r}"
    )


def _shape(text: str | None) -> tuple[int, ...] | None:
    from ..zoo import parse_input_shape

    return parse_input_shape(text) if text else None


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def profile_cmd(
    model: str = typer.Argument(..., help="Zoo name or file.py:factory."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="e.g. 1,3,224,224"),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads."),
    cpu_quota: float | None = typer.Option(
        None, "--cpu-quota", help="CPU quota in cores (cgroup v1; root)."
    ),
    repeats: int = typer.Option(10, "--repeats", help="Timed passes (after warm-up)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up passes."),
    max_pieces: int | None = typer.Option(None, "--max-pieces", help="Merge pieces down to N."),
    nodes: bool = typer.Option(False, "--nodes", help="Also list every node's time."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    refresh: bool = typer.Option(False, "--refresh", help="Re-measure even if cached."),
) -> None:
    """Measure each node's and each piece's latency on this host (median, IQR; cached)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..profile.profiler import profile_model

    err = make_console(stderr=True)
    with Progress(
        TextColumn(f"profiling {model}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("passes", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        data, hit = profile_model(
            model,
            input_shape=_shape(input_shape),
            max_pieces=max_pieces,
            threads=threads,
            quota=cpu_quota,
            repeats=repeats,
            warmup=warmup,
            use_cache=not no_cache,
            refresh=refresh,
            progress=progress,
            notice=lambda msg: err.print(f"[yellow]note:[/] {msg}"),
        )
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    console = make_console()
    stat = "mean (throttled)" if data["throttled"] else "median"
    tab = Table(
        title=f"{model} on {data['device']}: per piece, us ({stat} of {data['passes']} passes)"
    )
    for col in ("piece", "nodes", "MFLOPs", "time", "IQR", "sum of nodes", "overhead"):
        tab.add_column(col, justify="right" if col not in ("nodes",) else "left")
    for p in data["pieces"]:
        span = (
            p["nodes"][0]
            if len(p["nodes"]) == 1
            else f"{p['nodes'][0]}..{p['nodes'][-1]} ({len(p['nodes'])})"
        )
        tab.add_row(
            str(p["index"]),
            span,
            f"{p['flops'] / 1e6:,.2f}",
            _us(p["time_s"]),
            _us(p["iqr_s"]),
            _us(p["nodes_sum_s"]),
            _us(p["overhead_s"]),
        )
    console.print(tab)
    if nodes:
        nt = Table(title="per node, us")
        for col in ("node", "op", "MFLOPs", "time", "IQR"):
            nt.add_column(col)
        for r in data["nodes"]:
            nt.add_row(
                r["name"], r["op"], f"{r['flops'] / 1e6:,.3f}", _us(r["time_s"]), _us(r["iqr_s"])
            )
        console.print(nt)
    console.print(
        f"whole model (eager): {_us(data['model_time']['time_s'])} us; sum of pieces: {_us(data['pieces_sum_s'])} us; "
        f"sum of nodes: {_us(data['nodes_sum_s'])} us"
    )
    quota = "none" if data.get("requested_quota") is None else f"{data['requested_quota']:g} cores"
    console.print(
        f"threads {data['threads']}, quota {quota}, emulation: {data['emulation']}, "
        f"throttled periods {data.get('throttled_periods', 0)}, "
        f"load {data.get('loadavg_1m', 0):.1f} on {data.get('cpu_count', '?')} cores; "
        + ("cache hit" if hit else "measured")
    )


def predict_cmd(
    model: str = typer.Argument(..., help="Zoo name or file.py:factory."),
    cluster: str = typer.Option(..., "--cluster", help="Cluster YAML file (or 'local')."),
    device: str | None = typer.Option(None, "--device", help="Only this device of the cluster."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="e.g. 1,3,224,224"),
    max_pieces: int | None = typer.Option(None, "--max-pieces", help="Merge pieces down to N."),
    predictor: str | None = typer.Option(
        None, "--predictor", help="A saved predictor (default: packaged)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print {device: [seconds per piece]} as JSON."
    ),
) -> None:
    """Predict per-piece times of MODEL on the cluster's devices with the affinity predictor."""
    from rich.table import Table

    from ..errors import InputError
    from ..graph import capture
    from ..profile.costmodel import device_features
    from ..profile.predictor import default_predictor, load_predictor
    from ..zoo import load_model

    cl = _load(cluster)
    devices = [cl.device(device)] if device else list(cl.devices)
    pred = load_predictor(predictor) if predictor else default_predictor()
    mod, inputs = load_model(model, _shape(input_shape))
    graph = capture(mod, inputs, max_pieces=max_pieces, name=model)
    out: dict[str, list[float]] = {}
    for d in devices:
        feats = device_features(d)
        if feats is None:
            raise InputError(
                f"{cl.origin}: device {d.name!r} has no 'speed.predict' features or 'emulate' block"
            )
        ok, why = pred.covers(feats)
        if not ok:
            typer.secho(
                f"note: {d.name}: {why}; this prediction extrapolates (the cost model uses 'gflops' instead)",
                err=True,
                fg=typer.colors.YELLOW,
            )
        out[d.name] = list(pred.predict_graph(graph, feats).piece_s)
    if as_json:
        typer.echo(json.dumps(out, indent=1))
        return
    tab = Table(title=f"{model}: predicted time per piece (ms) on {cl.name}")
    tab.add_column("piece")
    tab.add_column("MFLOPs", justify="right")
    for name in out:
        tab.add_column(name, justify="right")
    for i, p in enumerate(graph.pieces):
        tab.add_row(str(i), f"{p.flops / 1e6:,.2f}", *[f"{out[n][i] * 1e3:.3f}" for n in out])
    tab.add_row(
        "total", f"{graph.total_flops / 1e6:,.2f}", *[f"{sum(v) * 1e3:.3f}" for v in out.values()]
    )
    make_console().print(tab)


def register(app: typer.Typer) -> None:
    """Add ``cluster``, ``profile`` and ``predict`` to ``app``."""
    app.add_typer(cluster_app, name="cluster")
    app.command("profile")(profile_cmd)
    app.command("predict")(predict_cmd)
