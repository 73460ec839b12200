"""``coinfer calibrate``: probe a cluster through the real runtime and write its measured figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import InputError
from ._console import make_console


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to ``app``."""

    @app.command("calibrate")
    def calibrate_cmd(
        cluster: str | None = typer.Option(
            None, "--cluster", help="Cluster YAML (default: the embedded local testbed)."
        ),
        out: str | None = typer.Option(
            None,
            "--out",
            help="Calibrated cluster YAML to write (default: <cluster>.calibrated.yaml).",
        ),
        model: str = typer.Option("resnet18", "--model", help="Model the probes run."),
        requests: int = typer.Option(48, "--requests", help="Requests per probe."),
        rotations: int = typer.Option(
            4,
            "--rotations",
            min=1,
            help="Probes: device orders rotated over the same piece ranges (4 on 4 devices: "
            "every device runs every range once; fewer is faster, coarser).",
        ),
        offsets: bool = typer.Option(
            False,
            "--offsets/--no-offsets",
            help="Probe again with the boundaries in the middles of the ranges, so a plan cutting "
            "inside a range is priced from measured half ranges (twice the probes).",
        ),
        coordinator_bind: str | None = typer.Option(
            None,
            "--coordinator-bind",
            help="HOST:PORT: wait for remote `coinfer worker`s here instead of spawning.",
        ),
        refine_rounds: int = typer.Option(
            0,
            "--refine",
            min=0,
            help="Then run the plan --algo picks for real, re-price its stages from what they "
            "measured and plan again, up to this many rounds (until it picks a measured plan).",
        ),
        algo: str = typer.Option("default", "--algo", help="Planner --refine checks."),
        objective: str = typer.Option(
            "throughput", "--objective", help="Objective --refine plans for."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the fit as one JSON object."),
    ) -> None:
        """Run short probes on every device and link; write the calibrated cluster file that
        `plan`, `simulate`, `run` and `demo` then take with --cluster."""
        from rich.table import Table

        from ..cluster import default_local_cluster, load_cluster
        from ..runtime.calibrate import calibrate, write_calibrated

        cl = load_cluster(cluster) if cluster else default_local_cluster()
        target = (
            Path(out)
            if out
            else Path(f"{Path(cluster).stem if cluster else 'local_testbed'}.calibrated.yaml")
        )
        if target.exists() and target.is_dir():
            raise InputError(f"--out {target} is a folder; give a file name")
        console = make_console(stderr=as_json)
        cal, calibrated = calibrate(
            model,
            cl,
            requests=requests,
            rotations=rotations,
            offsets=offsets,
            bind=coordinator_bind or "127.0.0.1:0",
            spawn=coordinator_bind is None,
            log=lambda m: console.print(m),
        )
        refinement = None
        if refine_rounds:
            from ..plan import plan as make_plan
            from ..runtime.refine import probe_ranges, refine

            refinement, calibrated, _ = refine(
                model,
                calibrated,
                lambda inst: make_plan(inst, algo, objective),
                anchors=probe_ranges(cal),
                rounds=refine_rounds,
                requests=requests,
                bind=coordinator_bind or "127.0.0.1:0",
                spawn=coordinator_bind is None,
                log=lambda m: console.print(m),
            )
        write_calibrated(target, cal, calibrated, cl.origin)
        if as_json:
            extra = {} if refinement is None else {"refinement": refinement.to_dict()}
            typer.echo(json.dumps({**cal.to_dict(), **extra, "out": str(target)}, indent=2))
            return
        t = Table(title=f"compute: measured / priced ({model})")
        for c in ("device", "per range (pieces: ratio)", "ratio", "speed.scale"):
            t.add_column(c)
        for d in cal.devices:
            per_range = ", ".join(f"{r.first}-{r.last}: {r.ratio:.2f}" for r in d.ranges)
            t.add_row(d.device, per_range, f"{d.ratio:.3f}",
                      f"{d.old_scale:.3f} -> {d.new_scale:.3f}")  # fmt: skip
        console.print(t)
        if cal.shrinkage is not None and cal.shrinkage.noise_sd is not None:
            sh = cal.shrinkage
            console.print(
                f"per-range factors: spread {sh.spread_sd:.1%}, probe noise {sh.noise_sd:.1%} "
                f"-> {sh.keep:.0%} of each range's deviation kept"
            )
        if cal.offsets:
            ot = Table(title="half ranges: offset probes' stages, then the refit")
            for c in ("device", "pieces", "measured ms", "priced ms (even ranges)"):
                ot.add_column(c)
            for o in cal.offsets:
                ot.add_row(o.device, f"{o.first}-{o.last}", f"{o.measured_s * 1e3:.2f}",
                           f"{o.priced_s * 1e3:.2f}")  # fmt: skip
            console.print(ot)
            osh = cal.offset_shrinkage
            if osh is not None and osh.noise_sd is not None:
                console.print(
                    f"half ranges: spread {osh.spread_sd:.1%}, probe noise {osh.noise_sd:.1%} "
                    f"-> {osh.keep:.0%} of the refit kept"
                )
        lt = Table(title="links: configured -> fitted")
        for c in ("link", "transfers", "Mbit/s", "latency ms", "fit"):
            lt.add_column(c)
        for lk in cal.links:
            if lk.how == "unchanged":
                continue
            lt.add_row(lk.label, str(lk.transfers),
                       f"{lk.bandwidth_Bps * 8e-6:.1f} -> {lk.fitted_bandwidth_Bps * 8e-6:.1f}",
                       f"{lk.latency_s * 1e3:.2f} -> {lk.fitted_latency_s * 1e3:.2f}", lk.how)  # fmt: skip
        console.print(lt)
        if refinement is not None:
            rt = Table(title=f"refinement: the {algo} plan run for real, its stages re-priced")
            for c in (
                "round",
                "plan",
                "predicted req/s",
                "measured req/s",
                "stage compute ms: measured / priced",
            ):
                rt.add_column(c)
            for i, r in enumerate(refinement.rounds, 1):
                stages = ", ".join(
                    f"{s.device} {s.first}-{s.last}: {s.measured_s * 1e3:.1f} / {s.priced_s * 1e3:.1f}"
                    for s in r.stages
                )
                rt.add_row(
                    str(i), r.plan, f"{r.predicted_rps:.2f}", f"{r.measured_rps:.2f}", stages
                )
            console.print(rt)
            state = (
                "run in a round"
                if refinement.settled
                else "not run: predicted clearly better than every plan that was"
            )
            console.print(f"refined choice: {refinement.final_plan} ({state})")
        console.print(f"calibrated cluster: {target}  (use it with --cluster)")
