"""``coinfer plan`` and ``coinfer compare``: run planners on a model + cluster or an instance file.

Thin shell over :mod:`coinfer.plan`: parse options, load the problem, call the library, print.
The problem is either ``MODEL --cluster FILE`` (the cost model builds the instance; needs
``coinfer.profile.costmodel``) or ``--instance FILE`` (the cost model as JSON, DESIGN.md).
Every user mistake raises an :class:`~coinfer.errors.InputError` (or ``InfeasibleError``),
which :func:`coinfer.cli.main` prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from ..errors import CoinferError, InputError
from ._console import make_console
from ._problem import load_problem

_MODEL_HELP = "Model spec (zoo name or file.py:factory); needs --cluster."
_CLUSTER_HELP = "Cluster YAML file (with MODEL)."
_INSTANCE_HELP = "Instance JSON file (the cost model as data) instead of MODEL --cluster."
_OBJECTIVE_HELP = "latency, throughput (minimise the period) or energy."


def _console():  # type: ignore[no-untyped-def]
    """A rich console; when output is not a terminal, wide enough that plan tables stay one row each."""

    # 160 columns: a 16-stage plan's stage list still fits beside the numeric columns in logs/CI.
    return make_console()


def _fmt(x: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x * scale:.{digits}f}"


def plan_cmd(
    model: str | None = typer.Argument(None, help=_MODEL_HELP),
    cluster: Path | None = typer.Option(None, "--cluster", help=_CLUSTER_HELP),
    instance: Path | None = typer.Option(None, "--instance", help=_INSTANCE_HELP),
    algo: str = typer.Option(
        "default", "--algo", help="Planner name (see `coinfer compare`); default = pico."
    ),
    objective: str = typer.Option("throughput", "--objective", help=_OBJECTIVE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    out: Path | None = typer.Option(None, "--out", help="Write the plan JSON here."),
    dump_instance: Path | None = typer.Option(
        None, "--dump-instance", help="Write the instance JSON here."
    ),
    max_pieces: int | None = typer.Option(
        None, "--max-pieces", min=1, help="Coarsen the model to at most N pieces."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed for randomised planners (ignored by the others)."
    ),
    measure: bool = typer.Option(
        False,
        "--measure",
        help="With --algo bayes and MODEL --cluster: measure each candidate plan by a short "
        "run through one live session on the cluster's devices (hand-overs, no restarts) "
        "and return the best measured plan. Keep the space small with --max-pieces.",
    ),
    budget: int | None = typer.Option(
        None,
        "--budget",
        help="With --algo bayes: measurements allowed (default 12 with --measure, else 40).",
    ),
    ei_stop: float | None = typer.Option(
        None,
        "--ei-stop",
        help="With --algo bayes: stop when no candidate is expected to improve the best by "
        "this fraction (0 = spend the whole budget; default 0.005 with --measure, else 0).",
    ),
    measure_seconds: float = typer.Option(
        1.0, "--measure-seconds", help="With --measure: seconds timed per measurement."
    ),
    search_log: Path | None = typer.Option(
        None,
        "--search-log",
        help="With --algo bayes: write the search log (every measurement, the GP's prediction, "
        "the incumbent) as JSON here, and its plot beside it (.png).",
    ),
) -> None:
    """Plan one model on one cluster (or one instance file) and show or save the plan."""
    from ..plan import get_planner
    from ..plan import plan as run_planner

    info = get_planner(algo)
    _check_search_flags(
        info.name, objective, measure, budget, ei_stop, measure_seconds, search_log, instance
    )
    problem = load_problem(model, cluster, instance, max_pieces=max_pieces)
    inst = problem.instance
    if dump_instance is not None:
        _write(dump_instance, inst.to_json())
    extra: dict[str, Any] = {"seed": seed} if seed is not None and info.seeded else {}
    if info.name == "bayes":
        extra.update(_search_options(budget, ei_stop, measure))
    if measure:
        from ..plan.search.bayes import BayesOptions
        from .measured_search import measured_search

        assert model is not None
        result = measured_search(
            model, problem.cluster, inst, objective, options=BayesOptions(**extra),
            max_pieces=max_pieces, min_time_s=measure_seconds,
            log=None if as_json else (lambda m: typer.echo(m, err=True)),
        )  # fmt: skip
    else:
        result = run_planner(inst, algo, objective, **extra)
    if search_log is not None:
        from .measured_search import write_search_log

        how = "measured" if measure else "simulated measurements"
        png = write_search_log(search_log, result, title=f"{inst.name}: bayes search ({how})")
        if not as_json:
            typer.echo(f"search log written to {search_log}, plot to {png}", err=True)
    if out is not None:
        _write(out, result.to_json())
    if as_json:
        typer.echo(result.to_json())
        return
    _print_plan(inst, result)
    if measure:
        _print_measured(result)


def _check_search_flags(
    algo: str,
    objective: str,
    measure: bool,
    budget: int | None,
    ei_stop: float | None,
    seconds: float,
    search_log: Path | None,
    instance_file: Path | None,
) -> None:
    """The search flags belong to ``--algo bayes``; ``--measure`` needs a cluster to run on."""
    if algo != "bayes" and (
        measure or budget is not None or ei_stop is not None or search_log is not None
    ):
        raise InputError("--measure, --budget, --ei-stop and --search-log need --algo bayes")
    if measure and instance_file is not None:
        raise InputError("--measure runs the model on a cluster: give MODEL --cluster FILE")
    if measure and objective == "energy":
        raise InputError("--measure measures throughput or latency; energy is not measured")
    if budget is not None and budget < 1:
        raise InputError(f"--budget must be >= 1, got {budget}")
    if ei_stop is not None and not (ei_stop >= 0 and math.isfinite(ei_stop)):
        raise InputError(f"--ei-stop must be a fraction >= 0, got {ei_stop}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InputError(f"--measure-seconds must be > 0, got {seconds}")


# Measured searches default to a small budget (each measurement is a hand-over plus a second
# of running, ~3 s for ResNet-18 on the local testbed) and a small initial design measured
# once: with the cost model as the prior mean a few random plans are enough for the GP to
# learn where the model is off.
MEASURED_BUDGET = 12
# ... and stop when no candidate is expected to gain 0.5 %: below what one measurement
# resolves (repeats of a ResNet-18 plan on the testbed differ by ~1 %).
MEASURED_EI_STOP = 0.005


def _search_options(budget: int | None, ei_stop: float | None, measure: bool) -> dict[str, Any]:
    """``BayesOptions`` fields from the CLI flags (unset ones keep the planner's defaults,
    except a measured search's smaller budget, design and stopping threshold)."""
    opts: dict[str, Any] = {}
    if measure:
        n = budget or MEASURED_BUDGET
        opts.update(budget=n, init=max(1, min(3, n // 4)), repeats=1, ei_stop=MEASURED_EI_STOP)
    elif budget is not None:
        opts["budget"] = budget
    if ei_stop is not None:
        opts["ei_stop"] = ei_stop
    return opts


def _print_measured(result: Any) -> None:
    det = result.details
    m = det["measured"]
    console = _console()
    console.print(
        f"measured {det['measured_mean'] * 1e3:.2f} ms (sd {det['measured_std'] * 1e3:.2f} ms) "
        f"for the chosen plan; {det['evaluations']} measurements of {det['distinct']} of "
        f"{det['space']} configurations, stopped by {det['stopped']}; search "
        f"{m['search_s']:.1f} s after a {m['session_start_s']:.1f} s session start"
    )


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None


def _print_plan(inst: Any, result: Any) -> None:
    from rich.table import Table

    from ..core.evaluate import replica_weights

    console = _console()
    table = Table(title=f"{inst.name}: {result.algo} plan for {result.objective}")
    for col in ("stage", "pieces", "devices", "compute ms", "memory MB"):
        table.add_column(col, justify="right" if col in ("compute ms", "memory MB") else "left")
    for k, st in enumerate(result.stages):
        first, last = inst.pieces[st.first].name, inst.pieces[st.last].name
        span = first if st.first == st.last else f"{first} .. {last}"
        w = replica_weights(inst, st)
        comp = [
            inst.compute_s(st.first, st.last, d, st.freq_of(i)) for i, d in enumerate(st.devices)
        ]
        devs = ", ".join(
            d
            + (f"@{st.freq_of(i):g}" if st.freq_of(i) != 1.0 else "")
            + (f" ({w[i]:.0%})" if len(st.devices) > 1 else "")
            for i, d in enumerate(st.devices)
        )
        table.add_row(
            str(k),
            f"{st.first}-{st.last}: {span}",
            devs,
            " / ".join(f"{c * 1e3:.3f}" for c in comp),
            f"{inst.mem_bytes(st.first, st.last) / 1e6:.1f}",
        )
    console.print(table)
    p = result.predicted
    console.print(
        f"predicted latency {_fmt(p.latency_s, 1e3)} ms, throughput {_fmt(p.throughput_rps)} req/s "
        f"(period {_fmt(p.period_s, 1e3)} ms), energy {_fmt(p.energy_j)} J/request; "
        f"planned in {result.planning_time_s * 1e3:.1f} ms"
        + (
            ""
            if "exact" not in result.details
            else f" ({'proven optimal' if result.details['exact'] else 'not proven optimal'})"
        )
    )
    fused = result.details.get("fused") or {}
    if fused.get("used"):  # the table above is the reference model's replica view of the block
        from collections import Counter

        tiles = Counter(fused["assignment"])
        console.print(
            f"fused: pieces 0-{fused['depth'] - 1} tiled {fused['grid'][0]}x{fused['grid'][1]} "
            f"(halos +{fused['redundancy']:.0%} FLOPs), tiles "
            + ", ".join(f"{d} x{n}" for d, n in sorted(tiles.items()))
            + f"; tiled latency {fused['latency_s'] * 1e3:.1f} ms ({fused['link_model']} link model) "
            f"vs {result.details['nfl_latency_s'] * 1e3:.1f} ms layer-wise; `coinfer run` runs it"
        )


def compare_cmd(
    model: str | None = typer.Argument(None, help=_MODEL_HELP),
    cluster: Path | None = typer.Option(None, "--cluster", help=_CLUSTER_HELP),
    instance: Path | None = typer.Option(None, "--instance", help=_INSTANCE_HELP),
    objective: str = typer.Option("throughput", "--objective", help=_OBJECTIVE_HELP),
    algos: str | None = typer.Option(
        None, "--algos", help="Comma-separated planner names (default: all)."
    ),
    png: Path | None = typer.Option(
        None, "--png", help="Write a bar chart of the comparison here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    max_pieces: int | None = typer.Option(
        None, "--max-pieces", min=1, help="Coarsen the model to at most N pieces."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for randomised planners."),
) -> None:
    """Run every applicable planner and compare predicted latency, throughput, energy, planning time."""
    from ..core.plans import check_objective
    from ..plan import PLANNERS, get_planner, skip_reason
    from ..plan import plan as run_planner

    obj = check_objective(objective)
    inst = load_problem(model, cluster, instance, max_pieces=max_pieces).instance
    names = [a.strip() for a in algos.split(",") if a.strip()] if algos else sorted(PLANNERS)
    if not names:
        raise InputError("--algos is empty; give comma-separated planner names")
    infos = [get_planner(a) for a in names]
    rows = compare_rows(inst, obj, infos, seed, run_planner, skip_reason)
    if png is not None:
        bar_chart(rows, png, title=f"{inst.name}: planners for {obj}", objective=obj)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_compare(inst, obj, rows, png)


def compare_rows(
    inst: Any, objective: str, infos: list[Any], seed: int, run_planner: Any, skip_reason: Any
) -> list[dict[str, Any]]:
    """One JSON-able row per planner: its metrics, or why it was skipped / failed."""
    rows: list[dict[str, Any]] = []
    for info in infos:
        row: dict[str, Any] = {"algo": info.name, "exact": info.exact, "model": info.model}
        why = skip_reason(info, inst, objective)
        if why is not None:
            row["status"] = f"skipped: {why}"
            rows.append(row)
            continue
        try:
            res = run_planner(inst, info.name, objective, **({"seed": seed} if info.seeded else {}))
        except CoinferError as exc:
            row["status"] = f"error: {exc}"
            rows.append(row)
            continue
        p = res.predicted
        row.update(
            status="ok",
            latency_s=p.latency_s,
            period_s=p.period_s,
            throughput_rps=p.throughput_rps,
            energy_j=p.energy_j,
            planning_time_s=res.planning_time_s,
            stages=[str(s) for s in res.stages],
        )
        rows.append(row)
    return rows


def _print_compare(inst: Any, objective: str, rows: list[dict[str, Any]], png: Path | None) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{inst.name}: planners compared for {objective}")
    for col in (
        "planner",
        "latency ms",
        "throughput req/s",
        "energy J",
        "planning ms",
        "stages / status",
    ):
        table.add_column(col, justify="left" if col in ("planner", "stages / status") else "right")
    ok = [r for r in rows if r["status"] == "ok"]
    key = {"latency": "latency_s", "throughput": "period_s", "energy": "energy_j"}[objective]
    vals = [r[key] for r in ok if r.get(key) is not None]
    best = min(vals) if vals else None
    for r in rows:
        if r["status"] != "ok":
            table.add_row(r["algo"], "-", "-", "-", "-", r["status"])
            continue
        mark = (
            " *"
            if best is not None
            and r.get(key) is not None
            and math.isclose(r[key], best, rel_tol=1e-9)
            else ""
        )
        table.add_row(
            r["algo"] + mark,
            _fmt(r["latency_s"], 1e3),
            _fmt(r["throughput_rps"]),
            _fmt(r["energy_j"]),
            _fmt(r["planning_time_s"], 1e3, 1),
            " | ".join(r["stages"]),
        )
    console.print(table)
    console.print("* = best for the objective" + (f"; chart written to {png}" if png else ""))


def bar_chart(
    rows: list[dict[str, Any]], path: Path, *, title: str, objective: str | None = None
) -> None:
    """Bar chart: latency, throughput, energy (when known) and planning time per planner.

    In the panel of ``objective`` the best planner's bar is highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise InputError("no planner produced a plan; nothing to chart")
    panels = [("latency_s", "latency (ms)", 1e3), ("throughput_rps", "throughput (req/s)", 1.0)]
    if any(r.get("energy_j") is not None for r in ok):
        panels.append(("energy_j", "energy (J/request)", 1.0))
    panels.append(("planning_time_s", "planning time (ms, log)", 1e3))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    names = [r["algo"] for r in ok]
    target = {"latency": "latency_s", "throughput": "throughput_rps", "energy": "energy_j"}.get(
        objective or ""
    )
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        vals = [(r.get(key) or 0.0) * scale for r in ok]
        colors = ["#4878a8"] * len(vals)
        if key == target and any(vals):
            known = [v for v, r in zip(vals, ok, strict=True) if r.get(key) is not None]
            best = max(known) if key == "throughput_rps" else min(known)
            colors = [
                "#d9822b" if math.isclose(v, best, rel_tol=1e-9) else c
                for v, c in zip(vals, colors, strict=True)
            ]
            label += "  (best highlighted)"
        ax.bar(range(len(ok)), vals, color=colors)
        ax.set_xticks(range(len(ok)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        if key == "planning_time_s":
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise InputError(f"{path}: cannot write chart ({exc.strerror})") from None
    finally:
        plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add ``plan`` and ``compare`` to ``app``."""
    app.command("plan")(plan_cmd)
    app.command("compare")(compare_cmd)
