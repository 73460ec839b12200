"""Fidelity: simulated vs measured, every zoo CNN x every candidate plan, on the calibrated testbed.

For each model: calibrate the local testbed with it (``coinfer calibrate``: probes through the
real runtime), price it on the calibrated cluster, plan it with dp, pico, even, memory and single,
simulate each plan and run it for real ``--repeats`` times. Recorded per pair: measured
throughput and p50 latency (median of the repeats, and every repeat), simulated figures, the
errors (simulated / measured - 1), and how far ``dp`` and ``default`` (pico since 2026-12-05,
``coinfer.plan.registry.DEFAULT_ALIAS``) land from the measured best.

Results go to ``benchmarks/results/fidelity.json`` after every model (a cut-off run keeps what
it measured) and a Markdown table to ``fidelity.md``. The host is shared: its load is recorded
at the start and end of every model.

    python benchmarks/bench_fidelity.py                       # all 8 CNNs, 3 repeats (~40 min)
    python benchmarks/bench_fidelity.py --models resnet18 --repeats 1
    python benchmarks/bench_fidelity.py --models unet vgg16 --append   # add to the stored results

A run that fails is recorded with its row (``failed_runs``) and not counted; a plan whose every
run failed shows the error in place of its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench_runtime_common import RESULTS, host_load

MODELS = (
    "alexnet", "resnet18", "mobilenet_v2", "inception", "resnet50", "tiny_yolov2", "unet", "vgg16",
)  # fmt: skip
ALGOS = ("dp", "pico", "even", "memory", "single")
# Heavy models get fewer requests (VGG-16 takes ~2.6 s per request on the 0.2-core device).
REQUESTS = {"vgg16": 16, "tiny_yolov2": 24, "resnet50": 24, "unet": 24}
# Fewer profiling passes for every model (the quota'd profile still runs >= 2 s per device).
PROFILE_OPTIONS = {"repeats": 4, "warmup": 1}


def bench_model(model: str, repeats: int, requests: int, offsets: bool = False) -> dict[str, Any]:
    from coinfer.cluster import default_local_cluster
    from coinfer.errors import CoinferError
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime import run
    from coinfer.runtime.calibrate import calibrate
    from coinfer.schedule import schedule
    from coinfer.simulate import simulate

    load_start = host_load()
    t0 = time.perf_counter()
    # profile first (cached), with the benchmark's pass count, so calibrate reuses it
    build_instance(model, default_local_cluster(), profile_options=PROFILE_OPTIONS)
    cal, cluster = calibrate(model, default_local_cluster(), requests=24, offsets=offsets)
    inst = build_instance(model, cluster, profile_options=PROFILE_OPTIONS)
    rows = []
    for algo in ALGOS:
        try:
            plan = make_plan(inst, algo, "throughput")
        except Exception as exc:  # a planner may find no feasible plan: recorded, not fatal
            rows.append({"algo": algo, "error": str(exc)})
            continue
        sched = schedule(plan, inst, requests)
        sim = simulate(sched, inst)
        tputs, p50s, failed = [], [], []
        for _ in range(repeats):
            try:
                res = run(model, cluster, plan, requests=requests, instance=inst, schedule=sched)
            except CoinferError as exc:  # recorded with the row, and the repeat is not counted
                failed.append(str(exc))
                print(f"  {model:13s} {algo:7s} run failed: {exc}", flush=True)
                continue
            tputs.append(res.throughput_rps)
            p50s.append(res.latency_p50_s)
        if not tputs:
            rows.append({"algo": algo, "stages": [str(s) for s in plan.stages],
                         "error": f"every run failed: {failed[0]}", "failed_runs": failed})  # fmt: skip
            continue
        m_t, m_l = statistics.median(tputs), statistics.median(p50s)
        rows.append(
            {
                "algo": algo,
                "stages": [str(s) for s in plan.stages],
                "measured_rps": m_t,
                "measured_rps_runs": tputs,
                "simulated_rps": sim.throughput_rps,
                "throughput_error": sim.throughput_rps / m_t - 1.0,
                "measured_p50_s": m_l,
                "measured_p50_runs": p50s,
                "simulated_p50_s": sim.summary()["latency_p50_s"],
                "latency_error": sim.summary()["latency_p50_s"] / m_l - 1.0,
                "failed_runs": failed,
            }
        )
        print(f"  {model:13s} {algo:7s} measured {m_t:6.2f} sim {sim.throughput_rps:6.2f} "
              f"err {rows[-1]['throughput_error']:+.1%}  p50 err {rows[-1]['latency_error']:+.1%}",
              flush=True)  # fmt: skip
    from coinfer.plan.registry import DEFAULT_ALIAS

    ok = [r for r in rows if "error" not in r]
    best = max(ok, key=lambda r: r["measured_rps"])
    default = next(r for r in ok if r["algo"] == DEFAULT_ALIAS)
    return {
        "model": model,
        "requests": requests,
        "repeats": repeats,
        "calibration": cal.to_dict(),
        "rows": rows,
        "measured_best": best["algo"],
        "default": DEFAULT_ALIAS,
        "default_vs_best": default["measured_rps"] / best["measured_rps"] - 1.0,
        "load_start": load_start,
        "load_end": host_load(),
        "seconds": time.perf_counter() - t0,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | plan | measured req/s (median) | simulated req/s | error | p50 measured ms | p50 simulated ms | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    errs, lat_errs = [], []
    for res in results:
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"| {res['model']} | {r['algo']} | {r['error'][:80]} | | | | | |")
                continue
            errs.append(abs(r["throughput_error"]))
            lat_errs.append(abs(r["latency_error"]))
            lines.append(
                f"| {res['model']} | {r['algo']} | {r['measured_rps']:.2f} | {r['simulated_rps']:.2f} | "
                f"{r['throughput_error']:+.1%} | {r['measured_p50_s'] * 1e3:.0f} | "
                f"{r['simulated_p50_s'] * 1e3:.0f} | {r['latency_error']:+.1%} |"
            )
    if errs:
        within = sum(e <= 0.15 for e in errs)
        lines += [
            "",
            f"Throughput: |error| median {statistics.median(errs):.1%}, max {max(errs):.1%}, "
            f"{within}/{len(errs)} pairs within ±15 %. "
            f"Latency p50: |error| median {statistics.median(lat_errs):.1%}, "
            f"{sum(e <= 0.20 for e in lat_errs)}/{len(lat_errs)} within ±20 %.",
            "",
            "| model | measured best | dp vs best | pico vs best |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['measured_best']} | {_vs_best(r, 'dp')} | {_vs_best(r, 'pico')} |"
            for r in results
        ]
        for algo in ("dp", "pico"):
            near = sum(_gap(r, algo) is not None and _gap(r, algo) >= -0.05 for r in results)
            lines.append(
                f"\n{algo}: the measured best or within 5 % of it for {near}/{len(results)} models."
            )
    return "\n".join(lines) + "\n"


def _gap(res: dict[str, Any], algo: str) -> float | None:
    """``algo``'s measured throughput over the best candidate's, minus 1 (None: no plan)."""
    ok = {r["algo"]: r["measured_rps"] for r in res["rows"] if "error" not in r}
    return ok[algo] / max(ok.values()) - 1.0 if algo in ok else None


def _vs_best(res: dict[str, Any], algo: str) -> str:
    gap = _gap(res, algo)
    return "-" if gap is None else f"{gap:+.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--offsets", action="store_true", help="calibrate with the half-range (offset) probes too"
    )
    ap.add_argument("--out", default=str(RESULTS / "fidelity.json"))
    ap.add_argument(
        "--append", action="store_true", help="keep --out's other models (a model re-run replaces)"
    )
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    if args.append and Path(args.out).exists():
        results = [
            r for r in json.loads(Path(args.out).read_text()) if r["model"] not in args.models
        ]
    for model in args.models:
        print(f"{model}: calibrate, price, plan, simulate, run x{args.repeats}", flush=True)
        results.append(bench_model(model, args.repeats, REQUESTS.get(model, 32), args.offsets))
        results.sort(
            key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS)
        )
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        with open(args.out.replace(".json", ".md"), "w") as f:
            f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
