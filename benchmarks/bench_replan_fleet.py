"""Re-planning at fleet size: dp (throughput) on 64 devices x 100 pieces, with and without classes.

    python benchmarks/bench_replan_fleet.py               # ~1-2 minutes on 2 shared cores
    python benchmarks/bench_replan_fleet.py --repeat 5 --seeds 5

Writes ``benchmarks/results/replan_fleet.json`` and ``benchmarks/results/replan_fleet.md``:

1. **Fleets** of 64 devices (a source, 3 edge servers, 12 boards, 48 phones; devices of one
   kind identical) x 100 pieces, three network patterns: ``ap`` (every pair through one access
   point: one bandwidth and latency for all), ``per-class`` (each pair at the slower NIC of its
   two kinds, latency by wired/wireless ends) and ``cell`` (phones and boards share one Wi-Fi
   medium among themselves, dedicated links to the wired side). Wall time of ``plan_dp``
   (median of ``--repeat``), method, classes, proven or not, period, lower bound and gap bound.
   The same fleets with classes switched off show what the classes buy (past exact reach: the
   old cut to the source + 15 fastest devices, with the new bound).
2. **No symmetry**: ``coinfer.testing.random_instance`` 100 pieces x 64 all-different devices;
   ``cut`` (default) and ``search`` modes; the reported gap bound.
3. **16 x 100**: a 16-device fleet (source, 3 servers, 4 boards, 8 phones) planned by the
   class DP and by the bitset DP (classes off): equal periods, the two times.

Machine load (``os.getloadavg`` before and after) is recorded: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

from coinfer.core.instance import Device, Instance, Link, Medium, make_instance  # noqa: E402
from coinfer.plan.chain.dp import DPOptions, plan_dp  # noqa: E402
from coinfer.testing import random_instance  # noqa: E402

# Device kinds of the fleet: (name, count, speed factor, memory bytes, NIC bytes/s, wired?).
# Speeds relative to a laptop-class source; NICs: 1 GbE source, 10 GbE servers, ~100 Mbit/s
# boards, ~200 Mbit/s (Wi-Fi 6 in practice) phones; memory: what each can give a model.
FLEET_64 = (
    ("src", 1, 1.0, 8 * 10**9, 1.25e8, True),
    ("server", 3, 6.0, 32 * 10**9, 1.25e9, True),
    ("board", 12, 0.8, 1 * 10**9, 1.2e7, False),
    ("phone", 48, 0.5, 3 * 10**9 // 2, 2.5e7, False),
)
FLEET_16 = (FLEET_64[0], (*FLEET_64[1][:1], 3, *FLEET_64[1][2:]), (*FLEET_64[2][:1], 4, *FLEET_64[2][2:]),
            (*FLEET_64[3][:1], 8, *FLEET_64[3][2:]))  # fmt: skip
# The "ap" pattern: every transfer crosses one access point (two air hops folded into a link).
AP_BANDWIDTH_BPS, AP_LATENCY_S = 2.0e7, 2e-3
# Latency of a wired hop and of each wireless end of a hop.
WIRED_LATENCY_S, AIR_LATENCY_S = 2e-4, 1e-3


def fleet_instance(seed: int, pieces: int, kinds, pattern: str) -> Instance:  # type: ignore[no-untyped-def]
    """A fleet: per-kind piece times (work / speed x a per-kind affinity in [0.6, 1.4], the
    chain drawn as ``coinfer.testing`` draws it), per-kind memory, links by ``pattern``."""
    rng = np.random.default_rng(seed)
    work = np.exp(rng.uniform(np.log(1e-3), np.log(5e-2), pieces))
    aff = rng.uniform(0.6, 1.4, (pieces, len(kinds)))
    mem = rng.integers(1_000_000, 100_000_000, pieces)
    cuts = np.exp(rng.uniform(np.log(1e4), np.log(2e6), pieces + 1)).astype(int)
    names, kind = [], []
    for k, (nm, count, *_rest) in enumerate(kinds):
        for j in range(count):
            names.append(nm if count == 1 else f"{nm}{j}")
            kind.append(k)
    times = [{n: float(work[p] / kinds[kind[i]][2] * aff[p, kind[i]]) for i, n in enumerate(names)}
             for p in range(pieces)]  # fmt: skip
    devs = [Device(n, kinds[kind[i]][3]) for i, n in enumerate(names)]
    wired = [kinds[kind[i]][5] for i in range(len(names))]
    links, media = [], []
    air = [n for i, n in enumerate(names) if not wired[i]]
    for i, u in enumerate(names):
        for j, v in enumerate(names):
            if i == j:
                continue
            if pattern == "ap":
                links.append(Link(u, v, AP_BANDWIDTH_BPS, AP_LATENCY_S))
                continue
            if pattern == "cell" and not wired[i] and not wired[j]:
                continue  # over the shared medium below
            bw = min(kinds[kind[i]][4], kinds[kind[j]][4])
            lat = WIRED_LATENCY_S + AIR_LATENCY_S * ((not wired[i]) + (not wired[j]))
            links.append(Link(u, v, bw, lat))
    if pattern == "cell":
        media.append(Medium("air", tuple(air), AP_BANDWIDTH_BPS, AP_LATENCY_S))
    return make_instance(times, [int(m) for m in mem], [int(c) for c in cuts[1:]], int(cuts[0]),
                         devs, links, names[0], name=f"fleet{len(names)}-{pattern}-s{seed}",
                         media=media)  # fmt: skip


def timed(
    inst: Instance, options: DPOptions, repeat: int, objective: str = "throughput"
) -> dict[str, Any]:
    times, plan = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = plan_dp(inst, objective, options)
        times.append(time.perf_counter() - t0)
    assert plan is not None
    d = plan.details
    return {
        "instance": inst.name,
        "devices": len(inst.devices),
        "pieces": inst.num_pieces,
        "objective": objective,
        "time_s": statistics.median(times),
        "times_s": times,
        "method": d.get("method"),
        "classes": d.get("classes"),
        "exact": d.get("exact"),
        "period_s": plan.predicted.period_s,
        "latency_s": plan.predicted.latency_s,
        "stages": len(plan.stages),
        "lower_bound": d.get("lower_bound", d.get("period_lower_bound_s")),
        "gap_bound": d.get("gap_bound", 0.0 if d.get("exact") else None),
        "bound_groups": d.get("bound_groups"),
    }


def show(label: str, r: dict[str, Any]) -> None:
    gap = "-" if r["gap_bound"] is None else f"{r['gap_bound']:.2%}"
    print(f"  {label:<34} {r['time_s']:7.3f} s  {r['method']:<8} exact={r['exact']!s:<5} "
          f"period {r['period_s']:.5f}  gap<= {gap}", flush=True)  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Re-planning at fleet size (dp, throughput)", "",
             f"Machine: {res['machine']}. Load average before/after: {res['load_before']} / "
             f"{res['load_after']}. Settings: {res['settings']}.", ""]  # fmt: skip
    head = ("| case | instance | time s (median) | method | classes | proven | period s | "
            "lower bound s | gap bound |")  # fmt: skip
    rule = "|---|---|---|---|---|---|---|---|---|"
    for section, title in (("fleet", "64 x 100 fleets"), ("nosym", "64 x 100, no symmetry"),
                           ("small", "16 x 100 fleets: class DP vs bitset DP")):  # fmt: skip
        lines += [f"## {title}", "", head, rule]
        for r in res[section]:
            gap = "-" if r["gap_bound"] is None else f"{r['gap_bound']:.2%}"
            lb = "-" if r["lower_bound"] is None else f"{r['lower_bound']:.5f}"
            lines.append(f"| {r['case']} | {r['instance']} | {r['time_s']:.3f} | {r['method']} | "
                         f"{r['classes']} | {r['exact']} | {r['period_s']:.5f} | {lb} | {gap} |")  # fmt: skip
        lines.append("")
    lines += ["## Summary", ""] + [f"- {s}" for s in res["summary"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--seeds", type=int, default=3, help="instances per case")
    ap.add_argument("--pieces", type=int, default=100)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    P = args.pieces
    fleet, nosym, small = [], [], []
    print("64-device fleets", flush=True)
    for pattern in ("ap", "per-class", "cell"):
        for s in range(args.seeds):
            inst = fleet_instance(s, P, FLEET_64, pattern)
            r = timed(inst, DPOptions(), args.repeat)
            r["case"] = f"{pattern}, classes"
            fleet.append(r)
            show(r["case"] + f" s{s}", r)
            r = timed(inst, DPOptions(use_classes=False), 1)
            r["case"] = f"{pattern}, classes off"
            fleet.append(r)
            show(r["case"] + f" s{s}", r)
    print("64 x 100, no symmetry", flush=True)
    for s in range(args.seeds):
        inst = random_instance(s, P, 64)
        for mode in ("cut", "search"):
            r = timed(inst, DPOptions(beyond_reach=mode), args.repeat)
            r["case"], r["instance"] = f"random, {mode}", f"{inst.name}-s{s}"
            nosym.append(r)
            show(r["case"] + f" s{s}", r)
    print("16 x 100: class vs bitset", flush=True)
    for pattern in ("ap", "per-class"):
        for s in range(args.seeds):
            inst = fleet_instance(100 + s, P, FLEET_16, pattern)
            a = timed(inst, DPOptions(), args.repeat)
            b = timed(inst, DPOptions(use_classes=False), args.repeat)
            a["case"], b["case"] = f"{pattern}, classes", f"{pattern}, bitset"
            a["equal_to_bitset"] = math.isclose(a["period_s"], b["period_s"], rel_tol=1e-9)
            small += [a, b]
            show(a["case"] + f" s{s}", a)
            show(b["case"] + f" s{s}", b)
    load_after = [round(x, 2) for x in os.getloadavg()]
    cut_rows, search_rows = nosym[0::2], nosym[1::2]
    cls = [r for r in fleet if r["case"].endswith("classes")]
    sym = [r for r in cls if not r["case"].startswith("cell")]
    pairs = list(zip(fleet[1::2], fleet[0::2], strict=True))  # (classes off, classes) per fleet
    summary = [
        f"64 x {P} fleets with classes (ap, per-class): median {statistics.median(r['time_s'] for r in sym):.3f} s, "
        f"max {max(r['time_s'] for r in sym):.3f} s; proven optimal in {sum(bool(r['exact']) for r in sym)}/{len(sym)}",
        f"64 x {P} one-cell fleets (shared medium): max {max(r['time_s'] for r in cls if r['case'].startswith('cell')):.3f} s; "
        f"proven {sum(bool(r['exact']) for r in cls if r['case'].startswith('cell'))}/{args.seeds}; "
        f"worst gap bound {max((r['gap_bound'] or 0.0) for r in cls if r['case'].startswith('cell')):.2%}",
        f"classes off on the same fleets (cut + bound), period above the class plan: up to "
        f"{max(o['period_s'] / c['period_s'] - 1 for o, c in pairs if not c['case'].startswith('cell')):.2%} (ap, per-class), "
        f"{max(o['period_s'] / c['period_s'] - 1 for o, c in pairs if c['case'].startswith('cell')):.2%} (cell)",
        f"64 x {P} no symmetry, cut (default): {min(r['time_s'] for r in cut_rows):.2f}-{max(r['time_s'] for r in cut_rows):.2f} s, "
        f"gap bound {min(r['gap_bound'] for r in cut_rows):.1%}-{max(r['gap_bound'] for r in cut_rows):.1%}; "
        f"search: {min(r['time_s'] for r in search_rows):.2f}-{max(r['time_s'] for r in search_rows):.2f} s, "
        f"gap bound {min(r['gap_bound'] for r in search_rows):.1%}-{max(r['gap_bound'] for r in search_rows):.1%}, "
        f"period {min(b['period_s'] / a['period_s'] - 1 for a, b in zip(cut_rows, search_rows, strict=True)):.1%} to "
        f"{max(b['period_s'] / a['period_s'] - 1 for a, b in zip(cut_rows, search_rows, strict=True)):.1%} vs the cut",
        f"16 x {P}: class DP {statistics.median(r['time_s'] for r in small[0::2]):.3f} s vs bitset "
        f"{statistics.median(r['time_s'] for r in small[1::2]):.3f} s (medians); equal periods in "
        f"{sum(r['equal_to_bitset'] for r in small[0::2])}/{len(small) // 2}",
    ]  # fmt: skip
    res = {
        "machine": f"{platform.machine()} python {sys.version.split()[0]}, {os.cpu_count()} shared cores",
        "settings": f"repeat={args.repeat}, seeds={args.seeds}, pieces={P}",
        "load_before": load_before,
        "load_after": load_after,
        "fleet": fleet,
        "nosym": nosym,
        "small": small,
        "summary": summary,
    }
    clean = json.dumps(
        res,
        indent=2,
        default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x,
    )
    (RESULTS / "replan_fleet.json").write_text(clean)
    (RESULTS / "replan_fleet.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
