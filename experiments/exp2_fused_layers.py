"""Experiment 2 (FL + PSOMW, S2): NFL vs fused tiling with greedy / PSOMW placement vs brute force.

Claim (S2): fused-layer model parallelism with PSOMW cuts inference time 12.75x vs NFL and lands
within 0.04 % of brute force (BF).

Setup: the first conv blocks of Tiny YOLOv2 (6 conv+BN+LeakyReLU with 5 max-pools, 416x416
input; DeepThings fuses YOLO's early layers the same way) and of VGG-16 (4 convs + 2 pools,
224x224). A weak source device (5 GFLOP/s) plus 2, 4 or 6 helpers of 5–20 GFLOP/s (seeded),
Wi-Fi full mesh 100 Mbit/s, 2 ms. Costs: ``coinfer.plan.fused.planner`` / ``fused_pso`` (tile FLOPs with
halos at each device's speed) under two link models:

- ``serial``: each device receives, computes, returns its tiles one after another; links to
  different devices do not contend (the reference model's per-link view). Order is irrelevant.
- ``pipelined``: the source has one radio and ships tiles one at a time in a chosen order;
  devices compute a tile while the next one arrives. Order matters (S2's "path scheduling").

Methods (latency of one request):
- ``NFL``: best layer-wise plan without spatial splits (exact: every device order x DP);
- ``FL+greedy``: the ``fused`` planner with ``search="greedy"``: every depth x grid up to 16
  tiles, LPT placement, shipped largest tile first;
- ``FL+PSOMW``: the ``fused`` planner with ``search="pso"`` (default; 30 particles x 60
  iterations, seeded with greedy's solutions of the 12 best candidates);
- ``BF``: on the whole block (no depth choice), for every grid whose search space is at most 2e5
  (``devices ** tiles``, times ``tiles!`` orders when pipelined), every assignment (and order)
  enumerated; compared with greedy and PSOMW restricted to the same grids.

Run: ``python experiments/exp2_fused_layers.py`` → ``results/exp2_fused.csv``, ``exp2_fused.png``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, log, run_planner, write_csv

from coinfer.core.instance import Link
from coinfer.core.tiles import tile_plan
from coinfer.graph.tiled import specs_from_modules
from coinfer.plan.fused.placement import (
    Solution,
    bf_size,
    brute_force,
    lpt_order,
    psomw_tiles,
    schedule_latency,
    tile_costs,
)
from coinfer.plan.fused.planner import _greedy_costs, conv_instance, nfl_latency
from coinfer.report import line_plot

HELPERS = (2, 4, 6)  # helper devices next to the source
SEEDS = (0, 1, 2)  # cluster seeds (helper speeds) and PSOMW seeds
SOURCE_GFLOPS = 5.0  # a phone-class source
WIFI_BPS = 100 * MBIT  # 802.11n-class effective throughput
WIFI_LAT_S = 0.002  # per-transfer latency on the Wi-Fi mesh
BF_MAX_ASSIGNMENTS = 200_000  # brute-force budget per grid (assignments x orders), ~1 s
MAX_TILES = 16  # grids of at most 16 tiles (DeepThings uses up to 5x5; S2 similar sizes)
MODELS = ("serial", "pipelined")  # link models of coinfer.plan.fused.placement


def blocks():
    """(name, layer specs, input hw) of the fused blocks."""
    import torch
    from torch import nn

    from coinfer.zoo import load_model

    torch.manual_seed(0)
    out = []
    yolo, _ = load_model("tiny_yolov2")
    mods: list[nn.Module] = []
    for m in list(yolo.children())[:11]:
        mods += list(m.children()) if isinstance(m, nn.Sequential) else [m]
    out.append(("tiny_yolov2[0:11]", specs_from_modules([m.eval() for m in mods], 3), (416, 416)))
    vgg, _ = load_model("vgg16")
    feats = list(next(iter(vgg.children())).children())[:10]
    out.append(
        ("vgg16.features[0:10]", specs_from_modules([m.eval() for m in feats], 3), (224, 224))
    )
    return out


def cluster(helpers: int, seed: int):
    rng = np.random.default_rng(seed)
    flops = {"src": SOURCE_GFLOPS * 1e9}
    for i in range(helpers):
        flops[f"h{i}"] = float(rng.uniform(5, 20)) * 1e9
    names = list(flops)
    links = [Link(u, v, WIFI_BPS, WIFI_LAT_S) for u in names for v in names if u != v]
    return flops, links


def same_grids(inst, specs, hw, model: str, seed: int) -> dict[str, float]:
    """BF, greedy and PSOMW over the grids small enough for brute force (whole block)."""
    devices = list(inst.device_names)
    cands, greedy, bf_best = [], [], np.inf
    t0 = time.perf_counter()
    for gh in range(1, MAX_TILES + 1):
        for gw in range(1, MAX_TILES // gh + 1):
            T = gh * gw
            size = len(devices) ** T * (math.factorial(T) if model == "pipelined" else 1)
            if size > BF_MAX_ASSIGNMENTS:
                continue
            tp = tile_plan(specs, hw, (gh, gw))
            costs = tile_costs(inst, tp, devices)
            assert bf_size(costs, model) == size
            bf_best = min(bf_best, brute_force(costs, model, BF_MAX_ASSIGNMENTS)[0])
            a = _greedy_costs(costs, [t.flops for t in tp.tiles], inst.source)
            o = lpt_order(costs, a)
            greedy.append(Solution(len(cands), a, o, schedule_latency(costs, a, o, model)[0]))
            cands.append(costs)
    bf_time = time.perf_counter() - t0
    pso, _ = psomw_tiles(cands, [0.0] * len(cands), model, np.random.default_rng(seed), init=greedy)
    # ablations: local search from the greedy seeds without the swarm (0 iterations), and the
    # swarm without seeds or local search
    ls, _ = psomw_tiles(cands, [0.0] * len(cands), model, np.random.default_rng(seed), init=greedy,
                  iterations=0)  # fmt: skip
    raw, _ = psomw_tiles(
        cands, [0.0] * len(cands), model, np.random.default_rng(seed), polish=False
    )
    g = min(s.latency_s for s in greedy)
    return {
        "bf_grids": len(cands),
        "bf_latency_s": bf_best,
        "bf_time_s": bf_time,
        "greedy_same_grids_latency_s": g,
        "pso_same_grids_latency_s": pso.latency_s,
        "greedy_vs_bf_gap_pct": 100 * (g / bf_best - 1),
        "pso_vs_bf_gap_pct": 100 * (pso.latency_s / bf_best - 1),
        "localsearch_only_vs_bf_gap_pct": 100 * (ls.latency_s / bf_best - 1),
        "swarm_only_vs_bf_gap_pct": 100 * (raw.latency_s / bf_best - 1),
    }


LABELS = {
    "local": "local (source only)",
    "nfl": "NFL (layer-wise, exact)",
    "greedy": "FL + greedy (<= 16 tiles)",
    "pso": "FL + PSOMW (<= 16 tiles)",
    "bf": "BF (small grids only)",
}


def main() -> None:
    rows = []
    for bname, specs, hw in blocks():
        for helpers in HELPERS:
            for seed in SEEDS:
                flops, links = cluster(helpers, seed)
                inst = conv_instance(
                    specs, hw, flops, links, "src", name=f"{bname}-{helpers}-{seed}"
                )
                nfl, _ = nfl_latency(inst)
                local = inst.compute_s(0, inst.num_pieces - 1, "src")
                for model in MODELS:
                    row = {"block": bname, "helpers": helpers, "seed": seed, "link_model": model}
                    plans = {}
                    for search in ("greedy", "pso"):
                        t0 = time.perf_counter()
                        plans[search] = run_planner(
                            inst, "fused", "latency", search=search, link_model=model, seed=seed
                        )
                        row[f"{search}_planning_s"] = time.perf_counter() - t0
                    if any(isinstance(p, str) for p in plans.values()):
                        rows.append(
                            row | {"note": next(p for p in plans.values() if isinstance(p, str))}
                        )
                        continue
                    g, p = plans["greedy"].details["fused"], plans["pso"].details["fused"]
                    row |= {
                        "local_latency_s": local,
                        "nfl_latency_s": nfl,
                        "greedy_latency_s": g["latency_s"],
                        "greedy_grid": "x".join(map(str, g["grid"])),
                        "greedy_depth": g["depth"],
                        "pso_latency_s": p["latency_s"],
                        "pso_grid": "x".join(map(str, p["grid"])),
                        "pso_depth": p["depth"],
                        "pso_redundancy_pct": 100 * p["redundancy"],
                        "pso_vs_greedy_pct": 100 * (1 - p["latency_s"] / g["latency_s"]),
                        **same_grids(inst, specs, hw, model, seed),
                        "speedup_greedy_vs_nfl": nfl / g["latency_s"],
                        "speedup_pso_vs_nfl": nfl / p["latency_s"],
                        "speedup_pso_vs_local": local / p["latency_s"],
                    }
                    rows.append(row)
            log(f"{bname}, {helpers} helpers: done")
    write_csv(RESULTS / "exp2_fused.csv", rows)
    ok = [r for r in rows if "pso_latency_s" in r]
    if not ok:
        log("NOTE: the fused planner is unavailable; nothing to plot")
        return
    panels = {}
    for bname in dict.fromkeys(r["block"] for r in ok):
        for model in MODELS:
            sel = [r for r in ok if r["block"] == bname and r["link_model"] == model]
            panels[f"{bname}, {model} links"] = {
                lab: [
                    (h, float(np.mean([r[f"{m}_latency_s"] for r in sel if r["helpers"] == h])))
                    for h in HELPERS
                ]
                for m, lab in LABELS.items()
            }
    line_plot({}, RESULTS / "exp2_fused.png", panels=panels, title="Fused-layer tiling vs no fused layers (mean of 3 seeds)",
              xlabel="helper devices", ylabel="latency (s)", integer_x=True)  # fmt: skip
    for bname in dict.fromkeys(r["block"] for r in ok):
        for model in MODELS:
            sel = [r for r in ok if r["block"] == bname and r["link_model"] == model]
            log(f"{bname} [{model}]: PSOMW vs NFL {min(r['speedup_pso_vs_nfl'] for r in sel):.2f}x .. "
                f"{max(r['speedup_pso_vs_nfl'] for r in sel):.2f}x (greedy {min(r['speedup_greedy_vs_nfl'] for r in sel):.2f}x .. "
                f"{max(r['speedup_greedy_vs_nfl'] for r in sel):.2f}x); PSOMW better than greedy by "
                f"{np.mean([r['pso_vs_greedy_pct'] for r in sel]):.2f} % mean, {max(r['pso_vs_greedy_pct'] for r in sel):.2f} % max; "
                f"vs BF (same grids): PSOMW mean {np.mean([r['pso_vs_bf_gap_pct'] for r in sel]):.3f} % worst "
                f"{max(r['pso_vs_bf_gap_pct'] for r in sel):.3f} %, greedy mean {np.mean([r['greedy_vs_bf_gap_pct'] for r in sel]):.3f} % "
                f"worst {max(r['greedy_vs_bf_gap_pct'] for r in sel):.3f} %; ablations vs BF mean: local search only "
                f"{np.mean([r['localsearch_only_vs_bf_gap_pct'] for r in sel]):.3f} %, swarm only "
                f"{np.mean([r['swarm_only_vs_bf_gap_pct'] for r in sel]):.3f} %")  # fmt: skip


if __name__ == "__main__":
    main()
