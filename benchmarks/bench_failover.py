"""Fail-over: faults at random moments in a live stream — nothing lost, nothing duplicated, how
fast the stream recovers, and whether the reduced pipeline delivers what the planner predicts.

For the 4-device local testbed and its 3-device sub-cluster (d0, d1, d2): calibrate the devices
(``coinfer calibrate``), price ResNet-18, plan it with dp, then run ``--trials`` sessions of
``--duration`` seconds with closed-loop arrivals (``coinfer run --arrivals closed --inject``).
In each, one device of the plan (the source included) is killed (SIGKILL) or stopped (SIGSTOP),
chosen at random, at a random moment between 3 s and 8 s into the stream. Recorded per trial:
submitted / completed / lost / duplicated, detection time and the time from the fault to the
first new result, the throughput from that first new result to the end next to the planner's
prediction for the surviving devices, and the max |error| of a sample of outputs.

Results go to ``benchmarks/results/failover.json`` after every trial and a Markdown table to
``failover.md``; the host's load (and steal time) is recorded at the start and the end.

    python benchmarks/bench_failover.py                 # 10 trials per cluster
    python benchmarks/bench_failover.py --trials 2 --duration 12
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from bench_runtime_common import RESULTS, host_load

MODEL = "resnet18"
PROFILE_OPTIONS = {"repeats": 4, "warmup": 1}


def sub_cluster(cluster: Any, names: tuple[str, ...]) -> Any:
    """``cluster`` with only ``names`` (links between them kept)."""
    keep = set(names)
    return replace(
        cluster,
        devices=tuple(d for d in cluster.devices if d.name in keep),
        links=tuple(lk for lk in cluster.links if lk.src in keep and lk.dst in keep),
    )


def trial(
    cluster: Any, inst: Any, plan: Any, rng: random.Random, duration: float
) -> dict[str, Any]:
    from coinfer.cli.session_run import Arrivals, Fault, run_stream

    devices = sorted({d for st in plan.stages for d in st.devices} | {inst.source})
    fault = Fault(rng.choice(("kill", "stop")), rng.choice(devices), round(rng.uniform(3, 8), 2))
    t0 = time.perf_counter()
    m = run_stream(
        MODEL, cluster, inst, plan, arrivals=Arrivals("closed"), requests=None,
        duration_s=duration, faults=[fault], microbatch=1, input_shape=None, partition="graph",
        max_pieces=None, timeout_s=60, algo="dp", objective="throughput", netns=False,
        check=True,
    )  # fmt: skip
    rec = m["recoveries"][0] if m["recoveries"] else None
    out = {
        "fault": {"kind": fault.kind, "device": fault.device, "at_s": fault.at_s},
        "submitted": m["submitted"],
        "completed": m["completed"],
        "lost": m["lost"],
        "duplicated": m["duplicated"],
        "recoveries": m["recoveries"],
        "detected_after_s": rec["detected_after_s"] if rec else None,
        "first_result_after_s": rec["first_result_after_s"] if rec else None,
        "rps_overall": m["throughput_rps"],
        "rps_before_fault": m.get("throughput_before_fault_rps"),
        "predicted_rps": m["predicted_rps"],
        "rps_after": m.get("throughput_after_recovery_rps"),
        "predicted_rps_after": m.get("predicted_after_recovery_rps"),
        "max_abs_error": m["max_abs_error"],
        "checked": m["checked"],
        "seconds": time.perf_counter() - t0,
    }
    if out["rps_before_fault"]:
        out["before_error"] = out["rps_before_fault"] / out["predicted_rps"] - 1.0
    if out["rps_after"] and out["predicted_rps_after"]:
        out["after_error"] = out["rps_after"] / out["predicted_rps_after"] - 1.0
    if rec and rec["first_result_s"] is not None and out["predicted_rps_after"]:
        # the same, leaving out the first 2 s of the new plan (its re-run backlog, warm-up)
        steady = m.get("throughput_after_recovery_steady_rps")
        out["rps_after_steady"] = steady
        if steady:
            out["after_steady_error"] = steady / out["predicted_rps_after"] - 1.0
    return out


def bench_cluster(name: str, cluster: Any, trials: int, duration: float, seed: int,
                  sink: Any) -> dict[str, Any]:  # fmt: skip
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime.calibrate import calibrate

    load_start = host_load()
    build_instance(MODEL, cluster, profile_options=PROFILE_OPTIONS)  # profile once (cached)
    cal, calibrated = calibrate(MODEL, cluster, requests=24)
    inst = build_instance(MODEL, calibrated, profile_options=PROFILE_OPTIONS)
    plan = make_plan(inst, "dp", "throughput")
    rng = random.Random(seed)
    res: dict[str, Any] = {
        "cluster": name,
        "devices": list(cluster.device_names),
        "plan": [str(s) for s in plan.stages],
        "predicted_rps": plan.predicted.throughput_rps,
        "calibration": cal.to_dict(),
        "trials": [],
        "load_start": load_start,
    }
    for i in range(trials):
        t = trial(calibrated, inst, plan, rng, duration)
        res["trials"].append(t)
        print(f"  {name} trial {i + 1}/{trials}: {t['fault']['kind']} {t['fault']['device']}"
              f"@{t['fault']['at_s']}s  lost {t['lost']} dup {t['duplicated']}  "
              f"recovery {t['first_result_after_s'] or float('nan'):.2f}s  after "
              f"{t['rps_after'] or float('nan'):.1f} vs {t['predicted_rps_after'] or float('nan'):.1f} "
              f"req/s", flush=True)  # fmt: skip
        sink(res)
    res["load_end"] = host_load()
    return res


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ts = [t for r in results for t in r["trials"]]
    rec = [t["first_result_after_s"] for t in ts if t["first_result_after_s"] is not None]
    after = [abs(t["after_error"]) for t in ts if "after_error" in t]
    steady = [abs(t["after_steady_error"]) for t in ts if "after_steady_error" in t]
    before = [t["before_error"] for t in ts if "before_error" in t]
    after_signed = [t["after_error"] for t in ts if "after_error" in t]
    return {
        "trials": len(ts),
        "lost": sum(t["lost"] for t in ts),
        "duplicated": sum(t["duplicated"] for t in ts),
        "completed": sum(t["completed"] for t in ts),
        "recovery_median_s": statistics.median(rec) if rec else None,
        "recovery_max_s": max(rec) if rec else None,
        "recovery_under_2s": sum(x < 2.0 for x in rec),
        "after_error_median": statistics.median(after) if after else None,
        "after_within_15pct": sum(x <= 0.15 for x in after),
        "after_trials": len(after),
        "steady_error_median": statistics.median(steady) if steady else None,
        "steady_within_15pct": sum(x <= 0.15 for x in steady),
        "steady_trials": len(steady),
        "before_error_median_signed": statistics.median(before) if before else None,
        "after_error_median_signed": statistics.median(after_signed) if after_signed else None,
        "max_abs_error": max((t["max_abs_error"] or 0.0) for t in ts) if ts else None,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    s = summary(results)
    lines = [
        "| cluster | fault | submitted | completed | lost | dup | detected after s | "
        "first new result after s | req/s after | steady req/s after | predicted after | error "
        "| steady error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for t in r["trials"]:
            f = t["fault"]
            err = f"{t['after_error']:+.1%}" if "after_error" in t else ""
            serr = f"{t['after_steady_error']:+.1%}" if "after_steady_error" in t else ""
            lines.append(
                f"| {r['cluster']} | {f['kind']} {f['device']} @{f['at_s']} s | {t['submitted']} | "
                f"{t['completed']} | {t['lost']} | {t['duplicated']} | "
                f"{_num(t['detected_after_s'])} | {_num(t['first_result_after_s'])} | "
                f"{_num(t['rps_after'])} | {_num(t.get('rps_after_steady'))} | "
                f"{_num(t['predicted_rps_after'])} | {err} | {serr} |"
            )
    lines += [
        "",
        f"{s['trials']} trials: {s['lost']} lost, {s['duplicated']} duplicated of "
        f"{s['completed']} completed; recovery (fault -> first new result) median "
        f"{_num(s['recovery_median_s'])} s, max {_num(s['recovery_max_s'])} s, "
        f"{s['recovery_under_2s']}/{s['trials']} under 2 s; throughput after recovery vs the "
        f"planner's prediction for the survivors: |error| median {_pct(s['after_error_median'])}, "
        f"{s['after_within_15pct']}/{s['after_trials']} within 15 % (leaving out the new plan's "
        f"first 2 s: median {_pct(s['steady_error_median'])}, {s['steady_within_15pct']}/"
        f"{s['steady_trials']}); signed median error before the fault (the full plan, from 2 s "
        f"to the fault) {_pct(s['before_error_median_signed'])} vs after recovery "
        f"{_pct(s['after_error_median_signed'])}; outputs max |error| "
        f"{s['max_abs_error']}.",
    ]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="per cluster")
    ap.add_argument("--duration", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clusters", nargs="*", default=["4dev", "3dev"])
    ap.add_argument("--out", default=str(RESULTS / "failover.json"))
    args = ap.parse_args()
    from coinfer.cluster import default_local_cluster

    base = default_local_cluster()
    clusters = {"4dev": base, "3dev": sub_cluster(base, ("d0", "d1", "d2"))}
    results: list[dict[str, Any]] = []

    def save(partial: dict[str, Any] | None = None) -> None:
        rows = results + ([partial] if partial is not None and partial not in results else [])
        payload = {"model": MODEL, "duration_s": args.duration, "results": rows,
                   "summary": summary(rows)}  # fmt: skip
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
        with open(args.out.replace(".json", ".md"), "w") as fh:
            fh.write(markdown(rows))

    for i, name in enumerate(args.clusters):
        results.append(bench_cluster(name, clusters[name], args.trials, args.duration,
                                     args.seed + i, save))  # fmt: skip
        save()
    print(markdown(results))


if __name__ == "__main__":
    main()
