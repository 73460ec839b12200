"""Pictures of one deployment: Gantt charts of two plans and latency CDFs under load.

ResNet-50 (32 pieces) on four Raspberry-Pi-4-like devices at 1.5 / 1.2 / 1.0 / 0.6 GHz over 80 Mbit/s
Wi-Fi (experiment 1's "mixed" cluster). The dp plan (one device per stage) and the pico plan (stages
with replicas) are scheduled and simulated; the Gantt charts show the first requests of a closed loop,
the CDF shows per-request latency of the pico plan under Poisson arrivals at 50 %, 80 % and 95 % of its
throughput and under the closed loop.

Run: ``python experiments/demo_gantt_cdf.py`` → ``results/demo_gantt_dp.png``,
``demo_gantt_pico.png``, ``demo_latency_cdf.png``, ``demo_latency.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, full_mesh, log, model_instance, run_planner, simulated, write_csv

from coinfer.report import gantt, latency_cdf

FREQS_GHZ = (1.5, 1.2, 1.0, 0.6)
GFLOPS_AT_1_5GHZ = 9.0  # pico_rpi.yaml
LOADS = (0.5, 0.8, 0.95)  # Poisson arrival rate as a fraction of the plan's throughput
REQUESTS = 300


def main() -> None:
    names = [f"pi{i}" for i in range(len(FREQS_GHZ))]
    gflops = {d: GFLOPS_AT_1_5GHZ * f / 1.5 for d, f in zip(names, FREQS_GHZ, strict=True)}
    inst = model_instance(
        "resnet50", gflops, full_mesh(names, 80 * MBIT, 0.003), "pi0", max_pieces=32
    )
    rows = []
    plans = {}
    for algo in ("dp", "pico"):
        plan = run_planner(inst, algo, "throughput")
        if isinstance(plan, str):
            log(f"{algo}: {plan}")
            continue
        plans[algo] = plan
        res = simulated(plan, inst, requests=12)
        horizon = res.completion_s[5]
        gantt(res.events, RESULTS / f"demo_gantt_{algo}.png", title=f"ResNet-50 on 4 Pis: {plan}",
              devices=names, until_s=horizon)  # fmt: skip
    plan = plans.get("pico") or plans["dp"]
    series = {}
    closed = simulated(plan, inst, requests=REQUESTS)
    series["closed loop"] = closed.latency_s
    for load in LOADS:
        rate = load * plan.predicted.throughput_rps
        res = simulated(plan, inst, requests=REQUESTS, arrivals="poisson", rate=rate, seed=1)
        series[f"Poisson {int(load * 100)} % load"] = res.latency_s
    for name, lat in series.items():
        rows.append(
            {
                "plan": plan.algo,
                "arrivals": name,
                "p50_s": float(np.percentile(lat, 50)),
                "p95_s": float(np.percentile(lat, 95)),
                "p99_s": float(np.percentile(lat, 99)),
                "reference_latency_s": plan.predicted.latency_s,
            }
        )
        log(
            f"{name}: p50 {np.percentile(lat, 50) * 1e3:.0f} ms, p99 {np.percentile(lat, 99) * 1e3:.0f} ms"
        )
    latency_cdf(
        series,
        RESULTS / "demo_latency_cdf.png",
        title=f"ResNet-50 on 4 Pis, {plan.algo} plan: latency CDF",
    )
    write_csv(RESULTS / "demo_latency.csv", rows)


if __name__ == "__main__":
    main()
