"""Our runtime vs ``torch.distributed.pipelining`` (PipelineStage + ScheduleGPipe over gloo).

Same model, same split (coinfer's captured stages, balanced by measured piece times), same
number of processes with one thread each, batch-1 requests::

    python benchmarks/bench_vs_pipelining.py            # the cases of the brief, 3 repeats
    python benchmarks/bench_vs_pipelining.py --quick    # resnet18 2 stages, 1 repeat

Throughput is requests / wall time of the whole stream for BOTH sides (the peer's
``schedule.step`` on all requests; ours from the first input released to the last output back).
p50 latency is per micro-batch from entering stage 0 to leaving the last stage (the peer's
forward hooks; ours from release at the source to the output back at the source, i.e. ours also
pays the two extra source hops). ``limit`` = min(stages, cores) x one-process one-thread
throughput. Results: ``benchmarks/results/vs_pipelining.{json,md}`` with the host load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime_common import (
    RESULTS,
    balanced_cuts,
    host_load,
    median,
    plain_cluster,
    single_process_rps,
    write_results,
)

CASES = [  # (model, stages, microbatch)
    ("resnet50", 2, 1),
    ("resnet50", 3, 1),
    ("resnet18", 2, 1),
    ("resnet18", 2, 4),
    ("vgg16", 2, 1),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peer_rank(
    rank: int,
    world: int,
    port: int,
    model: str,
    cuts: tuple[int, ...],
    requests: int,
    mb: int,
    q,
    emulate: dict | None = None,
) -> None:
    """One rank of the torch.distributed.pipelining baseline.

    ``emulate``: keyword arguments of ``coinfer.runtime.emulation.apply`` (device, run_id,
    cpu_quota, threads, use_cgroup, cpu); applied after joining the group, as coinfer's worker
    does, and released at the end (the rank's result then also carries the emulation applied).
    """
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from coinfer.graph import capture, split
    from coinfer.runtime.prepare import make_inputs
    from coinfer.runtime.stages import as_tuple
    from coinfer.zoo import load_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, example = load_model(model, None)
    stages = split(capture(net, example), list(cuts))
    xs = tuple(torch.cat([x[0] for x in make_inputs(example, mb, 0)]) for _ in range(1))
    with torch.inference_mode():
        for k in range(rank):
            xs = as_tuple(stages[k](*xs))
    mod = stages[rank]
    del stages, net
    store = dist.TCPStore(
        "127.0.0.1", port, world_size=world, is_master=rank == 0, timeout=dt.timedelta(seconds=300)
    )
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    emu = None
    if emulate is not None:
        from coinfer.runtime import emulation

        emu = emulation.apply(**emulate)
    try:
        stamps: list[float] = []
        if rank == 0:
            mod.register_forward_pre_hook(lambda *_: stamps.append(time.time()))
        if rank == world - 1:
            mod.register_forward_hook(lambda *_: stamps.append(time.time()))
        stage = PipelineStage(mod, rank, world, torch.device("cpu"), input_args=tuple(xs))
        sched = ScheduleGPipe(stage, n_microbatches=requests // mb)
        batch = torch.cat([x[0] for x in make_inputs(example, requests, 1)])
        with torch.no_grad():
            # warm-up with the same number of micro-batches (shapes and buffers)
            sched.step(batch) if rank == 0 else sched.step()
            stamps.clear()
            dist.barrier()
            t0 = time.time()
            sched.step(batch) if rank == 0 else sched.step()
            dist.barrier()
            wall = time.time() - t0
        if emu is None:
            q.put((rank, wall, stamps))
        else:
            q.put((rank, wall, stamps, emu.to_dict()))
        dist.destroy_process_group()
    finally:
        if emu is not None:
            emulation.release(emu)


def run_peer(
    model: str,
    cuts: tuple[int, ...],
    requests: int,
    mb: int,
    *,
    emulate: list[dict] | None = None,
    timeout_s: float = 1200.0,
) -> dict:
    """Run the peer once; ``emulate[r]``: ``emulation.apply`` keywords for rank ``r`` (the
    caller removes leftover cgroups, e.g. ``emulation.cleanup_stale(run_id)``). Raises when a
    rank dies or nothing arrives for ``timeout_s``; the other ranks are then terminated."""
    world = len(cuts) + 1
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(
            target=_peer_rank,
            args=(r, world, port, model, cuts, requests, mb, q),
            kwargs={} if emulate is None else {"emulate": emulate[r]},
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    res = {}
    emus = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(res) < world:
            try:
                msg = q.get(timeout=2.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"peer rank(s) {dead} died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"peer: no result within {timeout_s:g} s") from None
                continue
            rank, wall, stamps = msg[:3]
            res[rank] = (wall, stamps)
            if len(msg) > 3:
                emus[rank] = msg[3]
            deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    wall = max(w for w, _ in res.values())
    ins, outs = res[0][1], res[world - 1][1]
    lat = sorted(o - i for i, o in zip(ins, outs, strict=False))
    out: dict = {
        "throughput_rps": requests / wall,
        "latency_p50_s": lat[len(lat) // 2] if lat else float("nan"),
    }
    if emus:
        out["emulation"] = [emus[r] for r in sorted(emus)]
    return out


def run_ours(
    model: str, cuts: tuple[int, ...], n_pieces: int, requests: int, mb: int, check: bool
) -> dict[str, float]:
    from coinfer.core.plans import Metrics, Plan, Stage
    from coinfer.runtime import run

    names = [f"d{i}" for i in range(len(cuts) + 1)]
    bounds = [-1, *cuts]
    stages = tuple(
        Stage(bounds[i] + 1, cuts[i] if i < len(cuts) else n_pieces - 1, (names[i],))
        for i in range(len(names))
    )
    plan = Plan("manual", "throughput", stages, Metrics(0.0, 0.0))
    r = run(
        model,
        plain_cluster(names),
        plan,
        requests=requests,
        microbatch=mb,
        check=check,
        timeout_s=600,
    )
    return run_summary(r)


def run_summary(r: Any) -> dict[str, Any]:
    """Our side's figures from a ``RunResult``: whole-job and steady throughput, p50, check."""
    return {
        "throughput_rps": r.requests / r.wall_s,
        "steady_throughput_rps": r.throughput_rps,
        "latency_p50_s": r.latency_p50_s,
        "max_abs_error": r.max_abs_error,
        "emulation": r.emulation_mode,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--cases", default=None, help="e.g. resnet18:2:1,vgg16:2:1")
    ap.add_argument("--append", action="store_true", help="merge into the existing results file")
    args = ap.parse_args()
    cases = CASES
    if args.cases:
        cases = [(m, int(s), int(b)) for m, s, b in (c.split(":") for c in args.cases.split(","))]
    elif args.quick:
        cases = [("resnet18", 2, 1)]
    repeats = 1 if args.quick else args.repeats
    load_before = host_load()
    out = RESULTS / "vs_pipelining.json"
    data: dict = {
        "cases": [],
        "host_load_before": load_before,
        "requests": args.requests,
        "repeats": repeats,
    }
    if args.append and out.exists():
        data["cases"] = json.loads(out.read_text()).get("cases", [])
    times_cache: dict[str, list[float]] = {}
    for model, nst, mb in cases:
        try:
            case = one_case(model, nst, mb, args.requests, repeats, times_cache)
        except Exception as exc:  # a failing case must not lose the others' numbers
            case = {
                "model": model,
                "stages": nst,
                "microbatch": mb,
                "failed": f"{type(exc).__name__}: {exc}",
            }
        case["host_load_1m"] = host_load()["loadavg_1m"]
        key = (model, nst, mb)
        data["cases"] = [
            c for c in data["cases"] if (c["model"], c["stages"], c["microbatch"]) != key
        ] + [case]
        data["host_load_after"] = host_load()
        _write(data, args.requests)


def one_case(model: str, nst: int, mb: int, requests: int, repeats: int, times_cache: dict) -> dict:
    from coinfer.runtime.measure import piece_times

    if model not in times_cache:
        times_cache[model] = piece_times(model, None)[0]
    cuts = balanced_cuts(times_cache[model], nst)
    single = median([single_process_rps(model, min(requests, 16)) for _ in range(repeats)])
    peer, ours = [], []
    for i in range(repeats):
        peer.append(run_peer(model, cuts, requests, mb))
        ours.append(run_ours(model, cuts, len(times_cache[model]), requests, mb, check=i == 0))
        print(model, nst, mb, "peer", peer[-1], "ours", ours[-1], flush=True)
    p_rps = median([p["throughput_rps"] for p in peer])
    o_rps = median([o["throughput_rps"] for o in ours])
    p_lat = median([p["latency_p50_s"] for p in peer])
    o_lat = median([o["latency_p50_s"] for o in ours])
    limit = min(nst, 2) * single
    return {
        "model": model,
        "stages": nst,
        "microbatch": mb,
        "repeats": repeats,
        "cuts": list(cuts),
        "single_1thread_rps": single,
        "limit_rps": limit,
        "peer": peer,
        "ours": ours,
        "peer_rps": p_rps,
        "ours_rps": o_rps,
        "throughput_ratio": o_rps / p_rps,
        "fraction_of_limit": o_rps / limit,
        "peer_p50_s": p_lat,
        "ours_p50_s": o_lat,
        "p50_latency_ratio": o_lat / p_lat,
    }


def _write(data: dict, requests: int) -> None:
    rows = []
    for c in data["cases"]:
        if "failed" in c:
            rows.append(
                f"| {c['model']} | {c['stages']} | {c['microbatch']} | failed: {c['failed'][:90]} | | | | | | | | | |"
            )
            continue
        rows.append(
            f"| {c['model']} | {c['stages']} | {c['microbatch']} | {c['single_1thread_rps']:.1f} | {c['peer_rps']:.1f} | "
            f"{c['ours_rps']:.1f} | {c['throughput_ratio']:.2f}x | {c['fraction_of_limit']:.0%} | "
            f"{c['peer_p50_s'] * 1e3:.0f} | {c['ours_p50_s'] * 1e3:.0f} | {c['p50_latency_ratio']:.2f} | "
            f"{c['ours'][0]['max_abs_error']} | {c['host_load_1m']:.1f} |"
        )
    table = [
        "# coinfer runtime vs torch.distributed.pipelining (GPipe, gloo, 1 thread per process)",
        "",
        f"{requests} batch-1 requests per run, medians of each case's repeats; same split (balanced by measured "
        "piece times), same processes. `limit` = min(stages, 2 cores) x the one-process one-thread figure. "
        "The host (2 cores) was shared with other jobs: the load column is the 1-minute load average after the case.",
        "",
        "| model | stages | mb | 1-proc 1-thread req/s | pipelining req/s | ours req/s | ours/peer | ours/limit | peer p50 ms | ours p50 ms | p50 ratio | max abs err | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_results("vs_pipelining", data, table)


if __name__ == "__main__":
    main()
