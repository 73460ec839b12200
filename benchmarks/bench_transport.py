"""Per-hop overhead of our transport on loopback vs raw ``torch.distributed`` send/recv (gloo).

Two processes ping-pong a tensor ``iters`` times; one hop = round trip / 2. Raw = blocking
``dist.send``/``dist.recv``; ours = :class:`coinfer.runtime.transport.Transport` (contract check,
sender thread + bounded queue, receive posted ahead, unshaped link). Also streams 1 MB messages
one way to measure bandwidth. Medians of ``--repeats``; results in
``benchmarks/results/transport.{json,md}`` with the host load::

    python benchmarks/bench_transport.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime_common import host_load, median, write_results

SIZES = {"small (1 KiB)": 256, "1 MiB": 262_144}  # float32 elements


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, iters: int, q) -> None:
    from coinfer.runtime.transport import Transport, WireTensorSpec

    torch.set_num_threads(1)
    store = dist.TCPStore(
        "127.0.0.1", port, world_size=2, is_master=rank == 0, timeout=dt.timedelta(seconds=60)
    )
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    other = 1 - rank
    out = {}
    for label, n in SIZES.items():
        buf = torch.randn(n)
        # raw blocking send/recv ping-pong
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            if rank == 0:
                dist.send(buf, other)
                dist.recv(buf, other)
            else:
                dist.recv(buf, other)
                dist.send(buf, other)
        raw = (time.perf_counter() - t0) / iters / 2
        # ours
        meta = [WireTensorSpec((n,), "float32")]
        tr = Transport(rank, ["a", "b"], {}, timeout_s=60)
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(iters):
            if rank == 0:
                tr.send(other, 2 * i, [buf], meta)
                buf = tr.post_recv(other, 2 * i + 1, meta).wait(60)[0]
            else:
                buf = tr.post_recv(other, 2 * i, meta).wait(60)[0]
                tr.send(other, 2 * i + 1, [buf], meta)
        ours = (time.perf_counter() - t0) / iters / 2
        tr.flush()
        out[label] = {"raw_hop_s": raw, "ours_hop_s": ours}
    # one-way stream of 1 MiB messages through our transport
    meta = [WireTensorSpec((SIZES["1 MiB"],), "float32")]
    tr = Transport(rank, ["a", "b"], {}, timeout_s=60)
    dist.barrier()
    t0 = time.perf_counter()
    if rank == 0:
        x = torch.randn(SIZES["1 MiB"])
        for i in range(iters):
            tr.send(other, 10_000 + i, [x], meta)
        tr.flush()
    else:
        pend = [tr.post_recv(other, 10_000 + i, meta) for i in range(min(2, iters))]
        for i in range(iters):
            pend.pop(0).wait(60)
            if i + 2 < iters:
                pend.append(tr.post_recv(other, 10_000 + i + 2, meta))
    dist.barrier()
    out["stream_1MiB_GBps"] = iters * 4 * SIZES["1 MiB"] / (time.perf_counter() - t0) / 1e9
    if rank == 0:
        q.put(out)
    dist.destroy_process_group()


def once(iters: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, iters, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = q.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    load = host_load()
    runs = [once(args.iters) for _ in range(repeats)]
    rows = []
    for label in SIZES:
        raw = median([r[label]["raw_hop_s"] for r in runs])
        ours = median([r[label]["ours_hop_s"] for r in runs])
        rows.append(
            f"| {label} | {raw * 1e6:.0f} | {ours * 1e6:.0f} | {(ours - raw) * 1e6:+.0f} | {ours / raw:.2f} |"
        )
    gbps = median([r["stream_1MiB_GBps"] for r in runs])
    data = {
        "runs": runs,
        "iters": args.iters,
        "repeats": repeats,
        "host_load": load,
        "host_load_after": host_load(),
    }
    table = [
        "# Transport per-hop overhead on loopback (gloo, 1 thread per process)",
        "",
        f"Ping-pong, {args.iters} round trips, medians of {repeats}; one hop = RTT / 2. Host load (1 min) "
        f"{load['loadavg_1m']:.1f} on {load['cores']} shared cores.",
        "",
        "| tensor | raw send/recv µs | ours µs | overhead µs | ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"One-way stream of 1 MiB messages through our transport: {gbps:.2f} GB/s.",
    ]
    write_results("transport", data, table)


if __name__ == "__main__":
    main()
