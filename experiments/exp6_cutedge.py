"""Experiment 6 (CutEdge, S3): Lyapunov control of split, DVFS and rate vs fixed and greedy.

Claim (S3): joint online control of the device–edge split point, the device's clock frequency and
its transmission rate gives trade-off curves between energy, throughput and end-to-end latency
(``V`` moves along them), under stochastic bandwidth and load; trace-driven.

Setup (``examples/clusters/phone_edge_cloud.yaml``): the phone (100 GFLOP/s at f_max, DVFS levels
0.44/0.58/0.75/1.0 of 587 MHz, 0.8 W idle / 5 W active / 1.5 W transmit) and the edge box
(300 GFLOP/s); ResNet-50 (72 pieces, analytic times = FLOPs / GFLOP/s, cut bytes from the captured
graph, 602 kB float32 input); uplink 10 ms latency, downlink 50 Mbit/s, 10 ms. Tasks arrive
Poisson at 5 /s; slots of 0.25 s; 6 000 slots (1 500 s), the first 600 left out of the averages.
Latency bound ``L_max`` = 0.2 s on the task-averaged service latency (device compute + uplink + edge
+ downlink; the phone alone takes 0.08-0.19 s, full offload 0.2-1.3 s depending on bandwidth).
Energy = the phone's: compute at its DVFS level (reference power curve) + radio, where sending at
rate ``r`` over a slot whose Shannon capacity at 1.5 W is ``w`` costs ``1.5 (2^(r/W)-1)/(2^(w/W)-1)`` W.

Bandwidth sources (one ``SplitSystem`` each; ``W`` = channel width):
- ``phone_uplink``: the walk trace (4-40 Mbit/s, 5 s steps), W = 10 MHz (LTE carrier);
- ``lte_uplink``: the LTE trace divided by its file's stated x20 testbed scale (0.3-28 Mbit/s,
  1 s steps), W = 10 MHz;
- ``wifi_congested``: the congested 802.11n trace as is (39-227 Mbit/s), W = 40 MHz;
- ``markov``: a birth–death chain over 2/5/10/20/40 Mbit/s, staying with probability 0.95 per slot.
Traces repeat over the run; a missing trace file is skipped with a note.

Policies: ``cutedge`` at 8 log-spaced V in [0.3, 3000]; ``fixed`` (best static split at the mean
bandwidth, f_max, full rate); ``greedy`` (per slot, the cheapest option that clears the backlog
within L_max). ``lp_bound``: the least time-average power of ANY policy that serves the arrival
rate and meets L_max on average, from a linear program over the empirical bandwidth distribution
(time-sharing of options within a slot: the same achievable set as the stationary randomised
policies of the drift-plus-penalty theorem), so CutEdge's energy gap above it should shrink as
O(1/V) while its backlog grows as O(V).

Throughput: the offered load swept over 1-15 req/s (CutEdge at V = 15, fixed, greedy) on two
sources: delivered throughput and energy per task (beyond capacity the queue grows and delivered
throughput saturates).

Stability: a 20 000-slot run (5 000 s) at a small and a large V on two sources, Q(t), Z(t) and
their running time averages.

Why one module: the runs, the LP bound and the four figures share the constants above and the
rows they produce; split up, the figures could silently describe a different setup than the table.

Run: ``python experiments/exp6_cutedge.py`` (~1.5 min) → ``results/exp6_cutedge.csv``,
``exp6_tradeoff.png``, ``exp6_throughput.csv/png``, ``exp6_stability.csv``, ``exp6_queues.png``,
``exp6_decisions.png``, ``exp6_decisions.jsonl``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, log, model_instance, write_csv

from coinfer.cluster import load_cluster
from coinfer.core.instance import Instance, Link
from coinfer.plan.online import (
    CutEdge,
    FixedSplit,
    Greedy,
    SplitSystem,
    markov_bandwidth,
    poisson_arrivals,
    run_slots,
    trace_bandwidth,
)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples/clusters/phone_edge_cloud.yaml"
TRACES = ROOT / "examples/clusters/traces"
MODEL = "resnet50"
ARRIVAL_RPS = 5.0
SLOT_S = 0.25
SLOTS = 6000
WARMUP = 600
LATENCY_MAX_S = 0.2
VS = tuple(float(v) for v in np.geomspace(0.3, 3000.0, 8))
SWEEP_RPS = (1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0)  # offered load of the throughput sweep
SWEEP_V = 15.0
SWEEP_SLOTS = 3000
SEED = 6
LONG_SLOTS = 20_000  # stability runs
STABILITY_VS = (2.0, 100.0)
# source -> (trace file or None for the Markov chain, bandwidth divisor, channel width Hz)
SOURCES = {
    "phone_uplink": ("phone_uplink.csv", 1.0, 10e6),
    "lte_uplink": (
        "lte_uplink.csv",
        20.0,
        10e6,
    ),  # the file: "median 6 Mbit/s x 20 (testbed scale)"
    "wifi_congested": ("wifi_congested.csv", 1.0, 40e6),
    "markov": (None, 1.0, 10e6),
}
MARKOV_LEVELS_MBPS = (2.0, 5.0, 10.0, 20.0, 40.0)
MARKOV_STAY = 0.95


def base_instance() -> Instance:
    """ResNet-50 on the yaml's phone + edge (analytic times), phone DVFS levels from the yaml."""
    cluster = load_cluster(CLUSTER)
    spec = {d.name: d for d in cluster.devices}
    ph, ed = spec["phone"], spec["edge"]
    down = next(lk for lk in cluster.links if (lk.src, lk.dst) == ("edge", "phone"))
    up = next(lk for lk in cluster.links if (lk.src, lk.dst) == ("phone", "edge"))
    links = [
        Link("phone", "edge", up.bandwidth_Bps, up.latency_s),
        Link("edge", "phone", down.bandwidth_Bps, down.latency_s),
    ]
    power = {
        d.name: (d.power_idle_w or 0.0, d.power_active_w or 0.0, d.power_transmit_w or 0.0)
        for d in (ph, ed)
    }
    inst = model_instance(MODEL, {"phone": ph.gflops, "edge": ed.gflops}, links, "phone",
                          power=power, name=f"{MODEL}-phone-edge")  # fmt: skip
    devs = tuple(replace(d, dvfs_levels=ph.dvfs_levels) if d.name == "phone" else d
                 for d in inst.devices)  # fmt: skip
    return replace(inst, devices=devs)


def bandwidth_series(source: str, slots: int, seed: int) -> np.ndarray | None:
    from coinfer.cluster import load_trace

    fname, divisor, _ = SOURCES[source]
    if fname is None:
        levels = [m * MBIT for m in MARKOV_LEVELS_MBPS]
        return markov_bandwidth(levels, MARKOV_STAY, slots, seed)
    path = TRACES / fname
    if not path.exists():
        log(f"{source}: {path} not present, skipped")
        return None
    tr = load_trace(path)
    return trace_bandwidth(tr.times_s, np.asarray(tr.bandwidth_Bps) / divisor, SLOT_S, slots)


def lp_bound_w(system: SplitSystem, bandwidth: np.ndarray, arrival_rps: float) -> float:
    """Least time-average power of any policy serving ``arrival_rps`` within L_max on average.

    Variables ``y[w, x]``: tasks served per slot with option ``x`` when the bandwidth is ``w``;
    per ``w``: ``sum_x y / capacity <= 1`` (options share the slot); on average over ``w``:
    ``E[sum y] >= arrivals per slot`` and ``E[sum y (latency - L_max)] <= 0``.
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix

    values, counts = np.unique(bandwidth, return_counts=True)
    prob = counts / counts.sum()
    energy, lat, inv_cap, row, owner = [], [], [], [], []
    for i, w in enumerate(values):
        o = system.options(float(w))
        keep = o.valid & np.isfinite(o.capacity_tasks)
        energy.append(prob[i] * o.energy_j[keep])
        lat.append(prob[i] * (o.latency_s[keep] - LATENCY_MAX_S))
        inv_cap.append(1.0 / o.capacity_tasks[keep])
        row.append(np.full(int(keep.sum()), prob[i]))
        owner.append(np.full(int(keep.sum()), i))
    c = np.concatenate(energy) / SLOT_S
    cols = np.arange(c.size)
    share = csr_matrix((np.concatenate(inv_cap), (np.concatenate(owner), cols)),
                       shape=(values.size, c.size))  # fmt: skip
    a_ub = np.vstack([-np.concatenate(row), np.concatenate(lat)])
    from scipy.sparse import vstack

    A = vstack([share, csr_matrix(a_ub)]).tocsr()
    b = np.concatenate([np.ones(values.size), [-arrival_rps * SLOT_S, 0.0]])
    res = linprog(c, A_ub=A, b_ub=b, bounds=(0, None), method="highs")
    if res.status != 0:
        log(f"LP bound: {res.message}")
        return float("nan")
    return float(res.fun)


def decision_time_us(ctl: CutEdge, bandwidth: np.ndarray, repeats: int = 400) -> float:
    ts = []
    for i in range(repeats):
        t0 = time.perf_counter()
        ctl.decide(i, 10.0, 1.0, float(bandwidth[i % bandwidth.size]))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def row_of(source: str, policy: str, V: float | None, run, system: SplitSystem, lp: float) -> dict:
    s = run.summary(warmup=WARMUP)
    sl = slice(WARMUP, None)
    busy = run.split[sl] >= 0
    P = system.num_splits - 1
    k = run.split[sl][busy]
    w = run.served[sl][busy]
    tot = max(w.sum(), 1e-12)
    rate_frac = np.where(k < P, run.rate_Bps[sl][busy] / run.bandwidth_Bps[sl][busy], np.nan)
    off = k < P
    return {
        "source": source,
        "policy": policy,
        "V": V if V is not None else "",
        **{key: val for key, val in s.items() if key != "policy"},
        "lp_bound_power_w": lp,
        "gap_power_w": s["power_w"] - lp,
        "share_local": float(w[k == P].sum() / tot),
        "share_full_offload": float(w[k == 0].sum() / tot),
        "share_intermediate": float(w[(k > 0) & (k < P)].sum() / tot),
        "mean_freq": float((run.freq[sl][busy] * w).sum() / tot),
        "mean_rate_fraction_offloaded": float((rate_frac[off] * w[off]).sum() / max(w[off].sum(), 1e-12))
        if off.any() else float("nan"),
        "violation_s": s["service_latency_s"] - LATENCY_MAX_S,
    }  # fmt: skip


def tradeoff_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(r["source"] for r in rows))
    fig, axes = plt.subplots(len(sources), 2, figsize=(12, 3.8 * len(sources)), squeeze=False)
    for i, src in enumerate(sources):
        sel = [r for r in rows if r["source"] == src]
        ce = [r for r in sel if r["policy"] == "cutedge"]
        base = {r["policy"]: r for r in sel if r["policy"] != "cutedge"}
        lp = ce[0]["lp_bound_power_w"]
        ax = axes[i][0]
        ax.plot([r["latency_mean_s"] for r in ce], [r["energy_per_task_j"] for r in ce], "o-",
                color="tab:blue", label="CutEdge (V varies)")  # fmt: skip
        for r in ce:
            ax.annotate(f"{r['V']:.3g}", (r["latency_mean_s"], r["energy_per_task_j"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
        for name, mk, col in (("fixed", "s", "tab:red"), ("greedy", "^", "tab:green")):
            if name in base:
                ax.plot(base[name]["latency_mean_s"], base[name]["energy_per_task_j"], mk,
                        color=col, markersize=9, label=name)  # fmt: skip
        ax.axhline(lp / ce[0]["arrival_rps"], color="grey", ls="--", label="LP bound")
        ax.set_xscale("log")
        ax.set_xlabel("mean end-to-end latency (s)")
        ax.set_ylabel("phone energy per task (J)")
        ax.set_title(f"{src}: energy vs latency")
        ax.legend(fontsize=7)
        ax = axes[i][1]
        Vs = [r["V"] for r in ce]
        gaps = [max(r["gap_power_w"], 1e-4) for r in ce]
        ax.loglog(Vs, gaps, "o-", color="tab:blue", label="power gap above LP bound (W)")
        below = [(v, g) for v, g, r in zip(Vs, gaps, ce, strict=True) if r["gap_power_w"] <= 1e-4]
        if below:  # at or under the bound: the finite run overshoots L_max by Z(T)/tasks
            ax.plot(*zip(*below, strict=True), "o", mfc="white", color="tab:blue",
                    label="gap <= 0 (drawn at 1e-4)")  # fmt: skip
        mid = len(Vs) // 2
        ax.loglog(Vs[mid - 1 :], [gaps[mid - 1] * Vs[mid - 1] / v for v in Vs[mid - 1 :]], ":",
                  color="tab:blue", label="~ 1/V")  # fmt: skip
        ax.set_xlabel("V")
        ax.set_ylabel("W above bound")
        ax2 = ax.twinx()
        ax2.loglog(Vs, [max(r["backlog_mean"], 1e-2) for r in ce], "s-", color="tab:orange",
                   label="mean backlog Q (tasks)")  # fmt: skip
        ax2.loglog(Vs, [max(r["virtual_mean"], 1e-2) for r in ce], "d-", color="tab:purple",
                   label="mean virtual queue Z")  # fmt: skip
        ax2.set_ylabel("queue")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
        ax.set_title(f"{src}: O(1/V) energy gap, O(V) backlog")
    fig.suptitle(
        f"CutEdge on {MODEL}, phone + edge, {ARRIVAL_RPS:g} req/s, L_max {LATENCY_MAX_S} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(r["source"] for r in rows))
    fig, axes = plt.subplots(len(sources), 2, figsize=(12, 3.8 * len(sources)), squeeze=False)
    style = {
        "fixed": ("s-", "tab:red"),
        "greedy": ("^-", "tab:green"),
        "cutedge": ("o-", "tab:blue"),
    }
    for i, src in enumerate(sources):
        for pol, (mk, col) in style.items():
            sel = [r for r in rows if r["source"] == src and r["policy"] == pol]
            label = f"CutEdge V={SWEEP_V:g}" if pol == "cutedge" else pol
            x = [r["throughput_rps"] for r in sel]
            axes[i][0].plot(x, [r["energy_per_task_j"] for r in sel], mk, color=col, label=label)
            axes[i][1].plot([r["offered_rps"] for r in sel], x, mk, color=col, label=label)
        axes[i][0].set_xlabel("delivered throughput (req/s)")
        axes[i][0].set_ylabel("phone energy per task (J)")
        axes[i][0].set_title(f"{src}: energy vs throughput (offered load swept)")
        axes[i][1].plot(SWEEP_RPS, SWEEP_RPS, ":", color="grey", label="offered = delivered")
        axes[i][1].set_xlabel("offered load (req/s)")
        axes[i][1].set_ylabel("delivered throughput (req/s)")
        axes[i][1].set_title(f"{src}: throughput")
        for ax in axes[i]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def queue_plot(long_runs: dict[tuple[str, float], object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(s for s, _ in long_runs))
    fig, axes = plt.subplots(2, len(sources), figsize=(6.5 * len(sources), 7), squeeze=False)
    for j, src in enumerate(sources):
        for i, (key, label) in enumerate((("backlog", "task queue Q (tasks)"),
                                          ("virtual", "latency virtual queue Z (task·s)"))):  # fmt: skip
            ax = axes[i][j]
            for V, col in zip(STABILITY_VS, ("tab:green", "tab:blue"), strict=True):
                run = long_runs[(src, V)]
                y = getattr(run, key)
                t = np.arange(y.size) * SLOT_S
                ax.plot(t, y, color=col, lw=0.4, alpha=0.6, label=f"V={V:g}")
                ax.plot(t, np.cumsum(y) / np.arange(1, y.size + 1), color=col, lw=2,
                        label=f"V={V:g} running average")  # fmt: skip
            ax.set_xlabel("time (s)")
            ax.set_ylabel(label)
            ax.set_title(f"{src}: {label}")
            ax.legend(fontsize=7)
    fig.suptitle("Queue stability: bounded queues, converging time averages (5 000 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def decisions_plot(run, system: SplitSystem, V: float, path: Path, window: int = 480) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sl = slice(WARMUP, WARMUP + window)
    t = np.arange(run.slots)[sl] * SLOT_S
    fig, axes = plt.subplots(4, 1, figsize=(11, 8), sharex=True)
    axes[0].plot(t, run.bandwidth_Bps[sl] / MBIT, color="black")
    axes[0].set_ylabel("uplink Mbit/s")
    P = system.num_splits - 1
    k = run.split[sl].astype(float)
    kind = np.where(k < 0, np.nan, np.where(k == P, 2, np.where(k == 0, 0, 1)))
    axes[1].plot(t, kind, ".", ms=3)
    axes[1].set_yticks([0, 1, 2], ["offload all", "split", "local"])
    computing = np.where(run.split[sl] > 0, run.freq[sl], np.nan)  # no level when all offloaded
    axes[2].plot(
        t, computing, ".", ms=3, label="DVFS level (f/f_max, slots computing on the phone)"
    )
    sent = np.where(run.rate_Bps[sl] > 0, run.rate_Bps[sl] / run.bandwidth_Bps[sl], np.nan)
    axes[2].plot(t, sent, "x", ms=3,
                 label="rate / bandwidth (offloaded slots)")  # fmt: skip
    axes[2].legend(fontsize=7)
    axes[3].plot(t, run.backlog[sl], label="Q")
    axes[3].plot(t, run.virtual[sl], label="Z")
    axes[3].set_ylabel("queues")
    axes[3].legend(fontsize=7)
    axes[3].set_xlabel("time (s)")
    fig.suptitle(f"CutEdge decisions over 120 s (phone_uplink, V = {V:.3g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    t_start = time.perf_counter()
    inst = base_instance()
    arrivals = poisson_arrivals(ARRIVAL_RPS, SLOT_S, SLOTS, SEED)
    rows: list[dict] = []
    systems: dict[str, SplitSystem] = {}
    series: dict[str, np.ndarray] = {}
    for source, (_, _, channel) in SOURCES.items():
        bw = bandwidth_series(source, SLOTS, SEED)
        if bw is None:
            continue
        system = SplitSystem.from_instance(inst, "phone", "edge", slot_s=SLOT_S, channel_hz=channel)
        systems[source], series[source] = system, bw
        lp = lp_bound_w(system, bw[WARMUP:], float(arrivals[WARMUP:].mean()) / SLOT_S)
        fixed = FixedSplit.best_static(
            system, float(bw.mean()), ARRIVAL_RPS * SLOT_S, LATENCY_MAX_S
        )
        policies = [(fixed, None), (Greedy(system, LATENCY_MAX_S), None)]
        policies += [(CutEdge(system, V, LATENCY_MAX_S), V) for V in VS]
        for pol, V in policies:
            run = run_slots(pol, bw, arrivals, slot_s=SLOT_S, latency_max_s=LATENCY_MAX_S)
            row = row_of(source, pol.name, V, run, system, lp)
            if isinstance(pol, CutEdge):
                row["decision_us"] = decision_time_us(pol, bw)
            if isinstance(pol, FixedSplit):
                row["fixed_split"] = fixed.split
            rows.append(row)
        log(f"{source}: {bw.min() / MBIT:.1f}-{bw.max() / MBIT:.1f} Mbit/s (mean {bw.mean() / MBIT:.1f}), "
            f"LP bound {lp:.3f} W, fixed split k={fixed.split}/{system.num_splits - 1}")  # fmt: skip
        for r in (x for x in rows if x["source"] == source):
            log(f"  {r['policy']:8s} V={r['V'] if r['V'] == '' else format(r['V'], '.3g'):>6} "
                f"P={r['power_w']:.3f} W  e={r['energy_per_task_j']:.3f} J  thr={r['throughput_rps']:.3f}  "
                f"lat={r['latency_mean_s']:.3f} s (p95 {r['latency_p95_s']:.2f})  svc={r['service_latency_s']:.3f}  "
                f"Q={r['backlog_mean']:.1f}/{r['backlog_max']:.1f}  Z={r['virtual_mean']:.2f}/{r['virtual_max']:.2f}  "
                f"local={r['share_local']:.2f} off={r['share_full_offload']:.2f} mid={r['share_intermediate']:.2f} "
                f"f={r['mean_freq']:.2f} rate={r['mean_rate_fraction_offloaded']:.2f}")  # fmt: skip
    write_csv(RESULTS / "exp6_cutedge.csv", rows)
    tradeoff_plot(rows, RESULTS / "exp6_tradeoff.png")

    # energy vs throughput: sweep the offered load (inside and beyond capacity)
    sweep_rows = []
    for source in [s for s in ("phone_uplink", "markov") if s in systems]:
        sysm = systems[source]
        bw = bandwidth_series(source, SWEEP_SLOTS, SEED + 2)
        for rps in SWEEP_RPS:
            arr = poisson_arrivals(rps, SLOT_S, SWEEP_SLOTS, SEED + 2)
            pols = [FixedSplit.best_static(sysm, float(bw.mean()), rps * SLOT_S, LATENCY_MAX_S),
                    Greedy(sysm, LATENCY_MAX_S), CutEdge(sysm, SWEEP_V, LATENCY_MAX_S)]  # fmt: skip
            for pol in pols:
                run = run_slots(pol, bw, arr, slot_s=SLOT_S, latency_max_s=LATENCY_MAX_S)
                s = run.summary(warmup=SWEEP_SLOTS // 10)
                sweep_rows.append({"source": source, "offered_rps": rps, **s})
        log(f"throughput sweep {source}: " + "; ".join(
            f"{r['policy']}@{r['offered_rps']:g}: {r['throughput_rps']:.2f} req/s {r['energy_per_task_j']:.3f} J"
            for r in sweep_rows if r["source"] == source))  # fmt: skip
    write_csv(RESULTS / "exp6_throughput.csv", sweep_rows)
    throughput_plot(sweep_rows, RESULTS / "exp6_throughput.png")

    # stability: long runs at a small and a large V
    long_runs = {}
    stab_rows = []
    for source in [s for s in ("phone_uplink", "markov") if s in systems]:
        bw = bandwidth_series(source, LONG_SLOTS, SEED + 1)
        arr = poisson_arrivals(ARRIVAL_RPS, SLOT_S, LONG_SLOTS, SEED + 1)
        for V in STABILITY_VS:
            run = run_slots(CutEdge(systems[source], V, LATENCY_MAX_S), bw, arr, slot_s=SLOT_S,
                            latency_max_s=LATENCY_MAX_S)  # fmt: skip
            long_runs[(source, V)] = run
            q, z = run.backlog, run.virtual
            quarters = np.array_split(np.arange(q.size), 4)
            stab_rows.append({
                "source": source, "V": V,
                **{f"Q_mean_q{i + 1}": float(q[ix].mean()) for i, ix in enumerate(quarters)},
                **{f"Z_mean_q{i + 1}": float(z[ix].mean()) for i, ix in enumerate(quarters)},
                "Q_max": float(q.max()), "Z_max": float(z.max()),
                "service_latency_s": run.summary(warmup=LONG_SLOTS // 10)["service_latency_s"],
                "throughput_rps": run.summary(warmup=LONG_SLOTS // 10)["throughput_rps"],
            })  # fmt: skip
            log(f"stability {source} V={V:g}: Q quarter means "
                f"{[round(stab_rows[-1][f'Q_mean_q{i}'], 2) for i in range(1, 5)]} max {q.max():.1f}; "
                f"Z quarter means {[round(stab_rows[-1][f'Z_mean_q{i}'], 2) for i in range(1, 5)]} "
                f"max {z.max():.1f}")  # fmt: skip
    write_csv(RESULTS / "exp6_stability.csv", stab_rows)
    queue_plot(long_runs, RESULTS / "exp6_queues.png")

    # one run's decisions, as a picture and as JSON records
    if "phone_uplink" in systems:
        sysm, bw = systems["phone_uplink"], series["phone_uplink"]
        ctl = CutEdge(sysm, VS[3], LATENCY_MAX_S)
        run = run_slots(ctl, bw, arrivals, slot_s=SLOT_S, latency_max_s=LATENCY_MAX_S,
                        keep_decisions=True)  # fmt: skip
        decisions_plot(run, sysm, VS[3], RESULTS / "exp6_decisions.png")
        with (RESULTS / "exp6_decisions.jsonl").open("w") as fh:
            for d in run.decisions[WARMUP : WARMUP + 240]:
                fh.write(json.dumps(d.to_dict()) + "\n")
    log(f"done in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
