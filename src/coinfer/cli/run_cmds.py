"""``coinfer run`` (measure a plan for real, side by side with the simulator) and ``coinfer worker``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError

# Links that carried less than this are not worth a bandwidth line: small messages measure
# per-message overhead, not bandwidth.
LINK_CHECK_MIN_BYTES = 1 << 20


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.lower().replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise InputError(f"--input-shape must look like 1,3,32,32, got {text!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise InputError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _load_cluster(path: str | None) -> Any:
    from .. import cluster as cluster_mod

    if path is None:
        return cluster_mod.default_local_cluster()
    return cluster_mod.load_cluster(path)


def _build_instance(
    model: str,
    cluster: Any,
    input_shape: tuple[int, ...] | None,
    partition: str,
    max_pieces: int | None,
) -> Any:
    """The cost-model instance of ``model`` on ``cluster`` (for planning and the simulator)."""
    if partition == "graph":
        try:
            from ..profile.costmodel import build_instance
        except ImportError:
            build_instance = None
        if build_instance is not None:
            return build_instance(model, cluster, input_shape=input_shape, max_pieces=max_pieces)
    from ..runtime.measure import measured_instance

    return measured_instance(model, cluster, input_shape, partition, max_pieces)  # type: ignore[arg-type]


def _stream(
    model: str, cl: Any, instance: Any, the_plan: Any, flow: Any, faults: Any, requests: int,
    duration: float | None, microbatch: int, shape: Any, partition: str, max_pieces: int | None,
    timeout: float, algo: str, objective: str, netns: bool, check: bool, as_json: bool,
    timeline: str | None = None, telemetry: str | None = None, adapt: bool = False,
) -> None:  # fmt: skip
    """``coinfer run`` in session mode: stream, then print (or dump) what happened."""
    from .session_run import run_stream

    log = None if as_json else (lambda m: typer.echo(m, err=True))
    measured = run_stream(
        model, cl, instance, the_plan, arrivals=flow,
        requests=None if duration is not None else requests // microbatch,
        duration_s=duration, faults=faults, microbatch=microbatch, input_shape=shape,
        partition=partition, max_pieces=max_pieces, timeout_s=timeout, algo=algo,
        objective=objective, netns=netns, check=check, log=log, telemetry_path=telemetry,
        adapt=adapt,
    )  # fmt: skip
    if timeline is not None:
        from ..report import session_timeline

        session_timeline(measured, timeline, title=f"{model}: a live stream")
    if as_json:
        typer.echo(json.dumps({"plan": the_plan.to_dict(), "measured": measured}, indent=2))
    else:
        typer.echo(f"plan: {the_plan}")
        for key in ("submitted", "completed", "lost", "duplicated"):
            typer.echo(f"{key + ':':<12}{measured[key]}")
        typer.echo(
            f"throughput: {measured['throughput_rps']:.4g} req/s measured, "
            f"{measured['predicted_rps']:.4g} the planner's capacity; latency p50 "
            f"{(measured['latency_p50_s'] or 0) * 1e3:.1f} ms, p95 "
            f"{(measured['latency_p95_s'] or 0) * 1e3:.1f} ms (submission to result)"
        )
        for r in measured["recoveries"]:
            after = r["detected_after_s"]
            typer.echo(
                f"recovery: {r['device']} ({r['reason']}); detected"
                + (f" {after:.2f} s after the fault" if after is not None else "")
                + f", first new result {r['first_result_after_s'] or float('nan'):.2f} s after; "
                f"{r['rerun']} requests re-run on {', '.join(r['devices'])}"
            )
        for r in measured["replans"]:
            typer.echo(
                f"re-plan at {r['t_s']:.1f} s ({r['trigger']}): {r['old_plan']} -> "
                f"{r['new_plan']}, predicted {r['predicted_gain']:+.0%}"
                + (" (hand-over failed)" if r["epoch"] < 0 else "")
            )
        for h in measured["handovers"]:
            if h["error"]:
                typer.echo(f"hand-over ({h['reason']}) failed: {h['error']}")
            else:
                typer.echo(
                    f"hand-over ({h['reason']}): new plan on {', '.join(h['devices'])} took the "
                    f"stream {h['switched_s'] - h['requested_s']:.2f} s after the request; "
                    "nothing re-run"
                )
        if "throughput_after_recovery_rps" in measured:
            typer.echo(
                f"after recovery: {measured['throughput_after_recovery_rps']:.4g} req/s measured, "
                f"{measured.get('predicted_after_recovery_rps', float('nan')):.4g} predicted"
            )
        err = measured["max_abs_error"]
        typer.echo(
            "outputs vs unsplit model: "
            + (
                "unchecked"
                if err is None
                else f"max abs error {err:.3g} ({measured['checked']} checked)"
            )
        )
    if measured["lost"]:
        raise InputError(f"{measured['lost']} requests were lost: {measured['error']}")


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``worker`` to ``app``."""

    @app.command("worker")
    def worker_cmd(
        coordinator: str = typer.Option(
            ..., "--coordinator", help="HOST:PORT of the coordinator's control channel."
        ),
        device: str = typer.Option(
            ..., "--device", help="Device name (from the cluster file) this worker serves."
        ),
        bind: str = typer.Option(
            "127.0.0.1", "--bind", help="Address the data plane listens on (default loopback only)."
        ),
        token_file: str | None = typer.Option(
            None,
            "--token-file",
            help="File holding the cluster token, - for stdin (or set COINFER_TOKEN).",
        ),
        connect_timeout: float = typer.Option(
            30.0, "--connect-timeout", help="Seconds to keep trying to reach the coordinator."
        ),
        allow_model_code: bool = typer.Option(
            False,
            "--allow-model-code",
            help="Run models given as module:factory or file.py:factory (imports their code); "
            "without it only the built-in zoo is served.",
        ),
    ) -> None:
        """Serve one run as DEVICE: authenticate the coordinator, run the stage, exit."""
        from ..runtime.control import parse_hostport, read_token

        token = read_token(token_file, os.environ.get("COINFER_TOKEN"))
        parse_hostport(coordinator, what="--coordinator")  # fail fast, before importing torch
        from ..runtime.worker import serve

        serve(
            coordinator, device, token, bind=bind, connect_timeout_s=connect_timeout,
            allow_model_code=allow_model_code,
        )  # fmt: skip

    @app.command("run")
    def run_cmd(
        model: str = typer.Argument(..., help="Zoo name, module:factory or file.py:factory."),
        cluster: str | None = typer.Option(
            None, "--cluster", help="Cluster YAML (default: the embedded local testbed)."
        ),
        plan_file: str | None = typer.Option(
            None, "--plan", help="A plan JSON (from `coinfer plan --out`)."
        ),
        algo: str = typer.Option(
            "default", "--algo", help="Planner to use when no --plan is given."
        ),
        objective: str = typer.Option(
            "throughput", "--objective", help="latency | throughput | energy."
        ),
        requests: int = typer.Option(32, "--requests", help="Number of requests (samples)."),
        microbatch: int = typer.Option(
            1, "--microbatch", help="Samples per micro-batch (batched along dim 0)."
        ),
        input_shape: str | None = typer.Option(
            None, "--input-shape", help="Input shape, e.g. 1,3,224,224."
        ),
        partition: str = typer.Option(
            "graph",
            "--partition",
            help="graph (captured pieces) | sequential (nn.Sequential children).",
        ),
        max_pieces: int | None = typer.Option(
            None, "--max-pieces", help="Coarsen the captured graph to at most this many pieces."
        ),
        netns: bool = typer.Option(
            False, "--netns", help="Workers in network namespaces with tc-shaped links (root)."
        ),
        coordinator_bind: str | None = typer.Option(
            None,
            "--coordinator-bind",
            help="HOST:PORT: wait for remote `coinfer worker`s here instead of spawning.",
        ),
        timeout: float = typer.Option(
            120.0, "--timeout", help="Bound in seconds on any stall of the run."
        ),
        no_check: bool = typer.Option(
            False, "--no-check", help="Skip comparing outputs with the unsplit model."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        trace_out: str | None = typer.Option(
            None, "--trace-out", help="Write the measured trace (JSON events)."
        ),
        arrivals: str | None = typer.Option(
            None,
            "--arrivals",
            help="Stream through a live session: closed | poisson:RATE | trace:FILE.",
        ),
        duration: float | None = typer.Option(
            None, "--duration", help="Seconds to stream for (with --arrivals / --inject)."
        ),
        timeline: str | None = typer.Option(
            None,
            "--timeline",
            help="With a stream: write a PNG of throughput over time, fail-overs and hand-overs "
            "marked.",
        ),
        telemetry: str | None = typer.Option(
            None,
            "--telemetry",
            help="With a stream: append each worker's telemetry, every 0.5 s (compute times, "
            "utilisation, per-link bytes and bandwidth) to this file as JSON lines.",
        ),
        adapt: bool = typer.Option(
            False,
            "--adapt",
            help="With a stream: re-plan live from the workers' telemetry (links slowing, "
            "devices loaded) and hand the stream over when the gain repays the switch.",
        ),
        inject: list[str] = typer.Option(
            [],
            "--inject",
            help="kill:DEVICE@SECONDS or stop:DEVICE@SECONDS (repeatable): a fault during the "
            "stream, the session fails over to the surviving devices; admit:DEVICE@SECONDS "
            "takes a device (back) in and hands the stream over to a plan with it.",
        ),
    ) -> None:
        """Run a plan for real and print measured vs simulated figures side by side.

        With --arrivals, --duration or --inject the requests stream through a live session
        (submitted on the arrival process, results in order, fail-over on a worker's loss)."""
        from ..core.plans import Plan, check_objective
        from ..report.compare import compare_with_simulation
        from ..runtime import run as runtime_run

        if partition not in ("graph", "sequential"):
            raise InputError(f"--partition must be graph or sequential, got {partition!r}")
        check_objective(objective)
        streaming = arrivals is not None or duration is not None or bool(inject) or adapt
        if requests < 1 or microbatch < 1 or requests % microbatch:
            raise InputError(
                f"--requests {requests} must be a positive multiple of --microbatch {microbatch}"
            )
        if duration is not None and not (duration > 0 and math.isfinite(duration)):
            raise InputError(f"--duration must be a number of seconds > 0, got {duration}")
        if (timeline is not None or telemetry is not None) and not streaming:
            raise InputError(
                "--timeline and --telemetry belong to a stream: add --arrivals, --duration or "
                "--inject"
            )
        if streaming and coordinator_bind is not None:
            raise InputError(
                "--arrivals/--duration/--inject run local workers: drop --coordinator-bind"
            )
        from .session_run import parse_arrivals, parse_fault

        flow = parse_arrivals(arrivals or "closed")
        shape = _parse_shape(input_shape)
        cl = _load_cluster(cluster)
        faults = [parse_fault(f, cl.device_names) for f in inject]
        instance = _build_instance(model, cl, shape, partition, max_pieces)
        from .tiled_run import is_fused, refuse_options, run_fused

        if plan_file is not None:
            the_plan = Plan.load(plan_file)
        else:
            from .. import plan as plan_mod

            if algo.lower() == "fused":  # one request split spatially: latency is its objective
                if objective != "latency" and not as_json:
                    typer.echo("note: fused plans minimise latency (--objective latency)", err=True)
                the_plan = plan_mod.plan(instance, "fused", "latency", link_model="links")
            else:
                the_plan = plan_mod.plan(instance, algo, objective)
        if is_fused(the_plan):
            refuse_options(streaming, netns, coordinator_bind, microbatch)
            run_fused(
                model, cl, instance, the_plan, requests=requests, input_shape=shape,
                max_pieces=max_pieces, timeout=timeout, check=not no_check, as_json=as_json,
            )  # fmt: skip
            return
        if streaming:
            _stream(model, cl, instance, the_plan, flow, faults, requests, duration, microbatch,
                    shape, partition, max_pieces, timeout, algo, objective, netns, not no_check,
                    as_json, timeline, telemetry, adapt)  # fmt: skip
            return
        from ..schedule import scheduler

        sched = scheduler.schedule(the_plan, instance, requests // microbatch, microbatch)
        log = None if as_json else (lambda m: typer.echo(m, err=True))
        result = runtime_run(
            model,
            cl,
            the_plan,
            requests=requests,
            microbatch=microbatch,
            input_shape=shape,
            netns=netns,
            check=not no_check,
            timeout_s=timeout,
            instance=instance,
            schedule=sched,
            partition=partition,  # type: ignore[arg-type]
            max_pieces=max_pieces,
            bind=coordinator_bind or "127.0.0.1:0",
            spawn=coordinator_bind is None,
            log=log,
        )
        table = compare_with_simulation(result, sched, instance)
        if trace_out:
            Path(trace_out).write_text(json.dumps([e.to_dict() for e in result.trace], indent=1))
        if as_json:
            out = {"plan": the_plan.to_dict(), "measured": result.to_dict(), "comparison": table}
            out["measured"].pop("trace")
            typer.echo(json.dumps(out, indent=2))
            return
        typer.echo(f"plan: {the_plan}")
        typer.echo(f"{'metric':<22}{'measured':>12}{'simulated':>12}{'error':>9}")
        for row in table["rows"]:
            err = "" if row["error_pct"] is None else f"{row['error_pct']:+.1f}%"
            typer.echo(
                f"{row['metric']:<22}{row['measured']:>12.4g}{row['simulated']:>12.4g}{err:>9}"
            )
        err = "unchecked" if result.max_abs_error is None else f"{result.max_abs_error:.3g}"
        typer.echo(f"outputs vs unsplit model: max abs error {err}")
        typer.echo(
            f"emulation: {result.emulation_mode}; utilisation: "
            + ", ".join(f"{d} {u:.0%}" for d, u in result.utilisation.items())
        )
        typer.echo(f"links emulated in: {result.network}")
        for name, st in sorted(result.links.items()):
            if st["bytes"] >= LINK_CHECK_MIN_BYTES:
                what = f"shared medium {name[:-3]}" if name.endswith("<->") else name
                typer.echo(
                    f"  {what}: {st['measured_Bps'] * 8e-6:.1f} Mbit/s achieved, "
                    f"{st['nominal_Bps'] * 8e-6:.1f} Mbit/s in the cluster file ({int(st['transfers'])} transfers)"
                )
