"""Benchmark of fused (tiled) plans run for real (issue 10): measured vs predicted latency.

For each zoo CNN whose first layers can be tiled, on the 4-device local testbed (CPU quotas,
emulated links; costs profiled under the quotas): the ``fused`` planner's plan under the
``links`` model (the one the tiled runtime follows) is run through :mod:`coinfer.tiled` with real
worker processes, and the exact layer-wise latency plan (``dp``, latency objective) through the
pipeline runtime with one request in flight — the baseline a tiled plan must beat. Each run:
2 warm-up requests, then ``REQUESTS`` requests one at a time; every output is compared with the
unsplit model. Medians of ``REPEATS`` runs (fresh workers each). Also draws the measured and the
predicted timeline of one VGG-16 request side by side (``docs/img/tiled_gantt.png``).

Writes ``benchmarks/results/tiled.json`` and ``tiled.md``. Run: ``nice -n 5 python
benchmarks/bench_tiled.py [--quick]`` (about 6 minutes on 2 cores; host load recorded).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "clusters" / "local_testbed.yaml"
OUT = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img" / "tiled_gantt.png"
MODELS = ("vgg16", "tiny_yolov2", "alexnet", "mobilenet_v2")
REPEATS, REQUESTS = 3, 8


def _load() -> float:
    return os.getloadavg()[0]


def _layerwise(model: str, cluster: Any, inst: Any, plan: Any, n: int) -> tuple[float, float]:
    """p50 latency (s) and max abs error of ``plan`` through the pipeline runtime, one request
    in flight (a latency measurement, no queueing)."""
    from coinfer.runtime import run
    from coinfer.schedule import scheduler

    sched = scheduler.schedule(plan, inst, n, 1, window=1)
    res = run(model, cluster, plan, requests=n, instance=inst, schedule=sched, check=True)
    return res.latency_p50_s, float(res.max_abs_error or 0.0)


def _predicted_bars(inst: Any, plan: Any) -> list[tuple[str, str, float, float]]:
    """``(device, kind, start, end)`` of one request as the cost model times it."""
    from coinfer.core.tiles import tile_plan
    from coinfer.plan.fused.placement import schedule_timeline, tile_costs
    from coinfer.plan.fused.planner import FusedOptions, _spec_of, sub_instance

    f = plan.details["fused"]
    depth = int(f["depth"])
    groups, hw, _ = _spec_of(inst, FusedOptions())
    specs = tuple(s for g in groups[:depth] for s in g)
    tp = tile_plan(specs, hw, tuple(f["grid"]))
    devs = tuple(dict.fromkeys(f["assignment"]))
    costs = tile_costs(sub_instance(inst, 0, depth - 1), tp, devs)
    assign = [devs.index(d) for d in f["assignment"]]
    bars = []
    src = inst.source
    for b in schedule_timeline(costs, assign, f["order"], "links"):
        d = devs[int(b["device"])]
        if b["arrive"] > b["send_start"]:
            bars.append((d, "in", b["send_start"], b["arrive"]))
        bars.append((d, "tile", b["start"], b["end"]))
        if b["returned"] > b["end"]:
            bars.append(
                (
                    d,
                    "out",
                    b["returned"] - costs.back_s[int(b["tile"]), int(b["device"])],
                    b["returned"],
                )
            )
    t, holder = max(b[3] for b in bars), src
    for st in plan.stages[1:]:
        d = st.devices[0]
        t += inst.transfer_s(holder, d, inst.cut_bytes(st.first))
        c = inst.compute_s(st.first, st.last, d)
        bars.append((d, "stage", t, t + c))
        t, holder = t + c, d
    if holder != src:
        end = t + inst.transfer_s(holder, src, inst.output_bytes)
        bars.append((holder, "out", t, end))
    return bars


def _measured_bars(res: Any) -> list[tuple[str, str, float, float]]:
    """``(device, kind, start, end)`` of the median-latency request, relative to its start."""
    k = sorted(range(len(res.latencies_s)), key=lambda i: res.latencies_s[i])[
        len(res.latencies_s) // 2
    ]
    t0, t1 = res.spans[k]
    names = res.program.devices
    bars = []
    for d in res.devices:
        for r, kind, _idx, a, b in d["computes"]:
            if r == k:
                bars.append((d["device"], kind, a - t0, b - t0))
        for kind, _msg, peer, a, b, _n in d["transfers"]:
            # a send of this request: it starts inside the request's span
            if kind == "send" and t0 <= a <= t1:
                who = d["device"] if d["device"] != names[0] else names[peer]
                bars.append((who, "in" if d["device"] == names[0] else "out", a - t0, b - t0))
    return bars


def _gantt(pred: list[Any], meas: list[Any], devices: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"tile": "tab:blue", "stage": "tab:green", "in": "tab:orange", "out": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), sharey=True)
    span = max(b[3] for b in pred + meas) * 1e3 * 1.03
    for ax, bars, name in ((axes[0], meas, "measured"), (axes[1], pred, "predicted (links model)")):
        for dev, kind, a, b in bars:
            y = devices.index(dev)
            off, h = (
                (0.0, 0.6)
                if kind in ("tile", "stage")
                else ((0.32, 0.22) if kind == "in" else (-0.32, 0.22))
            )
            ax.barh(
                y + off,
                (b - a) * 1e3,
                left=a * 1e3,
                height=h,
                color=colours[kind],
                edgecolor="black",
                linewidth=0.3,
            )
        ax.set_title(f"{title}: {name}")
        ax.set_xlim(0, span)
        ax.set_xlabel("ms since the request arrived")
        ax.set_yticks(range(len(devices)), devices)
        ax.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(
        handles,
        ["tile", "suffix stage", "input tile / stage input sent", "output returned"],
        loc="lower center",
        ncol=4,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    from coinfer import plan as planner
    from coinfer.cluster import load_cluster
    from coinfer.plan.fused import price_fused
    from coinfer.profile.costmodel import build_instance
    from coinfer.tiled import run_tiled_plan

    quick = "--quick" in argv
    repeats, n = (1, 3) if quick else (REPEATS, REQUESTS)
    models = MODELS[:1] if quick else MODELS
    cluster = load_cluster(CLUSTER)
    rows: list[dict[str, Any]] = []
    started = time.time()
    load_start = _load()
    for model in models:
        inst = build_instance(model, cluster)
        fused = planner.plan(inst, "fused", "latency", link_model="links")
        layer = planner.plan(inst, "dp", "latency")
        f = fused.details["fused"]
        row: dict[str, Any] = {
            "model": model,
            "used": bool(f["used"]),
            "tileable_pieces": len(inst.meta.get("conv_piece_layers") or []),
            "pieces": inst.num_pieces,
            "layerwise_plan": str(layer),
            "layerwise_predicted_s": layer.predicted.latency_s,
        }
        if not f["used"]:
            row["why"] = (
                f"no fused plan beats the layer-wise optimum ({fused.details['nfl_latency_s'] * 1e3:.1f} ms)"
            )
            rows.append(row)
            print(f"{model}: {row['why']}", flush=True)
            continue
        priced = price_fused(inst, fused, "links")
        row.update(
            depth=f["depth"], grid=f["grid"], devices=sorted(set(f["assignment"])),
            assignment=f["assignment"], redundancy=f["redundancy"],
            predicted_s=priced["latency_s"], predicted_block_s=priced["block_s"],
            suffix=f["suffix_stages"], runs=[],
        )  # fmt: skip
        for rep in range(repeats):
            before = _load()
            res = run_tiled_plan(
                model, cluster, fused, inst, requests=n, predicted_latency_s=priced["latency_s"]
            )
            lw, lw_err = _layerwise(model, cluster, inst, layer, n)
            run = {
                "p50_s": res.latency_p50_s, "latencies_s": res.latencies_s,
                "max_abs_err": res.max_abs_err, "layerwise_p50_s": lw,
                "layerwise_max_abs_err": lw_err, "load1": before,
                "busy_per_request_s": {d["device"]: d["busy_s"] / n for d in res.devices},
            }  # fmt: skip
            row["runs"].append(run)
            print(
                f"{model} run {rep + 1}: tiled p50 {res.latency_p50_s * 1e3:.1f} ms vs predicted "
                f"{priced['latency_s'] * 1e3:.1f} ms ({res.error:+.1%}); layer-wise measured "
                f"{lw * 1e3:.1f} ms; max abs err {res.max_abs_err:.2g}; load {before:.2f}",
                flush=True,
            )
            if model == "vgg16" and rep == repeats - 1:
                _gantt(
                    _predicted_bars(inst, fused),
                    _measured_bars(res),
                    list(res.program.devices),
                    "VGG-16 fused",
                )
        row["p50_s"] = statistics.median(r["p50_s"] for r in row["runs"])
        row["layerwise_p50_s"] = statistics.median(r["layerwise_p50_s"] for r in row["runs"])
        row["error"] = row["p50_s"] / row["predicted_s"] - 1.0
        row["max_abs_err"] = max(r["max_abs_err"] for r in row["runs"])
        row["speedup_vs_layerwise"] = row["layerwise_p50_s"] / row["p50_s"]
        rows.append(row)
    result = {
        "cluster": str(CLUSTER.relative_to(ROOT)), "repeats": repeats, "requests": n,
        "rows": rows, "load_start": load_start, "load_end": _load(), "cores": os.cpu_count(),
        "elapsed_s": time.time() - started, "quick": quick,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    name = "tiled_quick" if quick else "tiled"
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1))
    (OUT / f"{name}.md").write_text(_markdown(result))
    print((OUT / f"{name}.md").read_text())
    return 0


def _markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Fused (tiled) plans run for real vs their prediction",
        "",
        f"Local testbed ({res['cluster']}), {res['requests']} requests one at a time after 2 warm-up "
        f"ones, medians of {res['repeats']} runs with fresh workers. Predicted: the `fused` planner's "
        "`links` model (what the tiled runtime does). Layer-wise: the exact latency plan (`dp`) "
        "through the pipeline runtime, one request in flight.",
        "",
        "| model | tiled | devices | halo | predicted ms | measured p50 ms | error | layer-wise measured ms (predicted) | speed-up | max abs err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if not r["used"]:
            lines.append(
                f"| {r['model']} | — | — | — | — | — | — | ({r['layerwise_predicted_s'] * 1e3:.1f}) | — | {r['why']} |"
            )
            continue
        lines.append(
            f"| {r['model']} | pieces 0–{r['depth'] - 1}, {r['grid'][0]}×{r['grid'][1]} | "
            f"{', '.join(r['devices'])} | {r['redundancy']:.0%} | {r['predicted_s'] * 1e3:.1f} | "
            f"{r['p50_s'] * 1e3:.1f} | {r['error']:+.1%} | {r['layerwise_p50_s'] * 1e3:.1f} "
            f"({r['layerwise_predicted_s'] * 1e3:.1f}) | {r['speedup_vs_layerwise']:.2f}× | "
            f"{r['max_abs_err']:.2g} |"
        )
    lines += [
        "",
        f"Host load (1-min average) {res['load_start']:.2f} at the start, {res['load_end']:.2f} at "
        f"the end, on {res['cores']} cores; {res['elapsed_s'] / 60:.1f} min in all.",
        "",
        "![measured vs predicted timeline of one VGG-16 request](../../docs/img/tiled_gantt.png)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
