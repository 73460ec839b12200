"""Live re-planning on the testbed: a link the plan uses drops 10x, or follows a real trace.

For the 4-device local testbed: calibrate the devices (``coinfer calibrate``), price ResNet-18,
plan it with dp (throughput). Then, medians of ``--trials`` runs of each:

- **drop**: the link whose 10x slow-down hurts the plan most (by the planner's own prediction)
  falls to a tenth of its bandwidth ``--drop-at`` seconds into the session and stays there.
  Streamed with closed-loop arrivals twice, with the same trace: the fixed plan, and
  ``--adapt`` (live re-planning). Measured: how long after the drop the adaptive stream is back
  to >= 80 % of what the planner predicts for the best plan on the dropped network (the first
  moment from which 2 s of throughput reach it), and throughput after the drop, both runs.
- **load** (with ``--load``): from ``--drop-at`` on, a competing process capped at ``--hog`` of
  a core runs on the CPU the plan's busiest device is pinned to (with whatever else is pinned
  there); those devices keep only the rest of the CPU, in every epoch alike.
- **trace** (with ``--traces``): a testbed cluster file whose links follow bandwidth traces
  (``local_testbed_step.yaml``, ``local_testbed_traces.yaml``; see
  ``examples/clusters/traces/README.md``). Fixed plan (made on the traces' means, as
  ``coinfer plan`` would) vs adaptive: mean measured throughput over the trace, beside the
  simulator's fixed plan and its oracle (the best plan for every segment of the trace, known in
  advance; :func:`coinfer.simulate.oracle.oracle_throughput`).

Results: ``benchmarks/results/adapt.json`` (after every run) and ``adapt.md``; host load at the
start and end of each scenario.

    python benchmarks/bench_adapt.py                       # drop, 3 trials
    python benchmarks/bench_adapt.py --traces local_testbed_step.yaml local_testbed_traces.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_runtime_common import RESULTS, ROOT, host_load

MODEL = "resnet18"
PROFILE_OPTIONS = {"repeats": 4, "warmup": 1}
CLUSTERS = ROOT / "examples" / "clusters"
# seconds from a session's creation to its stream's start (workers forked and set up)
STARTUP_S = 3.0


def with_trace(cluster: Any, pair: tuple[str, str], trace: Any) -> Any:
    """``cluster`` with the directed link ``pair`` following ``trace``."""
    return replace(cluster, traces={**dict(cluster.traces), pair: trace})


def with_bandwidth(inst: Any, pair: tuple[str, str], bw: float) -> Any:
    links = tuple(
        replace(lk, bandwidth_Bps=bw) if (lk.src, lk.dst) == pair else lk
        for lk in inst.dedicated_links
    )
    return replace(inst, links=links)


def worst_link(inst: Any, plan: Any, factor: float) -> tuple[tuple[str, str], float]:
    """The dedicated link whose bandwidth / ``factor`` makes ``plan`` slowest (predicted)."""
    from coinfer.core.adapt import running_period_s

    worst, period = None, 0.0
    for lk in inst.dedicated_links:
        slow = with_bandwidth(inst, (lk.src, lk.dst), lk.bandwidth_Bps / factor)
        p = running_period_s(slow, inst, plan.stages)
        if p > period:
            worst, period = (lk.src, lk.dst), p
    assert worst is not None
    return worst, period


def stream(cluster: Any, inst: Any, plan: Any, duration: float, adapt: bool) -> dict[str, Any]:
    from coinfer.cli.session_run import Arrivals, run_stream

    t0 = time.perf_counter()
    m = run_stream(
        MODEL, cluster, inst, plan, arrivals=Arrivals("closed"), requests=None,
        duration_s=duration, faults=[], microbatch=1, input_shape=None, partition="graph",
        max_pieces=None, timeout_s=60, algo="dp", objective="throughput", netns=False,
        check=True, adapt=adapt,
    )  # fmt: skip
    m["seconds"] = time.perf_counter() - t0
    m.pop("adapt_checks", None)
    return m


def rate_between(m: dict[str, Any], t0: float, t1: float) -> float:
    """Requests/s completed in ``(t0, t1]`` of the session clock (from the 0.5 s timeline)."""
    tl = m["timeline"]
    b = tl["bin_s"]
    rps = tl["rps"]
    lo, hi = int(t0 / b), int(t1 / b)
    xs = rps[lo:hi]
    return sum(xs) / len(xs) if xs else 0.0


def back_at(m: dict[str, Any], since: float, target: float, hold_s: float = 2.0) -> float | None:
    """Seconds after ``since`` at which throughput is back: the start of the first ``hold_s``
    window (0.5 s bins) from ``since`` on whose mean reaches ``target`` — sustained, so a lone
    good bin does not count, and not the window's end, which would add the observation time."""
    tl = m["timeline"]
    b = tl["bin_s"]
    rps = tl["rps"]
    k = int(hold_s / b)
    for i in range(int(since / b), len(rps) - k + 1):
        if sum(rps[i : i + k]) / k >= target:
            return i * b - since
    return None


def recovery(run: dict[str, Any], since: float, target: float) -> dict[str, Any]:
    """When the adaptive run decided, switched and was back (seconds after ``since``)."""
    rp = [x for x in run["replans"] if x["t_s"] >= since]
    ho = [h for h in run["handovers"] if h["requested_s"] >= since and h["switched_s"]]
    return {
        "decided_after_s": rp[0]["t_s"] - since if rp else None,
        "switched_after_s": ho[0]["switched_s"] - since if ho else None,
        "back_after_s": back_at(run, since, target),
    }


def change_run(m: dict[str, Any], trial: int, adapt: bool, args: Any) -> dict[str, Any]:
    """One stream of a drop/load scenario as a result row (the change comes at ``drop_at`` on
    the session clock, which is also the trace's)."""
    return {
        "trial": trial,
        "adapt": adapt,
        "completed": m["completed"],
        "lost": m["lost"],
        "duplicated": m["duplicated"],
        "max_abs_error": m["max_abs_error"],
        "rps_before_drop": rate_between(m, 4.0, args.drop_at),
        "rps_after_drop": rate_between(m, args.drop_at + 4.0, args.duration),
        "replans": m["replans"],
        "handovers": m["handovers"],
        "timeline": m["timeline"],
        "seconds": m["seconds"],
    }


def drop_scenario(cluster: Any, inst: Any, plan: Any, args: Any, sink: Any) -> dict[str, Any]:
    from coinfer.cluster.types import BandwidthTrace
    from coinfer.core.evaluate import evaluate
    from coinfer.plan import plan as make_plan

    pair, slowed = worst_link(inst, plan, 10.0)
    bw = inst.link_by_pair[pair].bandwidth_Bps
    dropped = with_bandwidth(inst, pair, bw / 10)
    best = make_plan(dropped, "dp", "throughput")
    best_rps = evaluate(dropped, best.stages).throughput_rps
    trace = BandwidthTrace((0.0, args.drop_at), (bw, bw / 10), origin="10x drop")
    cl = with_trace(cluster, pair, trace)
    res: dict[str, Any] = {
        "scenario": "drop",
        "link": f"{pair[0]}->{pair[1]}",
        "bandwidth_Bps": bw,
        "drop_at_s": args.drop_at,
        "plan": [str(s) for s in plan.stages],
        "predicted_rps_before": plan.predicted.throughput_rps,
        "predicted_rps_fixed_after": 1.0 / slowed,
        "best_plan_after": [str(s) for s in best.stages],
        "predicted_rps_best_after": best_rps,
        "load_start": host_load(),
        "runs": [],
    }
    for i in range(args.trials):
        for adapt in (False, True):
            m = stream(cl, inst, plan, args.duration, adapt)
            # the session clock starts at the trace's time 0; the drop is at drop_at
            run = change_run(m, i, adapt, args)
            after = run["rps_after_drop"]
            res["runs"].append(run)
            back = recovery(run, args.drop_at, 0.8 * best_rps)["back_after_s"]
            print(f"  drop trial {i + 1} adapt={adapt}: after {after:.1f} req/s (best plan "
                  f"{best_rps:.1f}), back in {back} s, "
                  f"{len(m['replans'])} re-plans, lost {m['lost']}", flush=True)  # fmt: skip
            sink(res)
    res["load_end"] = host_load()
    return res


class CpuHog:
    """Background load: a busy-looping process pinned to one CPU, capped at ``quota`` cores by
    a cgroup of ten times the default CPU weight (so it gets its quota first and the devices
    pinned to that CPU share the rest), from ``at_s`` to stop()."""

    def __init__(self, cpu: int, quota: float, at_s: float):
        import threading

        self.cpu, self.quota = cpu, quota
        self.proc: Any = None
        self.group: Any = None
        self.timer = threading.Timer(at_s, self.start)
        self.timer.daemon = True

    def arm(self) -> CpuHog:
        self.timer.start()
        return self

    def start(self) -> None:
        import os
        import subprocess
        import sys

        from coinfer.profile.cgroup import create_cpu_cgroup, move_pid

        self.group = create_cpu_cgroup(
            f"coinfer-benchhog-{os.getpid()}", self.quota, period_us=10_000
        )
        # a heavy weight: the hog gets its whole quota first, the devices share what is left
        (self.group.path / "cpu.shares").write_text("10240")
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(self.proc.pid, {self.cpu})
        move_pid(self.group, self.proc.pid)

    def stop(self) -> None:
        from coinfer.profile.cgroup import remove_cpu_cgroup

        self.timer.cancel()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.group is not None:
            remove_cpu_cgroup(self.group)


def load_scenario(cluster: Any, inst: Any, plan: Any, args: Any, sink: Any) -> dict[str, Any]:
    """A competing process takes ``--hog`` of the CPU the plan's busiest devices are pinned
    to, ``--drop-at`` seconds in: those devices compute slower, in every epoch alike."""
    from coinfer.core.evaluate import busy_times, evaluate
    from coinfer.plan import plan as make_plan
    from coinfer.runtime.prepare import local_cpu_slots

    names = tuple(dict.fromkeys([inst.source, *(d for st in plan.stages for d in st.devices)]))
    cpus = local_cpu_slots(cluster, names, 2)
    dev_busy, _ = busy_times(inst, plan.stages)
    victim = max(dev_busy, key=dev_busy.get)
    cpu = cpus[victim]
    sharing = sorted(d for d, c in cpus.items() if c == cpu)
    # what each sharing device keeps: the CPU left by the hog, split among them, capped by quota
    left = (1.0 - args.hog) / len(sharing)
    slowed_inst = inst
    for d in sharing:
        q = cluster.device(d).emulate.cpu_quota
        factor = max(1.0, q / left)
        pieces = tuple(
            replace(pc, time_s={**pc.time_s, d: pc.time_s[d] * factor}) for pc in slowed_inst.pieces
        )
        slowed_inst = replace(slowed_inst, pieces=pieces)
    best = make_plan(slowed_inst, "dp", "throughput")
    res: dict[str, Any] = {
        "scenario": "load",
        "cpu": cpu,
        "devices_on_it": sharing,
        "hog_quota": args.hog,
        "load_at_s": args.drop_at,
        "plan": [str(s) for s in plan.stages],
        "predicted_rps_before": plan.predicted.throughput_rps,
        "predicted_rps_fixed_after": evaluate(slowed_inst, plan.stages).throughput_rps,
        "best_plan_after": [str(s) for s in best.stages],
        "predicted_rps_best_after": evaluate(slowed_inst, best.stages).throughput_rps,
        "load_start": host_load(),
        "runs": [],
    }
    for i in range(args.trials):
        for adapt in (False, True):
            hog = CpuHog(cpu, args.hog, args.drop_at).arm()
            try:
                m = stream(cluster, inst, plan, args.duration, adapt)
            finally:
                hog.stop()
            run = change_run(m, i, adapt, args)
            after = run["rps_after_drop"]
            res["runs"].append(run)
            print(f"  load trial {i + 1} adapt={adapt}: after {after:.1f} req/s, "
                  f"{len(m['replans'])} re-plans, lost {m['lost']}", flush=True)  # fmt: skip
            sink(res)
    res["load_end"] = host_load()
    return res


def trace_scenario(name: str, args: Any, sink: Any) -> dict[str, Any]:
    """A cluster file whose links follow traces: fixed plan (made on the traces' means, as
    ``coinfer plan`` would) vs adaptive, measured; the simulator's fixed plan and oracle."""
    from coinfer.cluster import load_cluster
    from coinfer.core.plans import Plan
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime.calibrate import calibrate
    from coinfer.simulate.oracle import (
        fixed_plan_throughput,
        oracle_throughput,
        replay_plan_timeline,
    )

    cluster = load_cluster(CLUSTERS / name)
    _cal, calibrated = calibrate(MODEL, cluster, requests=24)  # traced links keep their trace
    inst = build_instance(MODEL, calibrated, profile_options=PROFILE_OPTIONS)
    fixed = make_plan(inst, "dp", "throughput")
    traces = dict(calibrated.traces)
    horizon = min(args.trace_duration, max(t.times_s[-1] for t in traces.values()))

    def planner(i: Any) -> Any:
        return make_plan(i, "dp", "throughput")

    sim_fixed = fixed_plan_throughput(inst, fixed, traces, horizon)
    sim_oracle = oracle_throughput(inst, traces, horizon, planner)
    res: dict[str, Any] = {
        "scenario": "trace",
        "cluster": name,
        "traced": sorted({f"{k[0]}->{k[1]}" if isinstance(k, tuple) else k for k in traces}),
        "horizon_s": horizon,
        "fixed_plan": [str(s) for s in fixed.stages],
        "sim_fixed_rps": sim_fixed,
        "sim_oracle_rps": sim_oracle.mean_throughput_rps,
        "sim_oracle_switches": sim_oracle.switches,
        "load_start": host_load(),
        "runs": [],
    }
    for i in range(args.trials):
        for adapt in (False, True):
            # the traces start when the session is made; its stream starts a moment later and
            # runs to the end of the horizon
            m = stream(calibrated, inst, fixed, horizon - STARTUP_S, adapt)
            rps = rate_between(m, m["start_s"] + 1.0, horizon)
            # the run's own plan timeline, replayed in the simulator: its simulated self
            switched = {h["epoch"]: h["switched_s"] for h in m["handovers"]}
            timeline = [(0.0, fixed)] + [
                (switched[r["epoch"]], Plan.from_dict(r["plan"]))
                for r in m["replans"]
                if r["epoch"] in switched and switched[r["epoch"]] is not None
            ]
            replay = replay_plan_timeline(inst, traces, timeline, horizon, route_on="switch")
            res["runs"].append(
                {
                    "trial": i,
                    "adapt": adapt,
                    "rps": rps,
                    "sim_replay_rps": replay.mean_throughput_rps,
                    "start_s": m["start_s"],
                    "completed": m["completed"],
                    "lost": m["lost"],
                    "duplicated": m["duplicated"],
                    "max_abs_error": m["max_abs_error"],
                    "replans": m["replans"],
                    "handovers": m["handovers"],
                    "timeline": m["timeline"],
                }
            )
            print(f"  {name} trial {i + 1} adapt={adapt}: {rps:.1f} req/s, "
                  f"{len(m['replans'])} re-plans, lost {m['lost']}", flush=True)  # fmt: skip
            sink(res)
    res["load_end"] = host_load()
    return res


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _median(rows: list[dict[str, Any]], key: str, adapt: bool) -> float | None:
    xs = [r[key] for r in rows if r["adapt"] == adapt and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def markdown(results: list[dict[str, Any]]) -> str:
    out = ["# Live re-planning on the local testbed (`bench_adapt.py`)", ""]
    for r in results:
        runs = r["runs"]
        lost = sum(x["lost"] for x in runs)
        dup = sum(x["duplicated"] for x in runs)
        la, lb = r["load_start"]["loadavg_1m"], (r.get("load_end") or {}).get("loadavg_1m")
        if r["scenario"] in ("drop", "load"):
            fixed, adapt = (
                _median(runs, "rps_after_drop", False),
                _median(runs, "rps_after_drop", True),
            )
            since = r.get("drop_at_s", r.get("load_at_s"))
            rec = [
                recovery(x, since, 0.8 * r["predicted_rps_best_after"]) for x in runs if x["adapt"]
            ]
            back = [x["back_after_s"] for x in rec]
            what = (
                f"10x drop on {r['link']} at {r['drop_at_s']:g} s"
                if r["scenario"] == "drop"
                else f"a CPU hog ({r['hog_quota']:g} core) on CPU {r['cpu']} "
                f"({', '.join(r['devices_on_it'])}) from {r['load_at_s']:g} s"
            )
            out += [
                f"## {what} (medians of "
                f"{len(back)}; load {la:.1f} -> {lb if lb is None else round(lb, 1)})",
                "",
                f"Plan `{' '.join(r['plan'])}`; after the drop the best plan is "
                f"`{' '.join(r['best_plan_after'])}`, predicted {r['predicted_rps_best_after']:.1f}"
                f" req/s (the fixed plan: {r['predicted_rps_fixed_after']:.1f}).",
                "",
                "| | fixed plan | adaptive |",
                "|---|---|---|",
                f"| req/s after the drop (measured) | {_f(fixed)} | {_f(adapt)} |",
                f"| re-plan decided (s after the change) | - | "
                f"{_runs([x['decided_after_s'] for x in rec])} |",
                f"| new plan takes the stream (s after) | - | "
                f"{_runs([x['switched_after_s'] for x in rec])} |",
                f"| back to 80 % of the best plan's prediction, 2 s sustained (s after) | never | "
                f"{_runs(back)} |",
                f"| re-plans per run | 0 | "
                f"{_f(_med([len(x['replans']) for x in runs if x['adapt']]))} |",
                f"| lost / duplicated (all runs) | {lost} / {dup} | |",
                "",
            ]
        else:
            fixed, adapt = _median(runs, "rps", False), _median(runs, "rps", True)
            ratio = adapt / fixed if fixed and adapt else None
            oracle = r["sim_oracle_rps"]
            out += [
                f"## `{r['cluster']}`: traced {', '.join(r['traced'])} ({r['horizon_s']:g} s; load {la:.1f} "
                f"-> {lb if lb is None else round(lb, 1)})",
                "",
                "| | measured (median) | simulated |",
                "|---|---|---|",
                f"| fixed plan `{' '.join(r['fixed_plan'])}` | {_f(fixed)} | "
                f"{_f(r['sim_fixed_rps'])} |",
                f"| adaptive | {_f(adapt)} | "
                f"{_f(_median(runs, 'sim_replay_rps', True))} (its plan timeline replayed) |",
                f"| oracle (knows the trace) | - | {_f(oracle)} |",
                f"| adaptive / fixed | {_f(ratio)} | |",
                f"| adaptive / oracle | {_f(adapt / oracle if adapt and oracle else None)} | |",
                f"| lost / duplicated (all runs) | {lost} / {dup} | |",
                "",
            ]
    return "\n".join(out)


def _runs(xs: list[float | None]) -> str:
    """``median (run, run, run)``; a run that never got there shows as ``never``."""
    ok = [x for x in xs if x is not None]
    each = ", ".join("never" if x is None else f"{x:.1f}" for x in xs)
    return f"{_f(_med(ok)) if ok else 'never'} ({each})"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0, help="drop scenario, seconds")
    ap.add_argument("--drop-at", type=float, default=10.0)
    ap.add_argument(
        "--traces",
        nargs="*",
        default=[],
        help="cluster files in examples/clusters whose links follow traces",
    )
    ap.add_argument("--trace-duration", type=float, default=60.0)
    ap.add_argument("--no-drop", action="store_true")
    ap.add_argument("--load", action="store_true", help="also the background-load scenario")
    ap.add_argument("--hog", type=float, default=0.7, help="the hog's share of its CPU")
    ap.add_argument("--out", default=str(RESULTS / "adapt.json"))
    ap.add_argument("--render", action="store_true", help="only redraw the .md from the .json")
    args = ap.parse_args()
    if args.render:
        rows = json.loads(Path(args.out).read_text())["results"]
        Path(args.out.replace(".json", ".md")).write_text(markdown(rows))
        print(markdown(rows))
        return
    from coinfer.cluster import default_local_cluster
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime.calibrate import calibrate

    cluster = default_local_cluster()
    build_instance(MODEL, cluster, profile_options=PROFILE_OPTIONS)  # profile once (cached)
    cal, calibrated = calibrate(MODEL, cluster, requests=24)
    inst = build_instance(MODEL, calibrated, profile_options=PROFILE_OPTIONS)
    plan = make_plan(inst, "dp", "throughput")
    results: list[dict[str, Any]] = []

    def save(partial: dict[str, Any] | None = None) -> None:
        rows = results + ([partial] if partial is not None and partial not in results else [])
        payload = {"model": MODEL, "calibration": cal.to_dict(), "results": rows}
        Path(args.out).write_text(json.dumps(payload, indent=1))
        Path(args.out.replace(".json", ".md")).write_text(markdown(rows))

    if not args.no_drop:
        results.append(drop_scenario(calibrated, inst, plan, args, save))
        save()
    if args.load:
        results.append(load_scenario(calibrated, inst, plan, args, save))
        save()
    for name in args.traces:
        results.append(trace_scenario(name, args, save))
        save()
    print(markdown(results))


if __name__ == "__main__":
    main()
