"""Pipelined run vs the same model in one process, on the emulated heterogeneous testbed.

For each model: plan for throughput on the local testbed (d0..d3 with the CPU quotas of
``coinfer.cluster.local``, one thread each), then measure (a) the pipelined run and (b) the whole
model as ONE stage on the source d0 (the same runtime, the same emulation: one process, d0's
quota, one thread). Measured speed-up = (a) / (b) throughput, next to the planner's predicted speed-up
(single-device period on d0 / the plan's period). Also the plain model in this process (no
runtime) as a sanity check that a one-stage run costs nothing. Results in
``benchmarks/results/runtime_speedup.{json,md}``::

    python benchmarks/bench_runtime_speedup.py [--quick] [--models resnet18,vgg16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime_common import (
    host_load,
    median,
    plain_cluster,
    single_process_rps,
    write_results,
)


def stage_vs_plain(model: str, iters: int = 10) -> dict:
    """One process, one thread: the one-stage (no cut) captured module vs the plain model."""
    import time

    import torch

    from coinfer.graph import capture, split
    from coinfer.zoo import load_model

    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, example = load_model(model, None)
        stage = split(capture(net, example), [])[0].eval()
        res = {}
        with torch.inference_mode():
            for name, fn in (("plain", net), ("stage", stage), ("plain_again", net)):
                fn(*example)
                samples = []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    fn(*example)
                    samples.append(time.perf_counter() - t0)
                res[f"{name}_s"] = median(samples)
        plain = min(res["plain_s"], res["plain_again_s"])  # best of the two plain rounds
        res["stage_over_plain"] = res["stage_s"] / plain
        return res
    finally:
        torch.set_num_threads(old)


def one_model(model: str, requests: int, repeats: int, algo: str) -> dict:
    from coinfer import plan as plan_mod
    from coinfer.cluster import default_local_cluster
    from coinfer.core.plans import Metrics, Plan, Stage
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime import run

    cluster = default_local_cluster()
    inst = build_instance(model, cluster)
    plan = plan_mod.plan(inst, algo, "throughput")
    n = inst.num_pieces
    single_period = inst.compute_s(0, n - 1, cluster.source)
    one = Plan(
        "single",
        "throughput",
        (Stage(0, n - 1, (cluster.source,)),),
        Metrics(single_period, single_period),
    )
    piped, alone = [], []
    for i in range(repeats):
        piped.append(
            run(model, cluster, plan, requests=requests, instance=inst, check=i == 0, timeout_s=600)
        )
        alone.append(
            run(model, cluster, one, requests=requests, instance=inst, check=i == 0, timeout_s=600)
        )
    plain = median([single_process_rps(model, requests) for _ in range(repeats)])
    # the one-stage run on an unthrottled device (1 thread), against the plain model: runtime overhead
    bare = [
        run(
            model,
            plain_cluster([cluster.source]),
            one,
            requests=requests,
            check=False,
            timeout_s=600,
        )
        for _ in range(repeats)
    ]
    bare_rps = median([r.throughput_rps for r in bare])
    p_rps = median([r.throughput_rps for r in piped])
    a_rps = median([r.throughput_rps for r in alone])
    return {
        "model": model,
        "plan": str(plan),
        "in_process_stage_vs_plain": stage_vs_plain(model),
        "predicted_speedup": single_period / plan.predicted.period_s,
        "measured_speedup": p_rps / a_rps,
        "pipelined_rps": p_rps,
        "one_stage_rps": a_rps,
        "plain_in_process_rps": plain,
        "one_stage_vs_plain": a_rps / plain,
        "one_stage_unthrottled_rps": bare_rps,
        "one_stage_unthrottled_vs_plain": bare_rps / plain,
        "max_abs_error": piped[0].max_abs_error,
        "emulation": piped[0].emulation_mode,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=None)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--algo", default="default")
    args = ap.parse_args()
    models = (
        args.models.split(",")
        if args.models
        else (["resnet18"] if args.quick else ["resnet18", "resnet50", "vgg16", "mobilenet_v2"])
    )
    repeats = 1 if args.quick else args.repeats
    load = host_load()
    cases = []
    for m in models:
        try:
            cases.append(one_model(m, args.requests, repeats, args.algo))
        except Exception as exc:  # keep the other models' numbers
            cases.append({"model": m, "failed": f"{type(exc).__name__}: {exc}"})
        print(cases[-1], flush=True)
    rows = []
    for c in cases:
        if "failed" in c:
            rows.append(f"| {c['model']} | failed: {c['failed'][:80]} | | | | | | | |")
            continue
        rows.append(
            f"| {c['model']} | `{c['plan'].replace('|', '/')}` | {c['predicted_speedup']:.2f}x | {c['measured_speedup']:.2f}x | "
            f"{c['pipelined_rps']:.2f} | {c['one_stage_rps']:.2f} | {c['one_stage_vs_plain']:.2f} | "
            f"{c['in_process_stage_vs_plain']['stage_over_plain']:.2f} | {c['one_stage_unthrottled_vs_plain']:.2f} |"
        )
    data = {
        "cases": cases,
        "requests": args.requests,
        "repeats": repeats,
        "host_load": load,
        "host_load_after": host_load(),
    }
    table = [
        "# Pipelined vs one process on the emulated local testbed (d0..d3, 1 thread each)",
        "",
        f"{args.requests} requests, medians of {repeats} run(s); host load (1 min) {load['loadavg_1m']:.1f} before, "
        f"{data['host_load_after']['loadavg_1m']:.1f} after, on {load['cores']} shared cores. One-stage = the whole model on d0 "
        "through the runtime; plain = the model in this process, 1 thread, no quota.",
        "",
        "| model | plan | predicted speed-up | measured speed-up | pipelined req/s | one-stage req/s | one-stage / plain (req/s) | stage module / plain model (time, in-process) | unthrottled one-stage / plain (req/s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_results("runtime_speedup", data, table)


if __name__ == "__main__":
    main()
