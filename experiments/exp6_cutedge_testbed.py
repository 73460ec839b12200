"""Experiment 6, testbed: CutEdge driving two real processes, DVFS by a live CPU quota.

Two processes on this machine talk over ``torch.distributed`` gloo on loopback:

- the *device* (rank 0, pinned to CPU 0) runs the controller every slot, writes the chosen DVFS
  level into its own cgroup v1 CPU quota (``cpu.cfs_quota_us`` = level x 0.35 core per 10 ms period,
  rewritten live each slot; only its compute thread is in the group, as in
  ``coinfer.runtime.emulation``), computes the real head of AlexNet (captured by ``coinfer.graph``,
  cut by ``coinfer.graph.split`` at the chosen piece) and hands the cut tensor to a sender thread
  that emulates the link at the chosen rate (sleep ``latency + bytes / rate``, as
  ``runtime.transport.LinkShape``) before the gloo send;
- the *edge* (rank 1, pinned to CPU 1, one unthrottled thread) runs the real tail and returns the
  output after an emulated 50 Mbit/s, 10 ms downlink. Every output is checked against the unsplit
  model's.

Like the runtime's emulation, a compute is padded to ``cpu_time / quota`` (CFS enforces quotas only
at period boundaries, so a short burst would otherwise run faster than the emulated clock).

The controller's cost model is *profiled* at start: each piece's CPU time on the device (at f_max
= 0.35 core: time = CPU time / 0.35) and its wall time on the edge. Bandwidth: the phone walk trace
(4-38 Mbit/s) compressed 4x in time (5-s steps become 1.25 s = 5 slots). Arrivals: Poisson in wall
time at 8 req/s; a task arriving in a slot is served from the next one. Slots: 0.25 s; a slot whose
work takes longer ends late (counted as an overrun). L_max = 0.3 s on the service latency.

Runs (120 slots each, same seeds): ``fixed`` (best static split at the mean bandwidth, f_max, full
rate), ``greedy``, ``cutedge`` at V = 10 and V = 60. Energy is MODELLED from measured busy times —
there is no power meter: compute wall time (with pad) x the phone's active power at the level
(0.8 W idle, 5 W active, cubic) + measured radio time x the rate-dependent radio power of
``coinfer.plan.online.cutedge.radio_power_w`` (1.5 W at the slot's capacity, W = 10 MHz). Beside
each measured figure: the controller's own per-task price of the option it chose (predicted).

Why one module: the device, the edge and the launcher exchange one private wire format (the
header layout, the tags, the stop marker) and one set of constants (slot, quota, rates); kept in
one file, a change to either side cannot miss the other, and the experiment stays one command.

Needs root for the cgroup (without it: exits with a one-line reason). Cleans the cgroup up on
every exit path (normal end, exception, SIGINT/SIGTERM). ~2.5 min.

Run: ``python experiments/exp6_cutedge_testbed.py`` → ``results/exp6_testbed.csv``,
``exp6_testbed_tasks.csv``, ``exp6_testbed.png``.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MBIT, RESULTS, log, write_csv

MODEL = "alexnet"
SLOT_S = 0.25
SLOTS = int(os.environ.get("EXP6_TESTBED_SLOTS", "120"))  # a smaller value for a smoke run
ARRIVAL_RPS = 8.0
LATENCY_MAX_S = 0.3
MAX_QUOTA = 0.35  # cores at f_max: the device is ~3x slower than the edge's full core
LEVELS = (0.437819, 0.582624, 0.752981, 1.0)  # phone_edge_cloud.yaml: 257-587 MHz
POWER = (0.8, 5.0, 1.5)  # phone idle / active / transmit W (phone_edge_cloud.yaml)
UP_LATENCY_S = 0.01
DOWN_BPS, DOWN_LATENCY_S = 50 * MBIT, 0.01
TIME_COMPRESSION = 4.0  # trace seconds per wall second
CHANNEL_HZ = 10e6
RUNS = (("fixed", None), ("greedy", None), ("cutedge", 10.0), ("cutedge", 60.0))
SEED = 6
HEADER = 16  # int64 words: task, split, ntensors, edge_us, then (ndim, 4 dims) per tensor
STOP = -1
TAG_UP, TAG_DOWN = 10, 20
TIMEOUT_S = 60.0


# ----- shared helpers ---------------------------------------------------------------------------
def _stages(model: str):
    """The captured graph, the example input, every head (k pieces) and every tail (from k)."""
    import torch

    from coinfer.graph import capture, split
    from coinfer.zoo import load_model

    torch.manual_seed(0)
    net, inputs = load_model(model)
    g = capture(net, inputs, name=model)
    P = len(g.pieces)
    heads = {k: split(g, [k - 1])[0] if k < P else split(g, [])[0] for k in range(1, P + 1)}
    tails = {k: split(g, [k - 1])[1] if k > 0 else split(g, [])[0] for k in range(P)}
    singles = split(g, list(range(P - 1)))
    return g, tuple(inputs), heads, tails, singles


def _header(task: int, split: int, tensors, edge_us: int = 0):
    import torch

    h = torch.zeros(HEADER, dtype=torch.int64)
    h[0], h[1], h[2], h[3] = task, split, len(tensors), edge_us
    for j, t in enumerate(tensors):
        if t.dim() > 4 or 4 + 5 * (j + 1) > HEADER:
            raise ValueError(f"tensor {j} of shape {tuple(t.shape)} does not fit the header")
        h[4 + 5 * j] = t.dim()
        h[5 + 5 * j : 5 + 5 * j + t.dim()] = torch.tensor(t.shape)
    return h


def _shapes(h) -> list[tuple[int, ...]]:
    out = []
    for j in range(int(h[2])):
        nd = int(h[4 + 5 * j])
        out.append(tuple(int(x) for x in h[5 + 5 * j : 5 + 5 * j + nd]))
    return out


def _send(tensors, tag: int, dst: int) -> None:
    import torch.distributed as dist

    for j, t in enumerate(tensors):
        dist.isend(t.contiguous(), dst=dst, tag=tag + j).wait()


def _recv(shapes, tag: int, src: int, dtype=None):
    import torch
    import torch.distributed as dist

    out = [torch.empty(s, dtype=dtype or torch.float32) for s in shapes]
    for j, t in enumerate(out):
        dist.irecv(t, src=src, tag=tag + j).wait()
    return out


def _init(rank: int, port: int, cpu: int) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=TIMEOUT_S))  # fmt: skip


# ----- the edge ---------------------------------------------------------------------------------
def edge_main(port: int) -> None:
    import torch
    import torch.distributed as dist

    _init(1, port, 1)
    _, inputs, _, tails, singles = _stages(MODEL)
    times = []
    with torch.no_grad():
        x = inputs
        for st in singles:  # wall time per piece on the edge's full core (median of 5)
            st(*x)
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                y = st(*x)
                ts.append(time.perf_counter() - t0)
            times.append(statistics.median(ts))
            x = y
    _send([torch.tensor(times, dtype=torch.float64)], TAG_DOWN, 0)
    with torch.no_grad():
        while True:
            h = _recv([(HEADER,)], TAG_UP, 0, torch.int64)[0]
            if int(h[0]) == STOP:
                _send([_header(STOP, 0, [])], TAG_DOWN, 0)
                break
            k = int(h[1])
            xs = _recv(_shapes(h), TAG_UP + 1, 0)
            t0 = time.perf_counter()
            out = tails[k](*xs)
            edge_s = time.perf_counter() - t0
            nbytes = sum(o.numel() * o.element_size() for o in out)
            time.sleep(DOWN_LATENCY_S + nbytes / DOWN_BPS)  # the emulated downlink
            _send([_header(int(h[0]), k, out, int(edge_s * 1e6))], TAG_DOWN, 0)
            _send(list(out), TAG_DOWN + 1, 0)
    dist.destroy_process_group()


# ----- the device -------------------------------------------------------------------------------
class Device:
    """The device process's state: its cgroup, its pieces, its link threads, its task records."""

    def __init__(self, cgroup: str) -> None:
        import torch

        self.cgroup = Path(cgroup)
        self.graph, self.inputs, self.heads, _, self.singles = _stages(MODEL)
        self.P = len(self.graph.pieces)
        with torch.no_grad():
            self.reference = self.heads[self.P](*self.inputs)
        self.records: dict[int, dict] = {}
        self.lock = threading.Lock()
        self.sendq: queue.Queue = queue.Queue()
        self.pending = 0
        self.quota = MAX_QUOTA
        self.max_err = 0.0

    # the link threads (outside the quota: they start before the compute thread enters it)
    def sender(self) -> None:
        while True:
            item = self.sendq.get()
            if item is None:
                _send([_header(STOP, 0, [])], TAG_UP, 1)
                return
            task, k, tensors, rate = item
            nbytes = sum(t.numel() * t.element_size() for t in tensors)
            t0 = time.perf_counter()
            time.sleep(UP_LATENCY_S + nbytes / rate)  # the emulated link at the chosen rate
            _send([_header(task, k, tensors)], TAG_UP, 1)
            _send(tensors, TAG_UP + 1, 1)
            with self.lock:
                self.records[task]["radio_s"] = time.perf_counter() - t0
                self.records[task]["up_bytes"] = nbytes

    def receiver(self) -> None:
        import torch

        while True:
            h = _recv([(HEADER,)], TAG_DOWN, 1, torch.int64)[0]
            if int(h[0]) == STOP:
                return
            out = _recv(_shapes(h), TAG_DOWN + 1, 1)
            now = time.perf_counter()
            err = max(float((a - b).abs().max()) for a, b in zip(out, self.reference, strict=True))
            with self.lock:
                r = self.records[int(h[0])]
                r["done_s"], r["edge_s"] = now, int(h[3]) / 1e6
                self.max_err = max(self.max_err, err)
                self.pending -= 1

    def set_level(self, f: float) -> None:
        from coinfer.profile.cgroup import EMULATION_PERIOD_US, quota_us

        q = MAX_QUOTA * f
        if q != self.quota:
            (self.cgroup / "cpu.cfs_quota_us").write_text(str(quota_us(q, EMULATION_PERIOD_US)))
            self.quota = q

    def compute(self, module, xs):
        """Run ``module`` in the quota, padded to cpu_time / quota (see the module docstring)."""
        import torch

        c0, w0 = time.thread_time(), time.perf_counter()
        with torch.no_grad():
            out = module(*xs)
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
        pad = cpu / self.quota - wall
        if pad > 0:
            time.sleep(pad)
        return out, time.perf_counter() - w0

    def profile(self) -> list[float]:
        """CPU seconds of each piece (median of 5 after a warm-up), unthrottled."""
        import torch

        cpu = []
        with torch.no_grad():
            x = self.inputs
            for st in self.singles:
                st(*x)
                ts = []
                for _ in range(5):
                    c0 = time.thread_time()
                    y = st(*x)
                    ts.append(time.thread_time() - c0)
                cpu.append(statistics.median(ts))
                x = y
        return cpu


def _system(dev: Device, cpu_s: list[float], edge_s: list[float], mean_bw: float):
    from coinfer.core.instance import Device as Dev
    from coinfer.core.instance import Instance, Link, Piece
    from coinfer.plan.online import SplitSystem

    pieces = tuple(
        Piece(f"p{i}", {"phone": c / MAX_QUOTA, "edge": e}, int(p.mem_bytes), int(p.out_bytes))
        for i, (c, e, p) in enumerate(zip(cpu_s, edge_s, dev.graph.pieces, strict=True))
    )
    inst = Instance(
        pieces, int(dev.graph.input_bytes),
        (Dev("phone", 2**33, *POWER, dvfs_levels=LEVELS), Dev("edge", 2**36, 60.0, 150.0, 2.0)),
        (Link("phone", "edge", mean_bw, UP_LATENCY_S), Link("edge", "phone", DOWN_BPS, DOWN_LATENCY_S)),
        "phone", name=f"{MODEL}-testbed",
    )  # fmt: skip
    return SplitSystem.from_instance(inst, slot_s=SLOT_S, channel_hz=CHANNEL_HZ)


def _bandwidth(slots: int) -> np.ndarray:
    from coinfer.cluster import load_trace
    from coinfer.plan.online import trace_bandwidth

    tr = load_trace(
        Path(__file__).resolve().parents[1] / "examples/clusters/traces/phone_uplink.csv"
    )
    times = np.asarray(tr.times_s) / TIME_COMPRESSION
    return trace_bandwidth(times, tr.bandwidth_Bps, SLOT_S, slots)


def _policy(name: str, V: float | None, system, bw: np.ndarray):
    from coinfer.plan.online import CutEdge, FixedSplit, Greedy

    if name == "fixed":
        return FixedSplit.best_static(system, float(bw.mean()), ARRIVAL_RPS * SLOT_S, LATENCY_MAX_S)
    if name == "greedy":
        return Greedy(system, LATENCY_MAX_S)
    return CutEdge(system, float(V), LATENCY_MAX_S)


def device_main(port: int, cgroup: str, out: str) -> None:
    import torch

    from coinfer.plan.online import next_queues
    from coinfer.plan.online.cutedge import radio_power_w

    _init(0, port, 0)
    dev = Device(cgroup)
    cpu_s = dev.profile()
    edge_s = [float(x) for x in _recv([(dev.P,)], TAG_DOWN, 1, torch.float64)[0]]
    threads = [threading.Thread(target=dev.sender, daemon=True),
               threading.Thread(target=dev.receiver, daemon=True)]  # fmt: skip
    for t in threads:
        t.start()
    # from here on, the compute (main) thread runs inside the quota
    (dev.cgroup / "tasks").write_text(str(threading.get_native_id()))
    dev.set_level(1.0)
    bw = _bandwidth(SLOTS)
    system = _system(dev, cpu_s, edge_s, float(bw.mean()))
    results = {"cpu_s": cpu_s, "edge_s": edge_s, "runs": []}
    task_id = 0
    for run_no, (name, V) in enumerate(RUNS):
        pol = _policy(name, V, system, bw)
        rng = np.random.default_rng(SEED)
        fifo: deque[int] = deque()
        q = z = credit = 0.0
        slots = []
        t_run = time.perf_counter()
        for t in range(SLOTS):
            start = time.perf_counter()
            d = pol.decide(t, float(len(fifo)), z, float(bw[t]))
            n = 0
            if not d.idle:
                dev.set_level(float(d.freq))
                credit += d.served
                n = min(len(fifo), math.floor(credit + 1e-9))
                credit -= n
            else:
                credit = 0.0
            busy = 0.0
            for _ in range(n):
                task = fifo.popleft()
                rec = dev.records[task]
                rec.update(slot=t, split=d.split, freq=d.freq, rate_Bps=d.rate_Bps,
                           bandwidth_Bps=float(bw[t]), start_s=time.perf_counter(),
                           predicted_latency_s=d.latency_s, predicted_energy_j=d.energy_j / d.served)  # fmt: skip
                if d.split == dev.P:
                    y, wall = dev.compute(dev.heads[dev.P], dev.inputs)
                    err = max(
                        float((a - b).abs().max()) for a, b in zip(y, dev.reference, strict=True)
                    )
                    with dev.lock:
                        rec.update(done_s=time.perf_counter(), compute_s=wall, radio_s=0.0)
                        dev.max_err = max(dev.max_err, err)
                else:
                    if d.split > 0:
                        xs, wall = dev.compute(dev.heads[d.split], dev.inputs)
                    else:
                        xs, wall = list(dev.inputs), 0.0
                    rec["compute_s"] = wall
                    with dev.lock:
                        dev.pending += 1
                    dev.sendq.put((task, d.split, [x.detach() for x in xs], float(d.rate_Bps)))
                busy += rec["compute_s"]
            left = start + SLOT_S - time.perf_counter()
            if left > 0:
                time.sleep(left)
            end = time.perf_counter()
            arrivals = int(rng.poisson(ARRIVAL_RPS * (end - start)))
            for at in np.sort(rng.uniform(start, end, arrivals)):
                dev.records[task_id] = {"task": task_id, "run": run_no, "arrival_s": float(at)}
                fifo.append(task_id)
                task_id += 1
            q, z = next_queues(q, z, float(n), d.latency_s, float(arrivals), LATENCY_MAX_S)
            slots.append({"slot": t, "start_s": start, "end_s": end, "overrun_s": max(0.0, -left),
                          "served": n, "arrivals": arrivals, "backlog": len(fifo), "virtual": z,
                          "bandwidth_Bps": float(bw[t]), "decision": d.to_dict()})  # fmt: skip
        wait0 = time.perf_counter()
        while dev.pending > 0 and time.perf_counter() - wait0 < TIMEOUT_S:
            time.sleep(0.01)
        results["runs"].append({"policy": name, "V": V, "wall_s": time.perf_counter() - t_run,
                                "slots": slots, "final_backlog": len(fifo)})  # fmt: skip
        log(f"testbed {name} V={V}: {time.perf_counter() - t_run:.1f} s, backlog left {len(fifo)}")
    dev.sendq.put(None)
    for t in threads:
        t.join(timeout=TIMEOUT_S)
    # measured energy per task: busy times x the same power curves the controller prices with
    from coinfer.core.instance import Device as Dev

    phone = Dev("phone", 2**33, *POWER, dvfs_levels=LEVELS)
    for r in dev.records.values():
        if "done_s" not in r:
            continue
        radio = 0.0
        if r["split"] < dev.P:
            radio = r["radio_s"] * float(
                radio_power_w(r["rate_Bps"], r["bandwidth_Bps"], POWER[2], CHANNEL_HZ)
            )
        r["energy_j"] = r["compute_s"] * phone.active_power_w(r["freq"]) + radio
    results["tasks"] = list(dev.records.values())
    results["max_abs_err"] = dev.max_err
    results["system"] = {"latency_full_local_s": float(system.device_s[-1, -1]),
                         "num_pieces": dev.P}  # fmt: skip
    Path(out).write_text(json.dumps(results))
    import torch.distributed as dist

    dist.destroy_process_group()


# ----- the launcher -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summarise(results: dict) -> tuple[list[dict], list[dict]]:
    """Per-run measured vs predicted rows, and the per-task rows."""
    tasks = results["tasks"]
    rows = []
    for run_no, run in enumerate(results["runs"]):
        done = [t for t in tasks if t["run"] == run_no and "done_s" in t]
        slots = run["slots"]
        horizon = slots[-1]["end_s"] - slots[0]["start_s"]
        e2e = [t["done_s"] - t["arrival_s"] for t in done]
        svc = [t["done_s"] - t["start_s"] for t in done]
        rows.append({
            "policy": run["policy"], "V": run["V"] if run["V"] is not None else "",
            "slots": len(slots), "wall_s": horizon,
            "overrun_slots": sum(s["overrun_s"] > 0.005 for s in slots),
            "served": len(done), "arrived": sum(s["arrivals"] for s in slots),
            "final_backlog": run["final_backlog"],
            "throughput_rps": len(done) / horizon,
            "energy_per_task_j": statistics.fmean(t["energy_j"] for t in done),
            "predicted_energy_per_task_j": statistics.fmean(t["predicted_energy_j"] for t in done),
            "power_w": sum(t["energy_j"] for t in done) / horizon,
            "service_latency_s": statistics.fmean(svc),
            "predicted_service_latency_s": statistics.fmean(t["predicted_latency_s"] for t in done),
            "latency_mean_s": statistics.fmean(e2e),
            "latency_p95_s": float(np.percentile(e2e, 95)),
            "backlog_mean": statistics.fmean(s["backlog"] for s in slots),
            "backlog_max": max(s["backlog"] for s in slots),
            "virtual_max": max(s["virtual"] for s in slots),
            "share_local": sum(t["split"] == results["system"]["num_pieces"] for t in done) / len(done),
            "share_full_offload": sum(t["split"] == 0 for t in done) / len(done),
            "mean_freq": statistics.fmean(t["freq"] for t in done),
        })  # fmt: skip
    task_rows = [
        {k: t.get(k) for k in ("run", "task", "slot", "split", "freq", "rate_Bps", "bandwidth_Bps",
                               "compute_s", "radio_s", "edge_s", "energy_j", "predicted_energy_j",
                               "predicted_latency_s")}
        | {"service_s": t["done_s"] - t["start_s"], "e2e_s": t["done_s"] - t["arrival_s"]}
        for t in tasks if "done_s" in t
    ]  # fmt: skip
    return rows, task_rows


def _plot(results: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    labels = [f"{r['policy']}" + (f" V={r['V']:g}" if r["V"] != "" else "") for r in rows]
    for run, lab in zip(results["runs"], labels, strict=True):
        t = [s["start_s"] - run["slots"][0]["start_s"] for s in run["slots"]]
        axes[0][0].plot(t, [s["backlog"] for s in run["slots"]], label=lab)
        axes[0][1].plot(t, [s["decision"]["freq"] if s["decision"]["freq"] else np.nan
                            for s in run["slots"]], ".", ms=3, label=lab)  # fmt: skip
    axes[0][0].set_title("task queue Q on the testbed")
    axes[0][0].set_xlabel("time in run (s)")
    axes[0][1].set_title("DVFS level written to the CPU quota (fraction of f_max)")
    axes[0][1].set_xlabel("time in run (s)")
    x = np.arange(len(rows))
    axes[1][0].bar(
        x - 0.2, [r["energy_per_task_j"] for r in rows], 0.4, label="measured (modelled power)"
    )
    axes[1][0].bar(
        x + 0.2,
        [r["predicted_energy_per_task_j"] for r in rows],
        0.4,
        label="controller's prediction",
    )
    axes[1][0].set_xticks(x, labels, fontsize=8)
    axes[1][0].set_ylabel("phone energy per task (J)")
    axes[1][1].bar(x - 0.2, [r["service_latency_s"] for r in rows], 0.4, label="service (measured)")
    axes[1][1].bar(x + 0.2, [r["latency_mean_s"] for r in rows], 0.4, label="end-to-end (measured)")
    axes[1][1].plot(x, [r["predicted_service_latency_s"] for r in rows], "k_", ms=20,
                    label="service (predicted)")  # fmt: skip
    axes[1][1].axhline(LATENCY_MAX_S, color="grey", ls="--", label="L_max")
    axes[1][1].set_xticks(x, labels, fontsize=8)
    axes[1][1].set_ylabel("seconds")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.suptitle(f"CutEdge testbed: {MODEL}, device in a live CPU quota + edge, gloo on loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    import multiprocessing as mp

    from coinfer.profile.cgroup import (
        EMULATION_PERIOD_US,
        CgroupUnavailableError,
        create_cpu_cgroup,
        remove_cpu_cgroup,
    )

    name = f"coinfer-exp6-{os.getpid()}"
    try:
        cg = create_cpu_cgroup(name, MAX_QUOTA, period_us=EMULATION_PERIOD_US)
    except CgroupUnavailableError as exc:
        raise SystemExit(f"exp6 testbed needs a cgroup v1 CPU quota: {exc}") from None

    def _stop(signum, frame):  # turn SIGTERM into an exception so the finally below runs
        raise SystemExit(f"stopped by signal {signum}")

    old = signal.signal(signal.SIGTERM, _stop)
    ctx = mp.get_context("spawn")
    procs = []
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "device.json")
            port = _free_port()
            procs = [ctx.Process(target=edge_main, args=(port,), name="edge"),
                     ctx.Process(target=device_main, args=(port, str(cg.path), out), name="device")]  # fmt: skip
            for p in procs:
                p.start()
            deadline = time.time() + 300
            while any(p.is_alive() for p in procs) and time.time() < deadline:
                if any(p.exitcode not in (None, 0) for p in procs):
                    break
                time.sleep(0.2)
            bad = [f"{p.name} exit {p.exitcode}" for p in procs if p.exitcode not in (0,)]
            if bad:
                raise SystemExit(f"exp6 testbed failed: {', '.join(bad)}")
            results = json.loads(Path(out).read_text())
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
                if p.is_alive():
                    p.kill()
        remove_cpu_cgroup(cg)
        signal.signal(signal.SIGTERM, old)
    rows, task_rows = _summarise(results)
    write_csv(RESULTS / "exp6_testbed.csv", rows)
    write_csv(RESULTS / "exp6_testbed_tasks.csv", task_rows)
    _plot(results, rows, RESULTS / "exp6_testbed.png")
    log(f"profiled device CPU per piece (ms): {[round(x * 1e3, 2) for x in results['cpu_s']]}")
    log(f"profiled edge wall per piece (ms): {[round(x * 1e3, 2) for x in results['edge_s']]}")
    log(f"outputs vs unsplit model: max abs error {results['max_abs_err']:.2e}")
    for r in rows:
        log(f"{r['policy']:8s} V={r['V']!s:>5} served {r['served']}/{r['arrived']} "
            f"thr={r['throughput_rps']:.2f}/s e={r['energy_per_task_j']:.3f} J (pred {r['predicted_energy_per_task_j']:.3f}) "
            f"svc={r['service_latency_s']:.3f} s (pred {r['predicted_service_latency_s']:.3f}) "
            f"e2e={r['latency_mean_s']:.3f} s p95={r['latency_p95_s']:.3f} Q={r['backlog_mean']:.1f}/{r['backlog_max']} "
            f"local={r['share_local']:.2f} off={r['share_full_offload']:.2f} f={r['mean_freq']:.2f} overruns={r['overrun_slots']}")  # fmt: skip
    log(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
