"""A fixed plan vs an oracle that knows the bandwidth trace in advance, in the simulator.

Setup: the demo model (ResNet-18, ``coinfer demo``'s default) on the local testbed with
time-varying links, ``examples/clusters/local_testbed_traces.yaml`` (d3's links to d0/d1 follow
an LTE uplink trace, d2's follow a congested Wi-Fi trace; 120 s) and
``examples/clusters/local_testbed_step.yaml`` (d3's links to d0/d1 drop 10x from t = 10 s to
30 s; 60 s). Provenance of the traces: ``examples/clusters/traces/README.md``.

Figures, all mean requests/s over the trace window (``coinfer.simulate.oracle``):

- ``fixed``: the dp throughput plan made on the cluster's nominal bandwidths (for a traced link,
  the trace's time-weighted mean), run through the whole window in the discrete-event simulator
  with the traces applied;
- ``oracle``: per segment of constant bandwidths, the dp plan for that segment's network at its
  steady-state simulated throughput; ``oracle_pause``: the same, serving nothing for
  ``PAUSE_S`` after each plan change; ``oracle_switch_aware_pause``: the best sequence of those
  plans with the pauses counted (it skips switches that do not repay their pause);
- ``oracle_replayed``: the oracle's plan timeline replayed through the simulator, each plan
  routed on the network it was planned for (each switch starts an empty pipeline, in-flight
  requests are not counted: what a perfectly informed controller that switches at every
  change would get);
- ``best_fixed_hindsight``: the best single plan among the oracle's plans, run through the window
  with the routes of the network it was planned for.

Costs: per-device piece times from this host's cached profiles (``profile``: what
``coinfer demo`` plans on before calibration; measured once, a few minutes, when no cache
exists) and from the analytic fallback (``analytic``: FLOPs / GFLOP/s, deterministic anywhere).
No calibration run: it would need the real runtime (~20 s of probes per cluster).

Run: ``python experiments/traces_oracle.py`` → ``results/traces_oracle.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, log

from coinfer.cluster import load_cluster
from coinfer.plan import plan
from coinfer.profile.costmodel import build_instance
from coinfer.simulate import (
    fixed_plan_throughput,
    instance_at,
    oracle_throughput,
    replay_plan_timeline,
    steady_throughput,
)

MODEL = "resnet18"  # coinfer demo's default model
CLUSTERS = Path(__file__).resolve().parents[1] / "examples" / "clusters"
SCENARIOS = ("local_testbed_traces.yaml", "local_testbed_step.yaml")
COST_SOURCES = ("profile", "analytic")
# A plan switch in a live session drains and refills the pipeline and ships new stage modules;
# 0.5 s is an assumed figure for the pause (no measurement of the hand-over here).
PAUSE_S = 0.5


def plan_for(instance):
    return plan(instance, "dp", "throughput")


def one(cluster_file: str, source: str) -> dict:
    cl = load_cluster(CLUSTERS / cluster_file)
    inst = build_instance(MODEL, cl, source=source)
    traces = dict(cl.traces)
    horizon = max(tr.times_s[-1] for tr in traces.values())
    t0 = time.perf_counter()
    fixed_plan = plan_for(inst)
    fixed = fixed_plan_throughput(inst, fixed_plan, traces, horizon)
    oracle = oracle_throughput(inst, traces, horizon, plan_for)
    paused = oracle_throughput(inst, traces, horizon, plan_for, switch_pause_s=PAUSE_S)
    aware = oracle_throughput(
        inst, traces, horizon, plan_for, switch_pause_s=PAUSE_S, choose="switch_aware"
    )
    timeline, seen = [], None
    plans_by_text = {}
    for seg in oracle.segments:
        if seg.plan != seen:
            planned_on = instance_at(inst, traces, seg.start_s)
            seg_plan = plan_for(planned_on)
            timeline.append((seg.start_s, seg_plan))
            plans_by_text.setdefault(seg.plan, (seg_plan, planned_on))
            seen = seg.plan
    replayed = replay_plan_timeline(inst, traces, timeline, horizon, route_on="switch")
    hindsight = {
        text: fixed_plan_throughput(on, p, traces, horizon)
        for text, (p, on) in plans_by_text.items()
    }
    best_text = max(hindsight, key=hindsight.get)
    row = {
        "cluster": cluster_file,
        "model": MODEL,
        "cost_source": source,
        "cost_sources": dict(inst.meta.get("cost_source", {})),
        "horizon_s": horizon,
        "traced_links": sorted(f"{u}->{v}" for u, v in traces),
        "fixed_plan": " | ".join(str(s) for s in fixed_plan.stages),
        "fixed_steady_nominal_rps": steady_throughput(inst, fixed_plan),
        "fixed_rps": fixed,
        "oracle_rps": oracle.mean_throughput_rps,
        "oracle_switches": oracle.switches,
        "oracle_plans": len(plans_by_text),
        f"oracle_pause_{PAUSE_S:g}s_rps": paused.mean_throughput_rps,
        f"oracle_switch_aware_pause_{PAUSE_S:g}s_rps": aware.mean_throughput_rps,
        "oracle_switch_aware_switches": aware.switches,
        "oracle_replayed_rps": replayed.mean_throughput_rps,
        "best_fixed_hindsight_rps": hindsight[best_text],
        "best_fixed_hindsight_plan": best_text,
        "oracle_over_fixed": oracle.mean_throughput_rps / fixed,
        "fixed_over_oracle": fixed / oracle.mean_throughput_rps,
        "wall_s": time.perf_counter() - t0,
        "oracle": oracle.to_dict(),
        "replayed_throughput_rps_per_s": list(replayed.throughput_rps),
    }
    return row


def _short(column: str) -> str:
    return (
        column.replace("oracle_", "o_")
        .replace("switch_aware", "aware")
        .replace("best_fixed_hindsight", "hindsight")
        .replace("_rps", "")
    )


def main() -> None:
    rows = []
    for cluster_file in SCENARIOS:
        for source in COST_SOURCES:
            log(f"{cluster_file} ({source} costs) ...")
            rows.append(one(cluster_file, source))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "traces_oracle.json"
    out.write_text(json.dumps({"pause_s": PAUSE_S, "runs": rows}, indent=1))
    cols = (
        "fixed_rps",
        "oracle_rps",
        f"oracle_pause_{PAUSE_S:g}s_rps",
        f"oracle_switch_aware_pause_{PAUSE_S:g}s_rps",
        "oracle_replayed_rps",
        "best_fixed_hindsight_rps",
        "oracle_over_fixed",
    )
    print(f"{'cluster':28} {'costs':9} " + " ".join(f"{_short(c):>14}" for c in cols))
    for r in rows:
        print(f"{r['cluster']:28} {r['cost_source']:9} " + " ".join(f"{r[c]:>14.3f}" for c in cols))
    for r in rows:
        print(
            f"{r['cluster']} ({r['cost_source']}): fixed plan {r['fixed_plan']}; oracle used "
            f"{r['oracle_plans']} plans, {r['oracle_switches']} switches"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
