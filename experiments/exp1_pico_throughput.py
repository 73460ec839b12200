"""Experiment 1 (PICO, S7): throughput vs number of devices at several CPU frequencies.

Claim: 1.8–6.8x throughput on 2–8 Raspberry Pis at various CPU frequencies over one device.

Setup: VGG-16, ResNet-50, MobileNetV2 and the Inception (GoogLeNet) DAG, captured and merged to
at most 32 pieces; n = 1..8 Raspberry-Pi-4-like devices (``examples/clusters/pico_rpi.yaml``:
~9 GFLOP/s effective at 1.5 GHz, scaled linearly with the clock) all at 0.6, 1.0 or 1.5 GHz, or a
"mixed" cluster cycling 1.5/1.2/1.0/0.6 GHz; a full mesh of 80 Mbit/s, 3 ms Wi-Fi links (the
access point modelled as independent directed links — optimistic, a real AP shares one medium).
Every registered throughput planner (brute excluded: too large; bayes: see exp5), its predicted throughput and its
SIMULATED throughput (60 requests, closed loop). Speed-up = throughput / the best single device's.

Run: ``python experiments/exp1_pico_throughput.py`` → ``results/exp1_pico.csv``, ``exp1_pico.png``,
``exp1_pico_freq.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    MBIT,
    RESULTS,
    Timer,
    full_mesh,
    log,
    model_instance,
    planners_for,
    run_planner,
    simulated,
    write_csv,
)

from coinfer.report import throughput_vs_devices

MODELS = ("vgg16", "resnet50", "mobilenet_v2", "inception")
# effective GFLOP/s of a Pi 4 at 1.5 GHz (pico_rpi.yaml), linear in the clock
GFLOPS_AT_1_5GHZ = 9.0
FREQS = {"0.6GHz": [0.6], "1.0GHz": [1.0], "1.5GHz": [1.5], "mixed": [1.5, 1.2, 1.0, 0.6]}
WIFI_BPS = 80 * MBIT  # Pi 4 802.11ac in practice
WIFI_LAT_S = 0.003
MAX_PIECES = 32
# bayes searches by (noisy) measurement, which exp5 studies; here it would only re-find dp's
# optimum from the reference model at ~6 s per plan.
EXCLUDED = ("bayes",)
# PSO takes seconds per plan at 8 devices; run it on the two most telling settings only.
PSO_FREQS = ("1.5GHz", "mixed")


def cluster(n: int, freqs: list[float]) -> tuple[dict[str, float], list]:
    names = [f"pi{i}" for i in range(n)]
    gflops = {d: GFLOPS_AT_1_5GHZ * freqs[i % len(freqs)] / 1.5 for i, d in enumerate(names)}
    return gflops, full_mesh(names, WIFI_BPS, WIFI_LAT_S)


def main() -> None:
    rows = []
    for model in MODELS:
        for fname, freqs in FREQS.items():
            base = None
            for n in range(1, 9):
                gflops, links = cluster(n, freqs)
                inst = model_instance(
                    model, gflops, links, "pi0", max_pieces=MAX_PIECES, name=f"{model}-{fname}-{n}"
                )
                algos = planners_for("throughput", exclude=EXCLUDED)
                if fname not in PSO_FREQS:
                    algos = [a for a in algos if a != "pso"]
                for algo in algos:
                    with Timer() as t:
                        plan = run_planner(
                            inst, algo, "throughput", **({"seed": 0} if algo == "pso" else {})
                        )
                    if isinstance(plan, str):
                        rows.append(
                            {
                                "model": model,
                                "freq": fname,
                                "devices": n,
                                "algo": algo,
                                "note": plan,
                            }
                        )
                        continue
                    sim = simulated(plan, inst, requests=60)
                    if algo == "single":
                        base = base or plan.predicted.throughput_rps
                    rows.append(
                        {
                            "model": model,
                            "freq": fname,
                            "devices": n,
                            "algo": algo,
                            "stages": len(plan.stages),
                            "devices_used": len(plan.devices),
                            "pred_throughput_rps": plan.predicted.throughput_rps,
                            "sim_throughput_rps": sim.throughput_rps,
                            "latency_s": plan.predicted.latency_s,
                            "planning_s": t.s,
                            "note": "",
                        }
                    )
            for r in rows:
                if r["model"] == model and r["freq"] == fname and "pred_throughput_rps" in r:
                    r["speedup_pred"] = r["pred_throughput_rps"] / base
                    r["speedup_sim"] = r["sim_throughput_rps"] / base
            log(f"{model} {fname}: done")
    write_csv(RESULTS / "exp1_pico.csv", rows)

    ok = [r for r in rows if "speedup_sim" in r]
    panels = {}
    for model in MODELS:
        ser: dict[str, list] = {}
        for r in ok:
            if r["model"] == model and r["freq"] == "1.5GHz":
                ser.setdefault(r["algo"], []).append((r["devices"], r["speedup_sim"]))
        panels[model] = ser
    throughput_vs_devices(None, RESULTS / "exp1_pico.png", panels=panels,
                          title="Speed-up over one Pi (simulated), all Pis at 1.5 GHz", ylabel="speed-up")  # fmt: skip
    best = "pico" if any(r["algo"] == "pico" for r in ok) else "dp"
    panels = {}
    for model in MODELS:
        ser = {}
        for r in ok:
            if r["model"] == model and r["algo"] == best:
                ser.setdefault(r["freq"], []).append((r["devices"], r["speedup_sim"]))
        panels[model] = ser
    throughput_vs_devices(None, RESULTS / "exp1_pico_freq.png", panels=panels,
                          title=f"Speed-up of {best} by CPU frequency (simulated)", ylabel="speed-up")  # fmt: skip
    for model in MODELS:
        sel = [r for r in ok if r["model"] == model and r["devices"] >= 2 and r["algo"] == best]
        lo = min(r["speedup_sim"] for r in sel)
        hi = max(r["speedup_sim"] for r in sel)
        log(
            f"{model}: {best} speed-up over one device, 2-8 devices, all frequencies: {lo:.2f}x .. {hi:.2f}x"
        )


if __name__ == "__main__":
    main()
