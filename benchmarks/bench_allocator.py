"""Freed memory kept vs glibc's defaults: each piece range's compute time in the calibration
probes and each device's whole-model time alone, MobileNetV2 on the 4-device testbed.

Why: the calibration prices a (device, range) pair from one co-run probe, and a plan reuses the
price in another neighbourhood; a cost that depends on what the process allocated before (pages
returned to the kernel and faulted in again) breaks that. Each mode runs the four rotated even
probes and every device alone, on the *uncalibrated* testbed (prices do not matter here, only
what each range costs). ``COINFER_MALLOC=default`` (inherited by the workers) is the baseline.

Compute time per call is wall time: workers hold a device for ``cpu / quota`` after each compute
(``Emulation.pad_s``), so ``wall x quota`` is the CPU a range took. Reported: the medians per
range, the probes' throughput, and per device the sum of its four ranges (co-run) against the
whole model alone.

    python benchmarks/bench_allocator.py [--model mobilenet_v2] [--requests 24]   # ~4 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_runtime_common import RESULTS, host_load

MODES = ("default", "kept")


def measure(model: str, requests: int) -> dict[str, Any]:
    """One mode, in this process (the caller sets COINFER_MALLOC before it starts)."""
    from coinfer.cluster import default_local_cluster
    from coinfer.core.plans import Metrics, Plan, Stage
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime import run
    from coinfer.runtime.calibrate import even_pipeline, probe_plans
    from coinfer.schedule import schedule

    cluster = default_local_cluster()
    inst = build_instance(model, cluster, source="analytic")
    n = len(inst.pieces)
    quota = {d.name: d.emulate.cpu_quota for d in cluster.devices}

    def compute_ms(res: Any, device: str) -> float:
        ts = [
            e.end_s - e.start_s for e in res.trace if e.kind == "compute" and e.resource == device
        ]
        return statistics.median(ts) * 1e3

    probes = []
    for plan in probe_plans(even_pipeline(inst, cluster.device_names), 4):
        res = run(model, cluster, plan, requests=requests, instance=inst,
                  schedule=schedule(plan, inst, requests))  # fmt: skip
        stages = []
        for st in plan.stages:
            d = st.devices[0]
            wall = compute_ms(res, d)
            stages.append({"device": d, "first": st.first, "last": st.last, "wall_ms": wall,
                           "cpu_ms": wall * quota[d]})  # fmt: skip
        probes.append({"rps": res.throughput_rps, "stages": stages,
                       "allocator": sorted({str(e.get("allocator")) for e in res.emulation.values()})})  # fmt: skip
    alone = {}
    for d in cluster.device_names:
        plan = Plan("single", "throughput", (Stage(0, n - 1, (d,)),), Metrics(0.0, 0.0))
        k = max(8, requests // 3)
        res = run(model, cluster, plan, requests=k, instance=inst, schedule=schedule(plan, inst, k))
        wall = compute_ms(res, d)
        alone[d] = {"rps": res.throughput_rps, "wall_ms": wall, "cpu_ms": wall * quota[d]}
    corun = {
        d: sum(s["cpu_ms"] for p in probes for s in p["stages"] if s["device"] == d) for d in alone
    }
    return {"probes": probes, "alone": alone, "corun_sum_cpu_ms": corun}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# Freed memory kept vs glibc's defaults ({res['model']}, 4-device testbed)",
        "",
        f"`benchmarks/bench_allocator.py`, {res['requests']} requests per probe; host load "
        f"{res['load_start']['loadavg_1m']:.1f} at the start, {res['load_end']['loadavg_1m']:.1f} "
        "at the end. CPU per call = median compute wall time x the device's quota.",
        "",
        "| probe | range | device | CPU ms (default) | CPU ms (kept) | probe req/s default / kept |",
        "|---|---|---|---|---|---|",
    ]
    a, b = res["modes"]["default"], res["modes"]["kept"]
    for i, (pa, pb) in enumerate(zip(a["probes"], b["probes"], strict=True)):
        for sa, sb in zip(pa["stages"], pb["stages"], strict=True):
            lines.append(
                f"| {i} | {sa['first']}-{sa['last']} | {sa['device']} | {sa['cpu_ms']:.2f} | "
                f"{sb['cpu_ms']:.2f} | {pa['rps']:.1f} / {pb['rps']:.1f} |"
            )
    lines += [
        "",
        "Whole model per device: the four ranges co-run (sum) against alone, CPU ms per request.",
        "",
        "| device | default: co-run sum | default: alone | kept: co-run sum | kept: alone |",
        "|---|---|---|---|---|",
    ]
    for d in a["alone"]:
        lines.append(
            f"| {d} | {a['corun_sum_cpu_ms'][d]:.2f} | {a['alone'][d]['cpu_ms']:.2f} | "
            f"{b['corun_sum_cpu_ms'][d]:.2f} | {b['alone'][d]['cpu_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: one mode
    ap.add_argument("--out", default=str(RESULTS / "allocator.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.model, args.requests)))
        return
    out: dict[str, Any] = {"model": args.model, "requests": args.requests,
                           "load_start": host_load(), "modes": {}}  # fmt: skip
    for mode in MODES:
        env = dict(os.environ, COINFER_MALLOC="default" if mode == "default" else "")
        cmd = [sys.executable, __file__, "--model", args.model, "--requests", str(args.requests),
               "--one", mode]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        out["modes"][mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode}: done", flush=True)
    out["load_end"] = host_load()
    Path(args.out).write_text(json.dumps(out, indent=1))
    Path(args.out).with_suffix(".md").write_text(md := markdown(out))
    print(md)


if __name__ == "__main__":
    main()
