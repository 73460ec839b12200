"""Shared medium: measured vs simulated on the 4-device testbed whose devices share one Wi-Fi-like
medium (``examples/clusters/local_wifi.yaml``), and what planning without the medium costs.

For each model: calibrate the devices on the shared-medium testbed (``coinfer calibrate``), price
the model on the calibrated cluster, plan it with dp, pico, even, memory and single, simulate each
plan and run it for real ``--repeats`` times with the transport's emulation (one reservation
clock per medium) and, when root, with ``--netns`` (one shaped ifb in the hub). Then plan the same
model on the *independent-links* view of that cluster (the medium replaced by a full mesh of
links at its rate: what the cost model assumed before media existed) and run that plan on the
shared testbed too: its prediction vs what it really delivers on a shared medium.

Results go to ``benchmarks/results/media.json`` after every model and a Markdown table to
``media.md``; the host's load (and steal time) is recorded at the start and end of every model.

    python benchmarks/bench_media.py                        # resnet18 + mobilenet_v2, 3 repeats
    python benchmarks/bench_media.py --models resnet18 --repeats 1 --no-netns
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import Any

from bench_runtime_common import RESULTS, ROOT, host_load

CLUSTER = ROOT / "examples" / "clusters" / "local_wifi.yaml"
MODELS = ("resnet18", "mobilenet_v2")
ALGOS = ("dp", "pico", "even", "memory", "single")
PROFILE_OPTIONS = {"repeats": 4, "warmup": 1}


def independent_view(cluster: Any) -> Any:
    """The cluster with every medium replaced by independent directed links at its figures."""
    from coinfer.cluster import LinkSpec

    links = list(cluster.links)
    taken = {lk.pair for lk in links}
    for m in cluster.media:
        for u in m.members:
            for v in m.members:
                if u != v and (u, v) not in taken:
                    links.append(LinkSpec(u, v, m.bandwidth_Bps, m.latency_s))
    return replace(cluster, links=tuple(links), media=())


def measure(model: str, cluster: Any, plan: Any, inst: Any, sched: Any, repeats: int,
            requests: int, netns: bool) -> dict[str, Any]:  # fmt: skip
    from coinfer.runtime import run

    tputs, p50s, air = [], [], []
    for _ in range(repeats):
        res = run(model, cluster, plan, requests=requests, instance=inst, schedule=sched,
                  netns=netns)  # fmt: skip
        tputs.append(res.throughput_rps)
        p50s.append(res.latency_p50_s)
        for name, st in res.links.items():
            if name.endswith("<->"):
                air.append(st["measured_Bps"] / st["nominal_Bps"])
    return {
        "rps": statistics.median(tputs),
        "rps_runs": tputs,
        "p50_s": statistics.median(p50s),
        "p50_runs": p50s,
        "medium_rate_ratio": statistics.median(air) if air else None,
    }


def bench_model(model: str, repeats: int, requests: int, netns: bool) -> dict[str, Any]:
    from coinfer.cluster import load_cluster
    from coinfer.core.evaluate import evaluate
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime.calibrate import calibrate
    from coinfer.schedule import schedule
    from coinfer.simulate import simulate

    load_start = host_load()
    t0 = time.perf_counter()
    base = load_cluster(CLUSTER)
    build_instance(model, base, profile_options=PROFILE_OPTIONS)  # profile once (cached)
    cal, cluster = calibrate(model, base, requests=24)
    inst = build_instance(model, cluster, profile_options=PROFILE_OPTIONS)
    modes = ["transport"] + (["netns"] if netns else [])
    rows = []
    for algo in ALGOS:
        try:
            plan = make_plan(inst, algo, "throughput")
        except Exception as exc:  # no feasible plan: recorded, not fatal
            rows.append({"algo": algo, "error": str(exc)})
            continue
        sched = schedule(plan, inst, requests)
        sim = simulate(sched, inst)
        row: dict[str, Any] = {
            "algo": algo,
            "stages": [str(s) for s in plan.stages],
            "predicted_rps": plan.predicted.throughput_rps,
            "simulated_rps": sim.throughput_rps,
            "simulated_p50_s": sim.summary()["latency_p50_s"],
            "medium_util_sim": sim.link_utilisation.get("wifi<->", 0.0),
        }
        for mode in modes:
            m = measure(model, cluster, plan, inst, sched, repeats, requests, mode == "netns")
            m["throughput_error"] = sim.throughput_rps / m["rps"] - 1.0
            m["latency_error"] = row["simulated_p50_s"] / m["p50_s"] - 1.0
            row[mode] = m
            print(f"  {model:13s} {algo:7s} {mode:9s} measured {m['rps']:6.2f} "
                  f"sim {sim.throughput_rps:6.2f} err {m['throughput_error']:+.1%} "
                  f"p50 err {m['latency_error']:+.1%}", flush=True)  # fmt: skip
        rows.append(row)
    # what the media-blind model would have chosen, and what that plan really does here
    blind_inst = build_instance(model, independent_view(cluster), profile_options=PROFILE_OPTIONS)
    blind = {}
    for algo in ("dp", "pico"):
        plan = make_plan(blind_inst, algo, "throughput")
        sched = schedule(plan, inst, requests)
        m = measure(model, cluster, plan, inst, sched, repeats, requests, False)
        blind[algo] = {
            "stages": [str(s) for s in plan.stages],
            "predicted_rps_without_media": plan.predicted.throughput_rps,
            "predicted_rps_with_media": 1.0 / evaluate(inst, plan.stages).period_s,
            "simulated_rps": simulate(sched, inst).throughput_rps,
            "measured": m,
        }
        print(f"  {model:13s} {algo:7s} media-blind plan: predicted "
              f"{plan.predicted.throughput_rps:6.2f}, measured {m['rps']:6.2f}", flush=True)  # fmt: skip
    return {
        "model": model,
        "cluster": str(CLUSTER.relative_to(ROOT)),
        "requests": requests,
        "repeats": repeats,
        "calibration": cal.to_dict(),
        "rows": rows,
        "media_blind": blind,
        "load_start": load_start,
        "load_end": host_load(),
        "seconds": time.perf_counter() - t0,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | plan | emulation | measured req/s (median) | simulated req/s | error | "
        "p50 measured ms | p50 simulated ms | error | medium busy (sim) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    errs: dict[str, list[float]] = {}
    for res in results:
        for r in res["rows"]:
            if "error" in r:
                lines.append(
                    f"| {res['model']} | {r['algo']} | | no plan: {r['error'][:60]} |||||||"
                )
                continue
            for mode in ("transport", "netns"):
                if mode not in r:
                    continue
                m = r[mode]
                errs.setdefault(mode, []).append(abs(m["throughput_error"]))
                lines.append(
                    f"| {res['model']} | {r['algo']} | {mode} | {m['rps']:.2f} | "
                    f"{r['simulated_rps']:.2f} | {m['throughput_error']:+.1%} | "
                    f"{m['p50_s'] * 1e3:.0f} | {r['simulated_p50_s'] * 1e3:.0f} | "
                    f"{m['latency_error']:+.1%} | {r['medium_util_sim']:.0%} |"
                )
    lines.append("")
    for mode, e in errs.items():
        lines.append(
            f"{mode}: throughput |error| median {statistics.median(e):.1%}, max {max(e):.1%}, "
            f"{sum(x <= 0.15 for x in e)}/{len(e)} plans within ±15 %."
        )
    lines += [
        "",
        "Planned without the medium (independent links at the medium's rate), run on the shared medium:",
        "",
        "| model | planner | plan | predicted without media | predicted with media | measured |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for algo, b in res.get("media_blind", {}).items():
            lines.append(
                f"| {res['model']} | {algo} | {' '.join(b['stages'])} | "
                f"{b['predicted_rps_without_media']:.2f} | {b['predicted_rps_with_media']:.2f} | "
                f"{b['measured']['rps']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    from coinfer.runtime.netns import netns_available

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--no-netns", action="store_true", help="transport emulation only")
    ap.add_argument("--out", default=str(RESULTS / "media.json"))
    args = ap.parse_args()
    netns = not args.no_netns and netns_available()[0]
    results: list[dict[str, Any]] = []
    for model in args.models:
        print(f"{model}: calibrate, price, plan, simulate, run x{args.repeats}", flush=True)
        results.append(bench_model(model, args.repeats, args.requests, netns))
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        with open(args.out.replace(".json", ".md"), "w") as f:
            f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
