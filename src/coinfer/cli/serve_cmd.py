"""``coinfer serve``: an HTTP endpoint over a live session of one plan.

Builds the instance and the plan exactly as ``coinfer run`` does (its helpers), gives the
session a ``replan`` with the same planner for fail-over, binds the socket, starts the
workers, prints the URL and serves until SIGINT/SIGTERM; then finishes what it admitted and
stops every worker. Everything that can be checked before a worker starts (the API key, the
address, the port, the options) is checked first.
"""

from __future__ import annotations

import math
import os
import signal
import socket
from typing import Any

import typer

from ..errors import InputError


def _ms(value: float | None, flag: str, *, zero_ok: bool = False) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InputError(f"{flag} must be a number of milliseconds > 0, got {value:g}")
    return value / 1e3


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command("serve")
    def serve_cmd(
        model: str = typer.Argument(..., help="Zoo name, module:factory or file.py:factory."),
        cluster: str | None = typer.Option(
            None, "--cluster", help="Cluster YAML (default: the embedded local testbed)."
        ),
        plan_file: str | None = typer.Option(
            None, "--plan", help="A plan JSON (from `coinfer plan --out`)."
        ),
        algo: str = typer.Option(
            "default", "--algo", help="Planner for the plan (without --plan) and for fail-over."
        ),
        objective: str = typer.Option(
            "throughput", "--objective", help="latency | throughput | energy."
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host",
            help="Address to listen on; anything but loopback needs an API key.",
        ),
        port: int = typer.Option(8000, "--port", help="TCP port (0: any free port)."),
        api_key: str | None = typer.Option(
            None, "--api-key",
            help="Key clients must send (Authorization: Bearer KEY or X-API-Key); default "
            "$COINFER_API_KEY. Required off loopback, enforced whenever given.",
        ),
        microbatch: int = typer.Option(
            4, "--microbatch",
            help="Samples per micro-batch in the pipeline: requests are grouped (or padded) "
            "to this size.",
        ),
        queue_limit: int | None = typer.Option(
            None, "--queue-limit",
            help="Samples waiting for a micro-batch before answering 429 (default 4 x "
            "window x microbatch).",
        ),
        batch_wait_ms: float | None = typer.Option(
            None, "--batch-wait-ms",
            help="How long a partial micro-batch waits for more requests before it is padded "
            "(default 5 ms, or derived from --slo-ms).",
        ),
        slo_ms: float | None = typer.Option(
            None, "--slo-ms",
            help="Latency target: sets the batch wait to half the slack left after the "
            "measured pipeline latency (max 50 ms) and counts requests answered within it "
            "(coinfer_requests_within_slo_total). Not a deadline: late requests still answer.",
        ),
        scaling: str = typer.Option(
            "off", "--scaling",
            help="on | off. on: replicate the key (bottleneck) stage on idle devices when the "
            "demand exceeds the plan's capacity, and drop the replicas when it falls "
            "(docs/serving.md).",
        ),
        input_shape: str | None = typer.Option(
            None, "--input-shape", help="Input shape with batch 1, e.g. 1,3,224,224."
        ),
        partition: str = typer.Option(
            "graph", "--partition",
            help="graph (captured pieces) | sequential (nn.Sequential children).",
        ),
        max_pieces: int | None = typer.Option(
            None, "--max-pieces", help="Coarsen the captured graph to at most this many pieces."
        ),
        timeout: float = typer.Option(
            60.0, "--timeout", help="Bound in seconds on a stall of the pipeline."
        ),
        telemetry: str | None = typer.Option(
            None, "--telemetry",
            help="Append each worker's telemetry (every 0.5 s) to this file as JSON lines.",
        ),
    ) -> None:  # fmt: skip
        """Serve MODEL over HTTP: POST /v1/infer, GET /healthz, /v1/plan, /metrics.

        Runs the plan on local worker processes (fail-over to the surviving devices on a
        loss) and prints the URL; SIGINT/SIGTERM finish the requests in flight and stop
        every worker. See docs/serving.md."""
        from ..core.plans import Plan, check_objective
        from ..serve.auth import resolve_key
        from .run_cmds import _build_instance, _load_cluster, _parse_shape

        if scaling not in ("on", "off"):
            raise InputError(f"--scaling must be on or off, got {scaling!r}")
        if partition not in ("graph", "sequential"):
            raise InputError(f"--partition must be graph or sequential, got {partition!r}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InputError(f"--timeout must be a number of seconds > 0, got {timeout:g}")
        check_objective(objective)
        key = resolve_key(host, api_key, os.environ)
        from ..serve.service import ServeOptions

        options = ServeOptions(
            microbatch=microbatch, queue_samples=queue_limit,
            batch_wait_s=_ms(batch_wait_ms, "--batch-wait-ms", zero_ok=True),
            slo_s=_ms(slo_ms, "--slo-ms"), request_timeout_s=timeout + 5.0, api_key=key,
        )  # fmt: skip
        from ..serve.server import bind

        sock = bind(host, port)
        try:
            shape = _parse_shape(input_shape)
            cl = _load_cluster(cluster)
            instance = _build_instance(model, cl, shape, partition, max_pieces)
            if plan_file is not None:
                the_plan = Plan.load(plan_file)
            else:
                from .. import plan as plan_mod

                the_plan = plan_mod.plan(instance, algo, objective)
            _serve(model, cl, instance, the_plan, options, sock, algo, objective, shape,
                   partition, max_pieces, timeout, telemetry, scaling == "on")  # fmt: skip
        finally:
            sock.close()


def _serve(
    model: str, cl: Any, instance: Any, the_plan: Any, options: Any, sock: socket.socket,
    algo: str, objective: str, shape: tuple[int, ...] | None, partition: str,
    max_pieces: int | None, timeout: float, telemetry: str | None, scaling: bool = False,
) -> None:  # fmt: skip
    """Start the session, serve until a stop signal, then shut everything down."""
    from ..runtime.interrupts import shielded
    from ..serve.app import create_app
    from ..serve.server import make_server, url_of
    from ..serve.service import open_service
    from .session_run import make_replan

    say = lambda m: typer.echo(m, err=True)  # noqa: E731
    service = open_service(
        model, cl, the_plan, options, instance=instance,
        replan=make_replan(instance, algo, objective), input_shape=shape, partition=partition,
        max_pieces=max_pieces, timeout_s=timeout, telemetry_path=telemetry, log=say,
        parameter_cache=scaling,  # replicas fork their stage ready from the zygote
    )  # fmt: skip
    server = None
    try:
        if scaling:
            from ..serve.scaler import Scaler

            service.scaler = Scaler(service, instance, log=say).start()
        server = make_server(create_app(service))
        typer.echo(f"plan: {the_plan}")
        extra = ", API key required" if service.options.api_key else ""
        typer.echo(
            f"serving {model} on {url_of(sock)} (micro-batch {service.options.microbatch}, "
            f"queue {service.capacity} samples{extra})"
        )
        server.run(sockets=[sock])
    finally:
        with shielded():
            report = service.close()
    signum = server.stopped_by if server is not None else None
    why = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(signum, "shutdown")  # type: ignore[call-overload]
    typer.echo(f"stopped ({why}): {report.completed} micro-batches completed, {report.lost} lost")
    if service.scaler is not None:
        for ev in service.scaler.events:
            took = ev.get("decision_to_serving_s")
            typer.echo(
                f"  {ev['kind']} at {ev['t_s']:.1f} s: stage {ev['stage']} "
                f"{'+' if ev['kind'] == 'scale_out' else '-'}{ev['device']} ({ev['reason']}); "
                + (
                    f"serving after {took:.2f} s"
                    if took is not None
                    else ev["error"] or "not taken over"
                )
            )
