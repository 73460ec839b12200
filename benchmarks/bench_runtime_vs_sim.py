"""Measured vs simulated throughput for the zoo CNNs on the emulated local testbed.

For each model: build the instance (coinfer's cost model: local profiles under each device's
CPU quota), plan for throughput, schedule, then *simulate* and *really run* the same schedule
(one worker per device in its cgroup, links emulated in the transport). Target: within ±15%.
Medians of ``--repeats`` runs; results in ``benchmarks/results/runtime_vs_sim.{json,md}``::

    python benchmarks/bench_runtime_vs_sim.py [--quick] [--models resnet18,alexnet]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime_common import host_load, median, write_results

CNNS = [
    "alexnet",
    "vgg16",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "inception",
    "tiny_yolov2",
    "unet",
]


def testbed(devices: list[str] | None):
    """The local testbed, optionally restricted to ``devices`` (and the links among them)."""
    import dataclasses

    from coinfer.cluster import default_local_cluster

    cl = default_local_cluster()
    if not devices:
        return cl
    keep = set(devices)
    return dataclasses.replace(
        cl,
        devices=tuple(d for d in cl.devices if d.name in keep),
        links=tuple(lk for lk in cl.links if lk.src in keep and lk.dst in keep),
    )


def one_model(
    model: str, requests: int, repeats: int, algo: str, devices: list[str] | None
) -> dict:
    from coinfer import plan as plan_mod
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime import run
    from coinfer.schedule import scheduler
    from coinfer.simulate import simulate

    cluster = testbed(devices)
    t0 = time.time()
    inst = build_instance(model, cluster)
    t_inst = time.time() - t0
    plan = plan_mod.plan(inst, algo, "throughput")
    sched = scheduler.schedule(plan, inst, requests)
    sim = simulate(sched, inst)
    runs = [
        run(
            model,
            cluster,
            plan,
            requests=requests,
            instance=inst,
            schedule=sched,
            check=i == 0,
            timeout_s=600,
        )
        for i in range(repeats)
    ]
    meas = median([r.throughput_rps for r in runs])
    return {
        "model": model,
        "plan": str(plan),
        "cost_source": dict(inst.meta.get("cost_source", {})),
        "instance_s": t_inst,
        "simulated_rps": sim.throughput_rps,
        "simulated_p50_s": sim.p50_s,
        "measured_rps": meas,
        "measured_rps_runs": [r.throughput_rps for r in runs],
        "measured_p50_s": median([r.latency_p50_s for r in runs]),
        "error_pct": 100.0 * (sim.throughput_rps - meas) / meas,
        "max_abs_error": runs[0].max_abs_error,
        "emulation": runs[0].emulation_mode,
        "devices": [d.name for d in cluster.devices],
        # CPU the plan's devices may use at once; above the host's cores the testbed is oversubscribed
        "quota_cores": sum(
            cluster.device(d).emulate.cpu_quota for d in plan.devices if cluster.device(d).emulate
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=None)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--algo", default="default")
    ap.add_argument(
        "--devices", default=None, help="restrict the testbed, e.g. d0,d1 (1.6 cores of quota)"
    )
    ap.add_argument("--out", default="runtime_vs_sim")
    args = ap.parse_args()
    models = args.models.split(",") if args.models else (["resnet18"] if args.quick else CNNS)
    repeats = 1 if args.quick else args.repeats
    load = host_load()
    cases = []
    for m in models:
        try:
            cases.append(
                one_model(
                    m,
                    args.requests,
                    repeats,
                    args.algo,
                    args.devices.split(",") if args.devices else None,
                )
            )
        except Exception as exc:  # one model failing must not hide the others' numbers
            cases.append({"model": m, "failed": f"{type(exc).__name__}: {exc}"})
        print(cases[-1], flush=True)
    rows = []
    for c in cases:
        if "failed" in c:
            rows.append(f"| {c['model']} | failed: {c['failed'][:80]} | | | | | |")
            continue
        ok = "yes" if abs(c["error_pct"]) <= 15 else "no"
        rows.append(
            f"| {c['model']} | `{c['plan'].replace('|', '/')}` | {c['quota_cores']:.2f} | {c['simulated_rps']:.2f} | {c['measured_rps']:.2f} | "
            f"{c['error_pct']:+.1f}% | {ok} |"
        )
    data = {
        "cases": cases,
        "requests": args.requests,
        "repeats": repeats,
        "host_load": load,
        "host_load_after": host_load(),
    }
    table = [
        f"# Measured vs simulated throughput on the emulated local testbed ({', '.join(cases[0].get('devices', [])) if cases else ''})",
        "",
        f"{args.requests} requests, measured = median of {repeats} run(s); host load (1 min) "
        f"{load['loadavg_1m']:.1f} before, {data['host_load_after']['loadavg_1m']:.1f} after, on {load['cores']} shared cores.",
        "",
        "Quotas from coinfer.cluster.local (1 thread each); `quota` = cores the plan's devices may use "
        "at once — above the 2 host cores the host itself is oversubscribed and the simulator cannot be matched.",
        "",
        "| model | plan | quota cores | simulated req/s | measured req/s | sim error | within ±15% |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_results(args.out, data, table)


if __name__ == "__main__":
    main()
