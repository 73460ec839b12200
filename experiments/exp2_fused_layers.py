"""Experiment 2 (FL + PSOMW, S2): no fused layers (NFL) vs fused-layer tiling vs brute force.

Claim (S2): fused-layer model parallelism with PSOMW cuts inference time 12.75x vs NFL and lands
within 0.04 % of brute force (BF).

Setup: the first conv blocks of Tiny YOLOv2 (6 conv+BN+LeakyReLU with 5 max-pools, 416x416
input; DeepThings fuses YOLO's early layers the same way) and of VGG-16 (4 convs + 2 pools,
224x224). A weak source device (5 GFLOP/s) plus 2, 4 or 6 helpers of 5–20 GFLOP/s (seeded),
Wi-Fi full mesh 100 Mbit/s, 2 ms. Costs: ``coinfer.plan.fused`` (tile FLOPs with halos at each
device's speed; the source ships input tiles and gathers output tiles over each device's link).

Methods (latency of one request):
- ``NFL``: best layer-wise plan without spatial splits (exact: every device order x DP);
- ``FL``: the registry's ``fused`` planner: every grid up to 16 tiles, tiles placed by greedy LPT
  list scheduling. NOTE: S2 searches the tile placement with PSO; coinfer's fused planner uses
  LPT, so this arm is "FL + greedy", not "FL + PSO";
- ``BF``: for every grid whose assignment space is at most 2e5 (``devices ** tiles``), every
  tile -> device assignment enumerated; compared with FL restricted to the same grids.

Run: ``python experiments/exp2_fused_layers.py`` → ``results/exp2_fused.csv``, ``exp2_fused.png``.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, log, run_planner, write_csv

from coinfer.plan.fused import (
    assign_tiles,
    conv_instance,
    nfl_latency,
    specs_from_modules,
    tile_plan,
)
from coinfer.plan.instance import Link
from coinfer.report import line_plot

HELPERS = (2, 4, 6)
SEEDS = (0, 1, 2)
SOURCE_GFLOPS = 5.0
WIFI_BPS = 100 * MBIT
WIFI_LAT_S = 0.002
BF_MAX_ASSIGNMENTS = 200_000
MAX_TILES = 16


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


def tile_costs(inst, plan, devices) -> np.ndarray:
    """``c[t, d]``: seconds device ``d`` spends on tile ``t`` — fused.assign_tiles' cost formula."""
    P = inst.num_pieces
    in_area = plan.sizes[0][0] * plan.sizes[0][1]
    out_area = plan.sizes[-1][0] * plan.sizes[-1][1]
    c = np.zeros((len(plan.tiles), len(devices)))
    for j, d in enumerate(devices):
        speed = plan.untiled_flops / inst.compute_s(0, P - 1, d)
        for t, tile in enumerate(plan.tiles):
            a, r = tile.regions[0], tile.regions[-1]
            nin = inst.input_bytes * (a[1] - a[0]) * (a[3] - a[2]) / in_area
            nout = inst.output_bytes * (r[1] - r[0]) * (r[3] - r[2]) / out_area
            c[t, j] = (
                inst.transfer_s(inst.source, d, nin)
                + tile.flops / speed
                + inst.transfer_s(d, inst.source, nout)
            )
    return c


def brute_makespan(c: np.ndarray) -> float:
    """Exact min over all tile -> device assignments of max_d (sum of its tiles' costs)."""
    T, D = c.shape
    best = np.inf
    combos = np.array(list(itertools.product(range(D), repeat=T)), dtype=np.int64)
    for chunk in np.array_split(combos, max(1, len(combos) // 50_000)):
        finish = np.zeros((len(chunk), D))
        for t in range(T):
            np.add.at(finish, (np.arange(len(chunk)), chunk[:, t]), c[t, chunk[:, t]])
        best = min(best, float(finish.max(axis=1).min()))
    return best


def main() -> None:
    rows = []
    for bname, specs, hw in blocks():
        for helpers in HELPERS:
            for seed in SEEDS:
                flops, links = cluster(helpers, seed)
                inst = conv_instance(
                    specs, hw, flops, links, "src", name=f"{bname}-{helpers}-{seed}"
                )
                t0 = time.perf_counter()
                plan = run_planner(inst, "fused", "latency")
                if isinstance(plan, str):
                    rows.append({"block": bname, "helpers": helpers, "seed": seed, "note": plan})
                    continue
                fl_time = time.perf_counter() - t0
                nfl, _ = nfl_latency(inst)
                local = inst.compute_s(0, inst.num_pieces - 1, "src")
                devices = list(inst.device_names)
                bf_best, fl_same, grids = np.inf, np.inf, 0
                t0 = time.perf_counter()
                for gh in range(1, MAX_TILES + 1):
                    for gw in range(1, MAX_TILES // gh + 1):
                        if len(devices) ** (gh * gw) > BF_MAX_ASSIGNMENTS:
                            continue
                        tp = tile_plan(specs, hw, (gh, gw))
                        bf_best = min(bf_best, brute_makespan(tile_costs(inst, tp, devices)))
                        fl_same = min(fl_same, assign_tiles(inst, tp, devices).latency_s)
                        grids += 1
                bf_time = time.perf_counter() - t0
                fused = plan.details["fused"]
                rows.append(
                    {
                        "block": bname,
                        "helpers": helpers,
                        "seed": seed,
                        "local_latency_s": local,
                        "nfl_latency_s": nfl,
                        "fl_latency_s": fused["latency_s"],
                        "fl_grid": "x".join(map(str, fused["grid"])),
                        "fl_redundancy_pct": 100 * fused["redundancy"],
                        "fl_planning_s": fl_time,
                        "bf_grids": grids,
                        "bf_latency_s": bf_best,
                        "fl_same_grids_latency_s": fl_same,
                        "fl_vs_bf_gap_pct": 100 * (fl_same / bf_best - 1),
                        "bf_time_s": bf_time,
                        "speedup_fl_vs_nfl": nfl / fused["latency_s"],
                        "speedup_fl_vs_local": local / fused["latency_s"],
                    }
                )
            log(f"{bname}, {helpers} helpers: done")
    write_csv(RESULTS / "exp2_fused.csv", rows)
    ok = [r for r in rows if "fl_latency_s" in r]
    if not ok:
        log("NOTE: the fused planner is unavailable; nothing to plot")
        return
    panels = {}
    for bname in dict.fromkeys(r["block"] for r in ok):
        sel = [r for r in ok if r["block"] == bname]
        labels = {
            "local": "local (source only)",
            "nfl": "NFL (layer-wise, exact)",
            "fl": "FL (fused planner, <= 16 tiles)",
            "fl_same_grids": "FL on BF's grids",
            "bf": "BF (grids <= 2e5 assignments)",
        }
        panels[bname] = {
            lab: [
                (h, float(np.mean([r[f"{m}_latency_s"] for r in sel if r["helpers"] == h])))
                for h in HELPERS
            ]
            for m, lab in labels.items()
        }
    line_plot({}, RESULTS / "exp2_fused.png", panels=panels, title="Fused-layer tiling vs no fused layers (mean of 3 seeds)",
              xlabel="helper devices", ylabel="latency (s)", integer_x=True)  # fmt: skip
    for bname in panels:
        sel = [r for r in ok if r["block"] == bname]
        log(f"{bname}: FL vs NFL speed-up {min(r['speedup_fl_vs_nfl'] for r in sel):.2f}x .. "
            f"{max(r['speedup_fl_vs_nfl'] for r in sel):.2f}x; vs local {max(r['speedup_fl_vs_local'] for r in sel):.2f}x max; "
            f"FL vs BF (same grids) gap mean {np.mean([r['fl_vs_bf_gap_pct'] for r in sel]):.3f} %, "
            f"worst {max(r['fl_vs_bf_gap_pct'] for r in sel):.3f} %")  # fmt: skip


if __name__ == "__main__":
    main()
