"""`coinfer demo`: the whole pipeline on the embedded local testbed, with progress and a summary."""

from __future__ import annotations

import json

import typer

from ._console import make_console


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""

    @app.command("demo")
    def demo_cmd(
        model: str = typer.Option("resnet18", "--model", help="Zoo name or file.py:factory."),
        requests: int = typer.Option(48, "--requests", help="Requests through the pipelined plan."),
        cluster: str | None = typer.Option(
            None, "--cluster", help="Cluster YAML (default: the embedded local testbed)."
        ),
        cost_source: str | None = typer.Option(
            None, "--cost-source", help="profile | predict | analytic (default: first available)."
        ),
        out: str = typer.Option(
            "coinfer-out/demo", "--out", help="Folder for the report and charts."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
        calibrate: bool = typer.Option(
            True,
            "--calibrate/--no-calibrate",
            help="Probe the cluster through the real runtime first and plan on the measured figures.",
        ),
        refine_rounds: int = typer.Option(
            2,
            "--refine",
            min=0,
            help="After calibrating: run the chosen plan for real, re-price its stages from what "
            "they measured and plan again, up to this many rounds (0: none).",
        ),
    ) -> None:
        """Capture, price, plan, simulate and really run a zoo CNN on emulated devices."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from ..demo import DEMO_ALGOS, run_demo

        console = make_console(stderr=as_json)
        total = (7 + (refine_rounds > 0)) if calibrate else 6
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("starting", total=total)

            def step(msg: str) -> None:
                progress.update(
                    task, description=msg, completed=min(progress.tasks[0].completed + 1, total)
                )

            report = run_demo(
                model,
                requests=requests,
                cluster_file=cluster,
                cost_source=cost_source,
                out_dir=out,
                algos=DEMO_ALGOS,
                step=step,
                calibrate=calibrate,
                refine_rounds=refine_rounds,
            )
            progress.update(task, description="done", completed=total)

        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
            return

        if report.calibration:
            console.print(
                "calibrated compute (measured / profiled, in the real runtime): "
                + ", ".join(
                    f"{d['device']} x{d['ratio']:.2f}" for d in report.calibration["devices"]
                )
            )
        for i, r in enumerate((report.refinement or {}).get("rounds", ()), 1):
            console.print(
                f"refinement round {i}: {r['plan']} measured {r['measured_rps']:.2f} req/s; "
                "stage compute ms measured / priced: "
                + ", ".join(
                    f"{t['device']} {t['first']}-{t['last']} "
                    f"{t['measured_s'] * 1e3:.1f}/{t['priced_s'] * 1e3:.1f}"
                    for t in r["stages"]
                )
            )
        sources = ", ".join(f"{d}: {s}" for d, s in report.cost_sources.items())
        console.print(
            f"\n[bold]{report.model}[/] on [bold]{report.cluster}[/] (costs from {sources})"
        )
        cands = Table(title="Planners (predicted, throughput objective)")
        for col in ("planner", "stages", "req/s", "latency ms", "plan time ms"):
            cands.add_column(col)
        for c in report.candidates:
            if "error" in c:
                cands.add_row(c["algo"], f"[red]{c['error']}", "", "", "")
                continue
            cands.add_row(
                c["algo"],
                " | ".join(c["stages"]),
                f"{c['throughput_rps']:.2f}",
                f"{c['latency_s'] * 1e3:.1f}",
                f"{c['planning_time_s'] * 1e3:.1f}",
            )
        console.print(cands)

        m, b = report.measured, report.baseline_measured
        table = Table(title=f"Chosen plan: {report.plan['algo']} — measured vs simulated")
        for col in ("metric", "measured", "simulated", "error"):
            table.add_column(col, justify="right")
        for row in report.comparison:
            err = "" if row["error_pct"] is None else f"{row['error_pct']:+.1f}%"
            table.add_row(row["metric"], f"{row['measured']:.4g}", f"{row['simulated']:.4g}", err)
        console.print(table)
        err = m.get("max_abs_error")
        console.print(
            f"outputs vs unsplit model: max |error| = {err if err is not None else 'unchecked'}; "
            f"emulation: {m.get('emulation_mode')}"
        )
        console.print(
            f"best single device ({' '.join(report.baseline_plan['stages'][0]['devices'])}): "
            f"measured {b['throughput_rps']:.2f} req/s vs pipelined {m['throughput_rps']:.2f} req/s → "
            f"[bold]speed-up {report.speedup_measured:.2f}x measured[/] "
            f"({report.speedup_predicted:.2f}x predicted)"
        )
        for name, path in report.files.items():
            console.print(f"{name}: {path}")
        console.print(f"demo took {report.elapsed_s:.1f} s")
