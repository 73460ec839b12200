"""Experiment 1 (PICO, S7): throughput vs number of devices at several CPU frequencies.

Claim: 1.8–6.8x throughput on 2–8 Raspberry Pis at various CPU frequencies over one device.

Setup: VGG-16, ResNet-50, MobileNetV2 and the Inception (GoogLeNet) DAG, captured and merged to
at most 32 pieces; n = 1..8 Raspberry-Pi-4-like devices (``examples/clusters/pico_rpi.yaml``:
~9 GFLOP/s effective at 1.5 GHz, scaled linearly with the clock) all at 0.6, 1.0 or 1.5 GHz, or a
"mixed" cluster cycling 1.5/1.2/1.0/0.6 GHz. Two networks: ``links`` — a full mesh of independent
80 Mbit/s, 3 ms directed links (the access point as if every pair had its own radio: optimistic),
and ``medium`` — the boards on ONE shared Wi-Fi cell (a half-duplex medium: every transfer, in any
direction, takes turns on the air), at 40 Mbit/s per station-to-station transfer (80 Mbit/s of air,
and in infrastructure mode each frame crosses the air twice: station -> AP -> station), 3 ms.
Every registered throughput planner (brute excluded: too large; bayes: see exp5), its predicted
throughput and its SIMULATED throughput (60 requests, closed loop). Speed-up = throughput / the
best single device's.

Run: ``python experiments/exp1_pico_throughput.py`` → ``results/exp1_pico.csv`` (a ``network``
column), ``exp1_pico.png`` / ``exp1_pico_freq.png`` (links) and ``exp1_pico_medium.png`` /
``exp1_pico_freq_medium.png`` (shared medium).
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

from coinfer.core.instance import Medium
from coinfer.report import throughput_vs_devices

MODELS = ("vgg16", "resnet50", "mobilenet_v2", "inception")
# effective GFLOP/s of a Pi 4 at 1.5 GHz (pico_rpi.yaml), linear in the clock
GFLOPS_AT_1_5GHZ = 9.0
FREQS = {"0.6GHz": [0.6], "1.0GHz": [1.0], "1.5GHz": [1.5], "mixed": [1.5, 1.2, 1.0, 0.6]}
WIFI_BPS = 80 * MBIT  # Pi 4 802.11ac in practice
WIFI_LAT_S = 0.003
# one station-to-station transfer through the access point crosses the air twice
AIR_STATION_TO_STATION_BPS = WIFI_BPS / 2
NETWORKS = ("links", "medium")
MAX_PIECES = 32
# bayes searches by (noisy) measurement, which exp5 studies; here it would only re-find dp's
# optimum from the reference model at ~6 s per plan.
EXCLUDED = ("bayes",)
# PSO takes seconds per plan at 8 devices; run it on the two most telling settings only.
PSO_FREQS = ("1.5GHz", "mixed")


def cluster(n: int, freqs: list[float], network: str) -> tuple[dict[str, float], list, list]:
    """Device speeds, links and media of ``n`` Pis on the ``network`` (see the module docstring)."""
    names = [f"pi{i}" for i in range(n)]
    gflops = {d: GFLOPS_AT_1_5GHZ * freqs[i % len(freqs)] / 1.5 for i, d in enumerate(names)}
    if network == "links":
        return gflops, full_mesh(names, WIFI_BPS, WIFI_LAT_S), []
    media = [Medium("wifi", tuple(names), AIR_STATION_TO_STATION_BPS, WIFI_LAT_S)] if n > 1 else []
    return gflops, [], media


def main() -> None:
    rows = []
    for network, model in ((net, m) for net in NETWORKS for m in MODELS):
        for fname, freqs in FREQS.items():
            base = None
            for n in range(1, 9):
                gflops, links, media = cluster(n, freqs, network)
                inst = model_instance(
                    model, gflops, links, "pi0", max_pieces=MAX_PIECES,
                    name=f"{model}-{fname}-{n}-{network}", media=media,
                )  # fmt: skip
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
                                "network": network,
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
                            "network": network,
                            "model": model,
                            "freq": fname,
                            "devices": n,
                            "algo": algo,
                            "stages": len(plan.stages),
                            "replicated": sum(len(st.devices) > 1 for st in plan.stages),
                            "devices_used": len(plan.devices),
                            "pred_throughput_rps": plan.predicted.throughput_rps,
                            "sim_throughput_rps": sim.throughput_rps,
                            "latency_s": plan.predicted.latency_s,
                            "planning_s": t.s,
                            "note": "",
                        }
                    )
            for r in rows:
                if (r["network"], r["model"], r["freq"]) == (
                    network,
                    model,
                    fname,
                ) and "pred_throughput_rps" in r:
                    r["speedup_pred"] = r["pred_throughput_rps"] / base
                    r["speedup_sim"] = r["sim_throughput_rps"] / base
            log(f"{network} {model} {fname}: done")
    write_csv(RESULTS / "exp1_pico.csv", rows)

    for network in NETWORKS:
        plot(rows, network)


def plot(rows: list[dict], network: str) -> None:
    """The two figures of one network (file names end in ``_medium`` for the shared medium)."""
    tag = "" if network == "links" else f"_{network}"
    where = "independent links" if network == "links" else "one shared Wi-Fi medium"
    ok = [r for r in rows if "speedup_sim" in r and r["network"] == network]
    panels = {}
    for model in MODELS:
        ser: dict[str, list] = {}
        for r in ok:
            if r["model"] == model and r["freq"] == "1.5GHz":
                ser.setdefault(r["algo"], []).append((r["devices"], r["speedup_sim"]))
        panels[model] = ser
    throughput_vs_devices(None, RESULTS / f"exp1_pico{tag}.png", panels=panels,
                          title=f"Speed-up over one Pi (simulated), all Pis at 1.5 GHz, {where}",
                          ylabel="speed-up")  # fmt: skip
    best = "pico" if any(r["algo"] == "pico" for r in ok) else "dp"
    panels = {}
    for model in MODELS:
        ser = {}
        for r in ok:
            if r["model"] == model and r["algo"] == best:
                ser.setdefault(r["freq"], []).append((r["devices"], r["speedup_sim"]))
        panels[model] = ser
    throughput_vs_devices(None, RESULTS / f"exp1_pico_freq{tag}.png", panels=panels,
                          title=f"Speed-up of {best} by CPU frequency (simulated), {where}",
                          ylabel="speed-up")  # fmt: skip
    for model in MODELS:
        sel = [r for r in ok if r["model"] == model and r["devices"] >= 2 and r["algo"] == best]
        lo = min(r["speedup_sim"] for r in sel)
        hi = max(r["speedup_sim"] for r in sel)
        log(
            f"{network} {model}: {best} speed-up over one device, 2-8 devices, all frequencies: "
            f"{lo:.2f}x .. {hi:.2f}x"
        )


if __name__ == "__main__":
    main()
