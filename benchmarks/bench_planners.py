"""Planning time and optimality gap of every registered planner.

    python benchmarks/bench_planners.py            # short settings (~ a few minutes on 2 shared cores)
    python benchmarks/bench_planners.py --gap-n 100 --repeat 3   # the long run

Writes ``benchmarks/results/planners.json`` and ``benchmarks/results/planners.md``:

1. **Planning time** per planner (throughput; dp also latency) on four sizes:
   12 pieces x 4 devices (random), ResNet-50 at its natural piece count from ``coinfer.graph``
   capture on 8 heterogeneous devices (synthetic devices scaled from the real per-piece costs;
   falls back to a synthetic 72-piece chain if capture is unavailable), a 180-piece synthetic
   chain x 8 (the upper end of ResNet-50 granularity), and 48 pieces x 16 all-different devices
   with per-link bandwidth and latency (PipeEdge's hard case). Median of ``--repeat`` runs.
2. **Optimality gap** of every heuristic against the exact optimum in its plan space (dp for
   one-device-per-stage planners, pico's branch and bound for replicated ones), mean and worst
   over ``--gap-n`` random 10 x 4 instances per objective (dense and sparse links, half tight
   memory). Gap = value / optimum - 1 for the minimised quantity (period for throughput).
3. **dp beyond exact reach**: dp restricted to the source + the fastest 8 devices vs exact dp on
   48 x 12 and 48 x 16 instances.

A planner whose default budget is too slow for a size is given a time cap by skipping it on
that size (listed in the output); nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

from coinfer.core.instance import Device, Instance, Link, make_instance  # noqa: E402
from coinfer.errors import CoinferError  # noqa: E402
from coinfer.plan import PLANNERS, plan, skip_reason  # noqa: E402
from coinfer.plan.chain.dp import DPOptions, plan_dp  # noqa: E402
from coinfer.plan.chain.pico import PicoOptions, plan_pico  # noqa: E402
from coinfer.testing import random_instance  # noqa: E402

# Planners skipped on sizes where brute force cannot finish (candidate counts explode).
BRUTE_MAX_PIECES = 12
# Slow planners measured on only the first few gap instances (bayes: ~10 s per plan here).
GAP_LIMITED = {"bayes": 6}


def resnet50_instance(devices: int, seed: int) -> tuple[Instance, str]:
    """ResNet-50's real pieces (capture + analytic costs) on ``devices`` synthetic heterogeneous devices.

    Per-piece time on device ``d`` = the captured piece's analytic time x a device slowdown
    (log-uniform 1-12x) x an affinity factor (0.7-1.3); links per direction log-uniform
    1-100 MB/s, 0.1-5 ms. Memory and cut bytes are the real ones."""
    rng = np.random.default_rng(seed)
    try:
        from coinfer.cluster import load_cluster
        from coinfer.profile.costmodel import build_instance

        base = build_instance(
            "resnet50",
            load_cluster(ROOT / "examples" / "clusters" / "pico_rpi.yaml"),
            source="analytic",
        )
        work = [p.time_s[base.source] for p in base.pieces]
        mem = [p.mem_bytes for p in base.pieces]
        out = [p.out_bytes for p in base.pieces]
        inp = base.input_bytes
        origin = f"captured resnet50, {base.num_pieces} pieces"
    except Exception as exc:  # the benchmark must run even if capture is unavailable
        n = 72
        work = list(np.exp(rng.uniform(np.log(1e-3), np.log(2e-2), n)))
        mem = list(rng.integers(10_000, 10_000_000, n))
        out = list(np.exp(rng.uniform(np.log(5e4), np.log(3e6), n)).astype(int))
        inp = 602_112
        origin = f"synthetic 72-piece stand-in ({type(exc).__name__}: {exc})"
    names = [f"d{i}" for i in range(devices)]
    slow = np.exp(rng.uniform(0, np.log(12.0), devices))
    aff = rng.uniform(0.7, 1.3, (len(work), devices))
    times = [
        {names[d]: float(work[p] * slow[d] * aff[p, d]) for d in range(devices)}
        for p in range(len(work))
    ]
    total = int(sum(mem))
    devs = [Device(n_, 2 * total) for n_ in names]
    links = [
        Link(
            u,
            v,
            float(np.exp(rng.uniform(np.log(1e6), np.log(1e8)))),
            float(rng.uniform(1e-4, 5e-3)),
        )
        for u in names
        for v in names
        if u != v
    ]
    inst = make_instance(times, [int(m) for m in mem], [int(b) for b in out], int(inp), devs, links, names[0],
                         name=f"resnet50x{devices}")  # fmt: skip
    return inst, origin


def time_planners(inst: Instance, repeat: int, skip: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    jobs = [(name, "throughput") for name in sorted(PLANNERS)] + [("dp", "latency")]
    for name, objective in jobs:
        info = PLANNERS[name]
        why = skip.get(name) or skip_reason(info, inst, objective)
        row: dict[str, Any] = {"algo": name, "objective": objective}
        if why:
            row["skipped"] = why
            rows.append(row)
            continue
        times, result = [], None
        try:
            for _ in range(repeat):
                result = plan(inst, name, objective)
                times.append(result.planning_time_s)
        except CoinferError as exc:
            row["error"] = str(exc)[:200]
            rows.append(row)
            continue
        assert result is not None
        row.update(
            planning_time_s=statistics.median(times),
            period_s=result.predicted.period_s,
            latency_s=result.predicted.latency_s,
            stages=len(result.stages),
            exact=result.details.get("exact"),
        )
        rows.append(row)
        print(
            f"  {inst.name:>16} {name:>8} {objective:>10}: {row['planning_time_s']:.3f} s",
            flush=True,
        )
    return rows


def gaps(n: int, seed: int) -> dict[str, Any]:
    """Optimality gap of each heuristic vs the exact optimum of its plan space."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    for objective in ("throughput", "latency"):
        acc: dict[str, list[float]] = {}
        for k in range(n):
            inst = random_instance(rng, 10, 4, tight_memory=k % 2 == 0, sparse_links=k % 3 == 0)
            try:
                exact = plan_dp(inst, objective).predicted.value(objective)
            except CoinferError:
                continue
            exact_rep = plan_pico(inst, objective).predicted.value(objective)
            for name, info in sorted(PLANNERS.items()):
                if info.exact or skip_reason(info, inst, objective):
                    continue
                if k >= GAP_LIMITED.get(name, n):
                    continue
                try:
                    v = plan(inst, name, objective).predicted.value(objective)
                except CoinferError:
                    acc.setdefault(name + " (failed)", []).append(1.0)
                    continue
                ref = exact_rep if info.model == "replicas" else exact
                acc.setdefault(name, []).append(v / ref - 1.0)
            if objective == "throughput":
                greedy = plan_pico(inst, objective, PicoOptions(exact_limit=0)).predicted.value(
                    objective
                )
                acc.setdefault("pico-greedy (vs pico exact)", []).append(greedy / exact_rep - 1.0)
                acc.setdefault("pico exact vs dp (gain)", []).append(exact_rep / exact - 1.0)
                try:
                    lim = plan_dp(inst, objective, DPOptions(max_exact_devices=2))
                    acc.setdefault("dp limited to 2 devices", []).append(
                        lim.predicted.value(objective) / exact - 1.0
                    )
                except CoinferError:  # the 2 devices kept cannot hold the model
                    acc.setdefault("dp limited to 2 devices (failed)", []).append(1.0)
        out[objective] = acc
    return {
        obj: {
            name: {
                "n": len(v),
                "mean_gap": float(np.mean(v)),
                "worst_gap": float(np.max(v)),
                "optimal_share": float(np.mean(np.abs(v) < 1e-9)),
            }
            for name, v in acc.items()
        }
        for obj, acc in out.items()
    }


def beyond_exact(seed: int, count: int) -> list[dict[str, Any]]:
    rows = []
    for devices in (12, 16):
        for k in range(count):
            inst = random_instance(seed + 100 * devices + k, 48, devices)
            t0 = time.perf_counter()
            exact = plan_dp(inst, "throughput")
            t_exact = time.perf_counter() - t0
            t0 = time.perf_counter()
            lim = plan_dp(inst, "throughput", DPOptions(max_exact_devices=8))
            t_lim = time.perf_counter() - t0
            rows.append({
                "instance": inst.name, "devices": devices, "exact_period_s": exact.predicted.period_s,
                "limited_period_s": lim.predicted.period_s, "gap": lim.predicted.period_s / exact.predicted.period_s - 1,
                "exact_time_s": t_exact, "limited_time_s": t_lim, "exact_proven": exact.details["exact"],
            })  # fmt: skip
            print(
                f"  48x{devices} #{k}: gap {rows[-1]['gap']:.3%}, exact {t_exact:.2f} s, limited {t_lim:.2f} s",
                flush=True,
            )
    return rows


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Planner benchmark",
        "",
        f"Machine: {res['machine']}. Settings: {res['settings']}.",
        "",
    ]
    lines += ["## Planning time (median, seconds)", ""]
    sizes = list(res["timing"])
    lines.append("| planner | objective | " + " | ".join(sizes) + " |")
    lines.append("|---|---|" + "---|" * len(sizes))
    keys = [(r["algo"], r["objective"]) for r in res["timing"][sizes[0]]]
    for algo, obj in keys:
        cells = []
        for s in sizes:
            r = next(x for x in res["timing"][s] if x["algo"] == algo and x["objective"] == obj)
            if "planning_time_s" in r:
                cells.append(
                    f"{r['planning_time_s']:.3f}"
                    + ("" if r.get("exact") in (None, True) else " (not proven)")
                )
            elif "skipped" in r:
                cells.append("skip")
            else:
                cells.append("error")
        lines.append(f"| {algo} | {obj} | " + " | ".join(cells) + " |")
    lines += ["", "Sizes: " + "; ".join(f"{k}: {v}" for k, v in res["sizes"].items()), ""]
    lines += ["## Optimality gap vs exact (value / optimum - 1)", ""]
    for obj, table in res["gaps"].items():
        lines += [
            f"### {obj}",
            "",
            "| planner | n | mean gap | worst gap | optimal in |",
            "|---|---|---|---|---|",
        ]
        for name, g in sorted(table.items()):
            if name.endswith("(failed)"):  # counts only: no plan, so no gap
                lines.append(f"| {name} | {g['n']} | - | - | - |")
                continue
            lines.append(
                f"| {name} | {g['n']} | {g['mean_gap']:.2%} | {g['worst_gap']:.2%} | {g['optimal_share']:.0%} |"
            )
        lines.append("")
    lines += ["## dp beyond exact reach (source + fastest 8 devices) vs exact dp, 48 pieces", "",
              "| instance | devices | gap | exact s | limited s | exact proven |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["beyond_exact"]:
        lines.append(
            f"| {r['instance']} | {r['devices']} | {r['gap']:.2%} | {r['exact_time_s']:.2f} | {r['limited_time_s']:.2f} | {r['exact_proven']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="timing repeats per planner (median)")
    ap.add_argument(
        "--gap-n", type=int, default=30, help="random instances per objective for the gap table"
    )
    ap.add_argument(
        "--beyond-n",
        type=int,
        default=2,
        help="instances per device count for the beyond-exact table",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--skip",
        default="bayes",
        help="planners to skip on every size past 12x4 (comma list; default: bayes)",
    )
    ap.add_argument(
        "--skip-huge",
        default="pso",
        help="planners also skipped on 180x8 and 48x16 (comma list; default: pso)",
    )
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    slow = {s.strip() for s in args.skip.split(",") if s.strip()}
    huge = {s.strip() for s in args.skip_huge.split(",") if s.strip()}
    resnet, origin = resnet50_instance(8, args.seed)
    sizes = {
        "12x4": (random_instance(args.seed, 12, 4), "random, dense per-link bandwidth/latency"),
        f"resnet50({resnet.num_pieces})x8": (resnet, origin),
        "180x8": (
            random_instance(args.seed + 1, 180, 8),
            "synthetic chain, upper end of ResNet-50 granularity",
        ),
        "48x16": (
            random_instance(args.seed + 2, 48, 16),
            "all-different devices, per-link bandwidth and latency",
        ),
        "48x16 sparse": (
            random_instance(args.seed + 3, 48, 16, sparse_links=True),
            "as 48x16 on a sparse network: relayed transfers may share links",
        ),
    }
    timing = {}
    for label, (inst, _) in sizes.items():
        big = inst.num_pieces > BRUTE_MAX_PIECES or len(inst.devices) > 4
        skip = {"brute": "too large for brute force"} if big else {}
        if big:
            skip.update({s: "skipped on large sizes (--skip)" for s in slow})
        if inst.num_pieces > 100 or len(inst.devices) > 8:
            skip.update({s: "skipped on the largest sizes (--skip-huge)" for s in huge})
        print(f"timing {label}", flush=True)
        timing[label] = time_planners(inst, args.repeat, skip)
    print("gaps", flush=True)
    gap = gaps(args.gap_n, args.seed)
    print("beyond exact reach", flush=True)
    beyond = beyond_exact(args.seed, args.beyond_n)
    res = {
        "machine": f"{platform.machine()} {platform.processor() or ''} python {sys.version.split()[0]}, 2 shared cores",
        "settings": f"repeat={args.repeat}, gap_n={args.gap_n}, beyond_n={args.beyond_n}, seed={args.seed}, skip on large={sorted(slow)}, skip on largest={sorted(huge)}",
        "sizes": {k: v[1] for k, v in sizes.items()},
        "timing": timing,
        "gaps": gap,
        "beyond_exact": beyond,
    }
    (RESULTS / "planners.json").write_text(
        json.dumps(
            res,
            indent=2,
            default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x,
        )
    )
    (RESULTS / "planners.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
