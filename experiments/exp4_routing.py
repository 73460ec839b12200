"""Experiment 4 (layered-graph routing, S11): routing vs splitting over direct links only.

Claim (S11): the layered graph adapts nodes AND paths to each job, and solves much faster than
the earlier formulation.

Setup: random multi-hop edge networks of N = 5..50 nodes (seeded): nodes uniform in the unit
square, links between nodes closer than a radius (plus nearest-neighbour links so the network is
connected), bandwidth falling with distance (10–100 Mbit/s), 2–10 ms latency; node speeds
log-uniform in 5–100 GFLOP/s with the source (node 0) a weak 5 GFLOP/s device. Model:
ResNet-50 (analytic costs, 16 pieces). Latency objective.

Methods:
- ``route``: layered-graph shortest path — devices per piece + multi-hop data paths, revisits
  allowed (``coinfer.plan.graph.route``);
- ``direct``: splitting with direct links only — run a prefix on the source, offload the rest to
  ONE directly connected node over that direct link (Neurosurgeon-style), best neighbour and cut;
- ``local``: everything on the source;
- ``dp``: the exact pipeline DP (multi-hop transfers allowed, one stage per device, no revisits)
  for N <= 10 (its exact search grows with 2^N).
Single-request latencies of the route plans are confirmed by the simulator (1 request).

Job load: on a 20-node network, 1..16 jobs from random sources share devices and links
(processor sharing: a resource used by n jobs is n times slower). ``route_jobs`` routes them
in sequence on load-inflated costs; compared with routing each job as if alone.

Run: ``python experiments/exp4_routing.py`` → ``results/exp4_routing.csv``, ``exp4_jobs.csv``,
``exp4_routing.png``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, log, model_instance, run_planner, simulated, write_csv

from coinfer.core.instance import Instance, Link
from coinfer.plan.graph.route import route_jobs
from coinfer.report import line_plot

MODEL = "resnet50"
PIECES = 16
SIZES = (5, 8, 10, 15, 20, 30, 40, 50)
SEEDS = (0, 1, 2)
RADIUS = 0.35  # unit-square radius under which two nodes share a link
DP_MAX_NODES = 10


def network(n: int, seed: int) -> tuple[dict[str, float], list[Link]]:
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 1, (n, 2))
    names = [f"n{i}" for i in range(n)]
    gflops = {d: float(math.exp(rng.uniform(math.log(5), math.log(100)))) for d in names}
    gflops["n0"] = 5.0
    pairs = set()
    for i in range(n):
        dist = np.linalg.norm(pos - pos[i], axis=1)
        order = np.argsort(dist)
        for j in order[1:]:
            if dist[j] <= RADIUS:
                pairs.add((min(i, j), max(i, j)))
        pairs.add((min(i, order[1]), max(i, order[1])))  # at least the nearest neighbour
    _connect(n, pairs, pos)
    links = []
    for i, j in sorted(pairs):
        d = float(np.linalg.norm(pos[i] - pos[j]))
        bw = (100 - 90 * min(d / 1.0, 1.0)) * MBIT
        lat = 0.002 + 0.008 * min(d, 1.0)
        links += [Link(names[i], names[j], bw, lat), Link(names[j], names[i], bw, lat)]
    return gflops, links


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _connect(n: int, pairs: set, pos) -> None:
    """Join components by their closest node pair until the network is connected."""
    while True:
        parent = list(range(n))
        for i, j in pairs:
            parent[_find(parent, i)] = _find(parent, j)
        root = _find(parent, 0)
        a = [i for i in range(n) if _find(parent, i) == root]
        b = [i for i in range(n) if _find(parent, i) != root]
        if not b:
            return
        i, j = min(
            ((i, j) for i in a for j in b), key=lambda p: np.linalg.norm(pos[p[0]] - pos[p[1]])
        )
        pairs.add((min(i, j), max(i, j)))


def direct_split(inst: Instance) -> tuple[float, str, int]:
    """Best (latency, neighbour, cut) offloading a suffix to one direct neighbour over direct links."""
    src, P = inst.source, inst.num_pieces
    best = (inst.compute_s(0, P - 1, src), src, P)
    for (u, v), up in inst.link_by_pair.items():
        if u != src or (v, u) not in inst.link_by_pair:
            continue
        down = inst.link_by_pair[(v, u)]
        for k in range(P):  # pieces 0..k-1 on the source, k..P-1 on v
            lat = (inst.compute_s(0, k - 1, src) if k else 0.0) + up.transfer_s(inst.cut_bytes(k))
            lat += inst.compute_s(k, P - 1, v) + down.transfer_s(inst.output_bytes)
            if lat < best[0]:
                best = (lat, v, k)
    return best


def main() -> None:
    rows = []
    for n in SIZES:
        for seed in SEEDS:
            gflops, links = network(n, seed)
            inst = model_instance(
                MODEL, gflops, links, "n0", max_pieces=PIECES, name=f"net{n}-{seed}"
            )
            row = {"nodes": n, "seed": seed, "links": len(links)}
            row["local_latency_s"] = inst.compute_s(0, inst.num_pieces - 1, "n0")
            t0 = time.perf_counter()
            row["direct_latency_s"], row["direct_server"], _ = direct_split(inst)
            row["direct_planning_s"] = time.perf_counter() - t0
            plan = run_planner(inst, "route", "latency")
            if isinstance(plan, str):
                row["note"] = f"route: {plan}"
            else:
                row["route_latency_s"] = plan.predicted.latency_s
                row["route_planning_s"] = plan.planning_time_s
                row["route_devices"] = len(set(plan.devices))
                row["route_multihop_tensors"] = sum(1 for p in plan.details["paths"] if len(p) > 2)
                row["route_sim_latency_s"] = simulated(plan, inst, requests=1).latency_s[0]
            if n <= DP_MAX_NODES:
                dp = run_planner(inst, "dp", "latency")
                if not isinstance(dp, str):
                    row["dp_latency_s"] = dp.predicted.latency_s
                    row["dp_planning_s"] = dp.planning_time_s
            rows.append(row)
        log(f"N={n}: done")
    write_csv(RESULTS / "exp4_routing.csv", rows)

    jobs_rows = []
    gflops, links = network(20, 7)
    inst = model_instance(MODEL, gflops, links, "n0", max_pieces=PIECES, name="net20-jobs")
    rng = np.random.default_rng(7)
    for k in (1, 2, 4, 8, 12, 16):
        sources = [str(s) for s in rng.choice(inst.device_names, size=k, replace=True)]
        t0 = time.perf_counter()
        res = route_jobs(inst, sources)
        jobs_rows.append(
            {
                "jobs": k,
                "load_aware_mean_latency_s": res.mean_s,
                "independent_mean_latency_s": res.independent_mean_s,
                "gain": res.independent_mean_s / res.mean_s,
                "planning_s": time.perf_counter() - t0,
                "busiest_jobs": res.details["busiest_jobs"],
            }
        )
    write_csv(RESULTS / "exp4_jobs.csv", jobs_rows)

    def mean_by(key: str) -> list[tuple[float, float]]:
        out = []
        for n in SIZES:
            vals = [r[key] for r in rows if r["nodes"] == n and key in r]
            if vals:
                out.append((n, float(np.mean(vals))))
        return out

    panels = {
        "latency vs network size (mean of 3 seeds)": {
            m: mean_by(f"{m}_latency_s") for m in ("local", "direct", "dp", "route")
        },
        "planning time (s)": {m: mean_by(f"{m}_planning_s") for m in ("direct", "dp", "route")},
        "job load (20 nodes): mean latency": {
            "route, load-aware": [(r["jobs"], r["load_aware_mean_latency_s"]) for r in jobs_rows],
            "route, each alone": [(r["jobs"], r["independent_mean_latency_s"]) for r in jobs_rows],
        },
    }
    line_plot({}, RESULTS / "exp4_routing.png", panels=panels, title="Layered-graph routing vs direct-link splitting",
              xlabel="nodes / jobs", ylabel="seconds", logy=False)  # fmt: skip
    for n in SIZES:
        sel = [r for r in rows if r["nodes"] == n and "route_latency_s" in r]
        gain = np.mean([r["direct_latency_s"] / r["route_latency_s"] for r in sel])
        log(f"N={n}: route {gain:.2f}x lower latency than direct-link splitting (mean)")


if __name__ == "__main__":
    main()
