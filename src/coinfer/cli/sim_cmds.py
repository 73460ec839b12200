"""``coinfer simulate``, ``coinfer schedule``, ``coinfer gantt``: schedules, simulation, charts.

Both take the problem either as ``MODEL --cluster FILE`` (the instance is built by the cost
model) or as ``--instance FILE``, and the plan either from ``--plan FILE`` or by running planner
``--algo``. Every user mistake is an :class:`~coinfer.errors.InputError`, which
:func:`coinfer.cli.main` prints as one line with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ._console import make_console
from ._problem import load_problem

_MODEL_HELP = "Model spec (zoo name or file.py:factory); needs --cluster."


def _load_plan(instance: Any, plan_file: Path | None, algo: str, objective: str) -> Any:
    from ..core.plans import Plan

    if plan_file is not None:
        return Plan.load(plan_file)
    from ..plan import plan as run_planner

    return run_planner(instance, algo, objective)


def _arrivals(arrivals: str) -> str | list[float]:
    if arrivals in ("closed", "poisson"):
        return arrivals
    from ..simulate.sim import load_arrivals

    path = Path(arrivals)
    if not path.exists():
        raise InputError(
            f"--arrivals {arrivals!r}: not 'closed', 'poisson' or an existing file of arrival times"
        )
    return load_arrivals(path)


def register(app: typer.Typer) -> None:
    """Add ``schedule``, ``gantt`` and ``simulate`` to ``app``."""

    @app.command("schedule")
    def schedule_cmd(
        model: str = typer.Argument(None, help=_MODEL_HELP),
        cluster: Path = typer.Option(None, "--cluster", help="Cluster YAML file."),
        instance: Path = typer.Option(
            None, "--instance", help="Instance JSON file (instead of MODEL --cluster)."
        ),
        plan_file: Path = typer.Option(
            None, "--plan", help="Plan JSON file (default: run --algo)."
        ),
        algo: str = typer.Option("default", "--algo", help="Planner name when no --plan is given."),
        objective: str = typer.Option(
            "throughput", "--objective", help="latency | throughput | energy"
        ),
        requests: int = typer.Option(4, "--requests", help="Requests in the stream."),
        microbatch: int = typer.Option(1, "--microbatch", help="Samples per request."),
        window: int = typer.Option(
            None, "--window", help="Requests in flight (default: enough to saturate)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the schedule as JSON."),
        out: Path = typer.Option(None, "--out", help="Also write the schedule JSON here."),
    ) -> None:
        """Print the per-device ordered actions (recv / compute / send) of a plan."""

        from ..report.tables import schedule_table
        from ..schedule import schedule, validate_schedule

        inst = load_problem(model, cluster, instance).instance
        plan = _load_plan(inst, plan_file, algo, objective)
        sched = schedule(plan, inst, requests, microbatch, window=window)
        validate_schedule(sched)
        if out is not None:
            sched.save(out)
        if as_json:
            typer.echo(sched.to_json())
            return
        console = make_console()
        console.print(str(plan))
        console.print(schedule_table(sched))

    @app.command("gantt")
    def gantt_cmd(
        trace: Path = typer.Argument(
            ..., help="Event trace (.json or .csv) from --trace or a runtime run."
        ),
        out: Path = typer.Option(Path("gantt.png"), "--out", help="PNG to write."),
        until: float = typer.Option(
            None, "--until", help="Crop the time axis at this many seconds."
        ),
        title: str = typer.Option("schedule", "--title", help="Chart title."),
    ) -> None:
        """Draw a simulated or measured event trace as a Gantt chart (one row per device and link)."""
        from ..core.trace import load_events
        from ..report.plots import gantt

        path = gantt(load_events(trace), out, title=title, until_s=until)
        typer.echo(f"Gantt chart: {path}")

    @app.command("simulate")
    def simulate_cmd(
        model: str = typer.Argument(None, help=_MODEL_HELP),
        cluster: Path = typer.Option(
            None, "--cluster", help="Cluster YAML file (its bandwidth traces are used)."
        ),
        instance: Path = typer.Option(
            None, "--instance", help="Instance JSON file (instead of MODEL --cluster)."
        ),
        plan_file: Path = typer.Option(
            None, "--plan", help="Plan JSON file (default: run --algo)."
        ),
        algo: str = typer.Option("default", "--algo", help="Planner name when no --plan is given."),
        objective: str = typer.Option(
            "throughput", "--objective", help="latency | throughput | energy"
        ),
        requests: int = typer.Option(50, "--requests", help="Requests to simulate."),
        microbatch: int = typer.Option(
            1, "--microbatch", help="Samples per request (bytes and compute scale linearly)."
        ),
        arrivals: str = typer.Option(
            "closed", "--arrivals", help="closed | poisson | FILE of arrival times (s)."
        ),
        rate: float = typer.Option(None, "--rate", help="Poisson arrival rate (requests/s)."),
        window: int = typer.Option(
            None, "--window", help="Closed loop: requests in flight (default: saturate)."
        ),
        noise: float = typer.Option(
            0.0, "--noise", help="Relative spread of compute times (log-normal)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for noise and Poisson arrivals."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        gantt_file: Path = typer.Option(None, "--gantt", help="Write a Gantt chart PNG here."),
        trace_file: Path = typer.Option(None, "--trace", help="Write the event trace (JSON) here."),
    ) -> None:
        """Simulate a plan's schedule: latency percentiles, throughput, utilisation, energy."""
        from ..report.tables import sim_table, utilisation_table
        from ..schedule import schedule
        from ..simulate import events_to_json, simulate

        problem = load_problem(model, cluster, instance)
        inst, traces = problem.instance, problem.traces
        plan = _load_plan(inst, plan_file, algo, objective)
        arr = _arrivals(arrivals)
        sched = schedule(plan, inst, requests, microbatch, window=window)
        res = simulate(
            sched,
            inst,
            arrivals=arr,
            rate=rate,
            window=window,
            traces=traces,
            noise=noise,
            seed=seed,
        )
        if gantt_file is not None:
            from ..report.plots import gantt

            gantt(res.events, gantt_file, title=str(plan), devices=inst.device_names)
        if trace_file is not None:
            Path(trace_file).write_text(events_to_json(res.events))
        if as_json:
            typer.echo(json.dumps({"plan": plan.to_dict(), "simulated": res.summary()}, indent=2))
            return

        console = make_console()
        console.print(str(plan))
        pred = plan.predicted.to_dict()
        if microbatch != 1:  # the plan's prediction is per single-sample request
            pred = None
        elif arrivals != "closed":  # open-loop throughput follows the arrivals, not the capacity
            pred = {k: v for k, v in pred.items() if k in ("latency_s", "energy_j")}
        console.print(
            sim_table(
                res, predicted=pred, title=f"simulation ({res.requests} requests, {res.arrivals})"
            )
        )
        console.print(utilisation_table(res))
        if gantt_file is not None:
            console.print(f"Gantt chart: {gantt_file}")
