"""Benchmark of the advanced planners (mincut/CIC, route, pso, bayes, fused).

Measures, and writes to ``benchmarks/results/adv_planners.{json,md}``:

1. CIC decision time vs a fresh DADS min-cut on the largest zoo DAGs (ResNet-50, BERT-base,
   GPT-2 captured by ``coinfer.graph.capture``; synthetic DAGs of the same size if capture is
   unavailable), median over many bandwidths, and that both give the same cut value;
2. layered-graph routing time on a 50-node network (sparse and dense links) and multi-job
   routing under shared load vs independent routing;
3. PSO gaps vs brute force (mean/worst) on random instances (<= 12 pieces, <= 4 devices);
4. Bayesian optimisation gaps and evaluations-to-within-1 % vs random search and exhaustive
   measurement, averaged over seeds;
5. fused-layer tiling vs the best layer-wise plan (NFL) on VGG-16's first blocks.

Run: ``.venv/bin/python benchmarks/bench_adv_planners.py [--quick]``. The shared CPU makes
absolute times noisy; ratios (speed-ups) and gaps are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from coinfer.core.instance import Link
from coinfer.core.tiles import LayerSpec
from coinfer.plan._shared import exhaustive_best
from coinfer.plan.chain.brute import plan_brute
from coinfer.plan.fused.planner import conv_instance, plan_fused
from coinfer.plan.graph.cic import compress
from coinfer.plan.graph.mincut import dads_cut, dag_from_graph
from coinfer.plan.graph.route import plan_route, route_jobs
from coinfer.plan.search.bayes import (
    BayesOptions,
    evals_to_within,
    exhaustive_measured,
    plan_bayes,
    random_search_trace,
)
from coinfer.plan.search.pso import PSOOptions, plan_pso
from coinfer.testing import random_adv_instance

OUT = Path(__file__).resolve().parent / "results"
# Device/server speeds for the DAG node times: a phone-class CPU (5 GFLOP/s sustained) and a
# small edge server (25 GFLOP/s, 5x: the regime where splitting pays); every node also pays a
# fixed dispatch overhead (50 us / 10 us),
# which is what makes tiny element-wise nodes non-free.
DEVICE_FLOPS, SERVER_FLOPS = 5e9, 25e9
DEVICE_OVERHEAD_S, SERVER_OVERHEAD_S = 50e-6, 10e-6
LINK_LATENCY_S = 2e-3  # one-way latency of the device-server link (Wi-Fi class)


def _timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----- 1. CIC vs min-cut ---------------------------------------------------------------------------


def zoo_dag(name: str) -> tuple[nx.DiGraph, str]:
    """A zoo model's captured DAG with per-node times, or a synthetic one of similar size."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == "synthetic_bottleneck":
        return bottleneck_dag(500), "synthetic"
    try:
        import torch

        from coinfer.graph import capture
        from coinfer.zoo import load_model

        torch.set_num_threads(1)
        model, example = load_model(name)
        mg = capture(model, example, name=name)
        g = mg.to_networkx()
        times = {
            v: {
                "dev": a.get("flops", 0) / DEVICE_FLOPS + DEVICE_OVERHEAD_S,
                "srv": a.get("flops", 0) / SERVER_FLOPS + SERVER_OVERHEAD_S,
            }
            for v, a in g.nodes(data=True)
        }
        return dag_from_graph(g, times, input_bytes=mg.input_bytes), "captured"
    except Exception as exc:  # benchmark fallback: keep going with a synthetic DAG
        n = {"resnet50": 176, "bert_base": 312, "gpt2": 534}.get(name, 300)
        rng = np.random.default_rng(n)
        g = nx.DiGraph()
        for v in range(n):
            fl = float(rng.uniform(1e6, 5e8))
            g.add_node(
                v,
                time_s={
                    "dev": fl / DEVICE_FLOPS + DEVICE_OVERHEAD_S,
                    "srv": fl / SERVER_FLOPS + SERVER_OVERHEAD_S,
                },
                out_bytes=int(rng.integers(10_000, 3_000_000)),
            )
            if v:
                g.add_edge(v - 1, v)
                if v > 3 and rng.random() < 0.2:
                    g.add_edge(int(rng.integers(max(0, v - 8), v - 1)), v)
        g.graph["input_bytes"] = 602_112
        return g, f"synthetic ({type(exc).__name__})"


def bottleneck_dag(n: int) -> nx.DiGraph:
    """A 500-node DAG whose tensors shrink with depth (a camera-frame CNN: a 6 MB raw 1080p
    input, feature maps decaying ~e^-5 over the depth, skip edges): here intermediate splits
    beat both extremes for some bandwidths, so the envelope has more than two candidates."""
    rng = np.random.default_rng(n)
    g = nx.DiGraph()
    for v in range(n):
        fl = float(rng.uniform(1e6, 2e8))
        g.add_node(
            v,
            time_s={
                "dev": fl / DEVICE_FLOPS + DEVICE_OVERHEAD_S,
                "srv": fl / SERVER_FLOPS + SERVER_OVERHEAD_S,
            },
            out_bytes=int(6e6 * math.exp(-5.0 * v / n) * rng.uniform(0.5, 1.5)),
        )
        if v:
            g.add_edge(v - 1, v)
            if v > 3 and rng.random() < 0.2:
                g.add_edge(int(rng.integers(max(0, v - 8), v - 1)), v)
    g.graph["input_bytes"] = 6_220_800  # 1920 x 1080 x 3 bytes
    return g


def bench_cic(models: list[str], decisions: int, mincuts: int) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for name in models:
        dag, origin = zoo_dag(name)
        t0 = time.perf_counter()
        model = compress(dag, "dev", "srv", LINK_LATENCY_S)
        offline = time.perf_counter() - t0
        # bandwidths log-uniform over 100 kB/s .. 1 GB/s (weak radio to wired LAN)
        bws = np.exp(rng.uniform(math.log(1e5), math.log(1e9), decisions))
        t_decide = [_timeit(lambda b=b, m=model: m.decide(float(b)), 3) for b in bws]
        t_cut, worst_rel = [], 0.0
        for b in bws[:mincuts]:
            bw = float(b)

            def link(x: float, bw: float = bw) -> float:
                return LINK_LATENCY_S + x / bw

            t0 = time.perf_counter()
            ref = dads_cut(dag, "dev", "srv", link)
            t_cut.append(time.perf_counter() - t0)
            _, v = model.decide(bw)
            worst_rel = max(worst_rel, abs(v - ref.value_s) / ref.value_s)
        med_d, med_c = statistics.median(t_decide), statistics.median(t_cut)
        rows.append(
            {
                "model": name,
                "dag": origin,
                "nodes": dag.number_of_nodes(),
                "edges": dag.number_of_edges(),
                "candidates": len(model.candidates),
                "mincut_calls_offline": model.mincut_calls,
                "offline_s": offline,
                "decide_median_s": med_d,
                "mincut_median_s": med_c,
                "speedup": med_c / med_d,
                "decisions": len(bws),
                "mincuts_compared": len(t_cut),
                "worst_rel_value_diff": worst_rel,
                "candidate_splits": [
                    {"device_nodes": len(c.device_nodes), "bytes_moved": c.bytes_moved}
                    for c in model.candidates
                ],
                "breakpoints_Bps": list(model.breakpoints_Bps),
            }
        )
        print(
            f"  CIC {name}: {rows[-1]['nodes']} nodes, {rows[-1]['candidates']} candidates, speed-up {rows[-1]['speedup']:.0f}x"
        )
    return rows


# ----- 2. routing ------------------------------------------------------------------------------------


def bench_route(repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, sparse in (("sparse", True), ("dense", False)):
        inst = random_adv_instance(50, 30, 50, sparse_links=sparse)
        t = _timeit(lambda inst=inst: plan_route(inst), repeat)
        p = plan_route(inst)
        out[label] = {
            "devices": 50,
            "links": len(inst.links),
            "pieces": inst.num_pieces,
            "median_s": t,
            "stages": len(p.stages),
            "latency_s": p.predicted.latency_s,
            "multi_hop_transfers": sum(1 for path in p.details["paths"] if len(path) > 2),
        }
        print(f"  route 50 nodes ({label}, {len(inst.links)} links): {t * 1e3:.1f} ms")
    inst = random_adv_instance(51, 12, 8)
    sources = [inst.device_names[i % 3] for i in range(12)]
    t0 = time.perf_counter()
    res = route_jobs(inst, sources)
    out["jobs"] = {
        "jobs": len(sources),
        "devices": 8,
        "load_aware_mean_s": res.mean_s,
        "independent_mean_s": res.independent_mean_s,
        "improvement": res.independent_mean_s / res.mean_s,
        "time_s": time.perf_counter() - t0,
    }
    print(
        f"  route_jobs: mean {res.mean_s * 1e3:.1f} ms vs independent {res.independent_mean_s * 1e3:.1f} ms"
    )
    return out


# ----- 3. PSO ---------------------------------------------------------------------------------------


def bench_pso(instances: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cases = []
    for i in range(instances):
        P, D = 6 + i % 7, 2 + i % 3
        cases.append(
            random_adv_instance(1000 + i, P, D, tight_memory=i % 2 == 0, sparse_links=i % 3 == 0)
        )
    for objective in ("latency", "throughput"):
        opt = [plan_brute(c, objective).predicted.value(objective) for c in cases]
        # (variant, local-search polish): the default, each swarm alone, and PSOMW + polish
        for variant, polish in (("hybrid", True), ("s4", False), ("psomw", False), ("psomw", True)):
            gaps, times = [], []
            for i, c in enumerate(cases):
                opts = PSOOptions(seed=i, variant=variant, polish=polish)  # type: ignore[arg-type]
                p = plan_pso(c, objective, opts)
                gaps.append(p.predicted.value(objective) / opt[i] - 1.0)
                times.append(p.planning_time_s)
            label = f"{objective}/{variant}" + ("+polish" if polish and variant != "hybrid" else "")
            out[label] = {
                "instances": len(cases),
                "mean_gap": float(np.mean(gaps)),
                "worst_gap": float(np.max(gaps)),
                "optimal_share": float(np.mean([g < 1e-9 for g in gaps])),
                "median_time_s": statistics.median(times),
            }
            print(f"  pso {label}: mean gap {np.mean(gaps):.4%}, worst {np.max(gaps):.4%}")
    return out


# ----- 4. Bayesian optimisation ------------------------------------------------------------------------


def bench_bayes(instances: int, budget: int, noise: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    objective = "throughput"
    cases = [random_adv_instance(2000 + i, 6, 3, tight_memory=i % 2 == 0) for i in range(instances)]
    optimum = [exhaustive_best(c, objective)[0] for c in cases]
    for prior in ("model", "none"):
        gaps, e2, times = [], [], []
        for i, c in enumerate(cases):
            p = plan_bayes(
                c, objective, BayesOptions(seed=i, budget=budget, noise=noise, prior=prior)
            )  # type: ignore[arg-type]
            gaps.append(p.predicted.value(objective) / optimum[i] - 1.0)
            e2.append(evals_to_within(p.details["trace"], optimum[i]))
            times.append(p.planning_time_s)
        out[f"bo/{prior}"] = _bo_row(gaps, e2, budget) | {"median_time_s": statistics.median(times)}
        print(
            f"  bayes prior={prior}: mean gap {np.mean(gaps):.3%}, reached 1% in {out[f'bo/{prior}']['reached']}/{len(cases)}"
        )
    gaps, e2 = [], []
    for i, c in enumerate(cases):
        tr = random_search_trace(c, objective, budget, noise, seed=i)
        gaps.append(tr[-1] / optimum[i] - 1.0)
        e2.append(evals_to_within(tr, optimum[i]))
    out["random"] = _bo_row(gaps, e2, budget)
    gaps, n_ex = [], []
    for i, c in enumerate(cases):
        n, v = exhaustive_measured(c, objective, noise, seed=i)
        gaps.append(v / optimum[i] - 1.0)
        n_ex.append(n)
    out["exhaustive"] = {
        "mean_gap": float(np.mean(gaps)),
        "worst_gap": float(np.max(gaps)),
        "evaluations": float(np.mean(n_ex)),
        "within_1pct_share": float(np.mean([g <= 0.01 for g in gaps])),
    }
    out["setup"] = {
        "instances": instances,
        "pieces": 6,
        "devices": 3,
        "budget": budget,
        "noise": noise,
        "objective": objective,
    }
    return out


def _bo_row(gaps: list[float], e2: list[int | None], budget: int) -> dict[str, Any]:
    reached = [e for e in e2 if e is not None]
    return {
        "mean_gap": float(np.mean(gaps)),
        "worst_gap": float(np.max(gaps)),
        "reached": len(reached),
        "mean_evals_to_1pct": float(np.mean(reached)) if reached else None,
        "budget": budget,
    }


# ----- 5. fused tiling ---------------------------------------------------------------------------------


def vgg16_head() -> list[LayerSpec]:
    """VGG-16 conv1_1 .. pool2 (the two first blocks), ReLUs as element-wise layers."""

    def conv(ci: int, co: int) -> LayerSpec:
        return LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), ci, co)

    def relu(c: int) -> LayerSpec:
        return LayerSpec("pointwise", in_ch=c, out_ch=c)

    def pool(c: int) -> LayerSpec:
        return LayerSpec("maxpool", (2, 2), (2, 2), in_ch=c, out_ch=c)

    return [
        conv(3, 64),
        relu(64),
        conv(64, 64),
        relu(64),
        pool(64),
        conv(64, 128),
        relu(128),
        conv(128, 128),
        relu(128),
        pool(128),
    ]


def vgg16_features() -> list[LayerSpec]:
    """All 13 convolutions of VGG-16 with their ReLUs and 5 max-pools (31 layers)."""
    out: list[LayerSpec] = []
    ch = 3
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            out.append(LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), ch, width))
            out.append(LayerSpec("pointwise", in_ch=width, out_ch=width))
            ch = width
        out.append(LayerSpec("maxpool", (2, 2), (2, 2), in_ch=ch, out_ch=ch))
    return out


def bench_fused() -> list[dict[str, Any]]:
    rows = []
    # A phone (source, 5 GFLOP/s) and 1-4 edge helpers of 20 GFLOP/s on 50 MB/s, 1 ms links;
    # the head (2 blocks) and the whole VGG-16 feature extractor, where the depth choice matters.
    for block, spec, helpers in [("head", vgg16_head(), h) for h in (1, 2, 4)] + [
        ("features", vgg16_features(), 4)
    ]:
        flops = {"phone": 5e9, **{f"edge{i}": 20e9 for i in range(helpers)}}
        links = [Link(a, b, 50e6, 1e-3) for a in flops for b in flops if a != b]
        inst = conv_instance(
            spec, (224, 224), flops, links, "phone", name=f"vgg16-{block}+{helpers}"
        )
        p = plan_fused(inst)
        f = p.details["fused"]
        rows.append(
            {
                "block": block,
                "helpers": helpers,
                "fused_latency_s": f["latency_s"],
                "nfl_latency_s": p.details["nfl_latency_s"],
                "speedup_vs_nfl": p.details["speedup_vs_nfl"],
                "grid": f["grid"],
                "depth": f["depth"],
                "pieces": inst.num_pieces,
                "fused_used": f["used"],
                "devices_used": len(set(f["assignment"])),
                "redundancy": f["redundancy"],
                "planning_time_s": p.planning_time_s,
            }
        )
        print(
            f"  fused {block} +{helpers} helpers: {f['latency_s'] * 1e3:.1f} ms vs NFL {p.details['nfl_latency_s'] * 1e3:.1f} ms"
        )
    return rows


# ----- report ------------------------------------------------------------------------------------------


def write_md(res: dict[str, Any], path: Path) -> None:
    L = [
        "# Advanced planners benchmark",
        "",
        f"Host: {res['host']}; settings: {res['settings']}.",
        "",
    ]
    L += ["## CIC decision time vs plain DADS min-cut", "",
          "| model | DAG | nodes | candidates | offline | decide (median) | min-cut (median) | speed-up | worst value diff |",
          "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["cic"]:
        L.append(
            f"| {r['model']} | {r['dag']} | {r['nodes']} | {r['candidates']} | {r['offline_s'] * 1e3:.0f} ms | "
            f"{r['decide_median_s'] * 1e6:.1f} us | {r['mincut_median_s'] * 1e3:.1f} ms | {r['speedup']:.0f}x | {r['worst_rel_value_diff']:.1e} |"
        )
    rt = res["route"]
    L += [
        "",
        "## Layered-graph routing",
        "",
        "| network | links | pieces | median time | stages | multi-hop transfers |",
        "|---|---|---|---|---|---|",
    ]
    for k in ("sparse", "dense"):
        r = rt[k]
        L.append(
            f"| 50 nodes, {k} | {r['links']} | {r['pieces']} | {r['median_s'] * 1e3:.1f} ms | {r['stages']} | {r['multi_hop_transfers']} |"
        )
    j = rt["jobs"]
    L += ["", f"Multi-job routing ({j['jobs']} jobs, {j['devices']} devices, processor-sharing load): mean latency "
          f"{j['load_aware_mean_s'] * 1e3:.1f} ms load-aware vs {j['independent_mean_s'] * 1e3:.1f} ms independent "
          f"({j['improvement']:.2f}x)."]  # fmt: skip
    L += [
        "",
        "## PSO vs brute force",
        "",
        "| objective/variant | instances | mean gap | worst gap | optimal | median time |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in res["pso"].items():
        L.append(
            f"| {k} | {r['instances']} | {r['mean_gap']:.3%} | {r['worst_gap']:.3%} | {r['optimal_share']:.0%} | {r['median_time_s'] * 1e3:.0f} ms |"
        )
    b = res["bayes"]
    s = b["setup"]
    L += ["", "## Bayesian optimisation under noisy measurements", "",
          f"{s['instances']} instances ({s['pieces']} pieces, {s['devices']} devices), {s['objective']}, "
          f"noise {s['noise']:.0%} (multiplicative), budget {s['budget']} measurements.", "",
          "| method | mean gap | worst gap | reached 1 % | mean evaluations to 1 % |", "|---|---|---|---|---|"]  # fmt: skip
    for k in ("bo/model", "bo/none", "random"):
        r = b[k]
        e = "-" if r["mean_evals_to_1pct"] is None else f"{r['mean_evals_to_1pct']:.1f}"
        L.append(
            f"| {k} | {r['mean_gap']:.3%} | {r['worst_gap']:.3%} | {r['reached']}/{s['instances']} | {e} |"
        )
    ex = b["exhaustive"]
    L.append(
        f"| exhaustive (each config once) | {ex['mean_gap']:.3%} | {ex['worst_gap']:.3%} | {ex['within_1pct_share']:.0%} | {ex['evaluations']:.0f} (all) |"
    )
    L += ["", "## Fused-layer tiling vs no fused layers (VGG-16 at 224x224: head = conv1_1..pool2, features = all 13 convs)", "",
          "| block | helpers | fused latency | NFL latency | speed-up | grid | fused depth | devices used | halo redundancy |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["fused"]:
        L.append(
            f"| {r['block']} | {r['helpers']} | {r['fused_latency_s'] * 1e3:.1f} ms | {r['nfl_latency_s'] * 1e3:.1f} ms | {r['speedup_vs_nfl']:.2f}x | "
            f"{r['grid'][0]}x{r['grid'][1]} | {r['depth']}/{r['pieces']} | {r['devices_used']} | {r['redundancy']:.1%} |"
        )
    path.write_text("\n".join(L) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (shared CPU)")
    args = ap.parse_args()
    q = args.quick
    settings = {
        "decisions": 100 if q else 500,
        "mincuts": 10 if q else 40,
        "pso_instances": 20 if q else 40,
        "bayes_instances": 6 if q else 12,
        "bayes_budget": 30,
        "bayes_noise": 0.05,
        "route_repeat": 5 if q else 15,
    }
    res: dict[str, Any] = {
        "host": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "settings": settings,
    }
    print("CIC vs min-cut ...")
    res["cic"] = bench_cic(
        ["resnet50", "bert_base", "gpt2", "synthetic_bottleneck"],
        settings["decisions"],
        settings["mincuts"],
    )
    print("route ...")
    res["route"] = bench_route(settings["route_repeat"])
    print("pso ...")
    res["pso"] = bench_pso(settings["pso_instances"])
    print("bayes ...")
    res["bayes"] = bench_bayes(
        settings["bayes_instances"], settings["bayes_budget"], settings["bayes_noise"]
    )
    print("fused ...")
    res["fused"] = bench_fused()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "adv_planners.json").write_text(json.dumps(res, indent=2))
    write_md(res, OUT / "adv_planners.md")
    print(f"wrote {OUT / 'adv_planners.json'} and .md")


if __name__ == "__main__":
    main()
