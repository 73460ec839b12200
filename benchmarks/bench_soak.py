"""Soak: 10,000 requests through a 3-device pipeline in one session — none lost, and memory that
stays flat (resident memory of the coordinator, the workers and the zygote from request 1,000
to request 10,000).

The testbed's devices d0, d1, d2 (the local cluster without d3), a model split ``even`` over the
three (default ``tiny_cnn``, so 10,000 requests take a minute, not an hour), requests submitted
in a closed loop (at most four windows outstanding). Every ``--every`` completed requests the
resident memory (``VmRSS``) of every process of the session is recorded; one output in 100 is
compared with the unsplit model.

Results go to ``benchmarks/results/soak.json`` and ``soak.md``; the host's load is recorded.

    python benchmarks/bench_soak.py
    python benchmarks/bench_soak.py --requests 2000 --model resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from bench_runtime_common import RESULTS, host_load


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def processes_of(session: Any) -> dict[str, int]:
    pids = {"coordinator": os.getpid()}
    for d, proc in session._epoch.procs.items():
        pids[f"worker {d}"] = proc.pid
    if session._zygote is not None:
        pids["zygote"] = session._zygote.proc.pid
    return pids


def main() -> None:
    import torch

    from coinfer.cli.session_run import request_inputs
    from coinfer.cluster import default_local_cluster
    from coinfer.plan import plan as make_plan
    from coinfer.profile.costmodel import build_instance
    from coinfer.runtime.results import reference_outputs
    from coinfer.runtime.session import Session
    from coinfer.zoo import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_cnn")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = ap.parse_args()

    base = default_local_cluster()
    keep = ("d0", "d1", "d2")
    from dataclasses import replace

    cluster = replace(
        base,
        devices=tuple(d for d in base.devices if d.name in keep),
        links=tuple(lk for lk in base.links if lk.src in keep and lk.dst in keep),
    )
    inst = build_instance(args.model, cluster)
    plan = make_plan(inst, "even", "throughput")
    torch.manual_seed(0)
    model, example = load_model(args.model)
    load_start = host_load()
    samples: list[dict[str, Any]] = []
    checked: dict[int, Any] = {}
    done = threading.Semaphore(0)
    t0 = time.perf_counter()
    with Session(args.model, cluster, plan, instance=inst, timeout_s=60) as s:
        slots = threading.Semaphore(4 * s.window)
        completed = [0]
        lock = threading.Lock()

        def finished(fut: Any, i: int) -> None:
            with lock:
                completed[0] += 1
            if i % 100 == 0 and fut.exception() is None:
                checked[i] = fut.result()
            slots.release()
            done.release()

        inputs = {}
        next_mark = args.every
        for i in range(args.requests):
            slots.acquire()
            xs = request_inputs(example, i, 1, 0)
            if i % 100 == 0:
                inputs[i] = xs
            s.submit(xs).add_done_callback(lambda f, i=i: finished(f, i))
            with lock:
                n = completed[0]
            if n >= next_mark:
                pids = processes_of(s)
                samples.append({"completed": n, "t_s": time.perf_counter() - t0,
                                "rss_kib": {k: rss_kib(p) for k, p in pids.items()}})  # fmt: skip
                print(f"  {n:6d} done  rss total "
                      f"{sum(v or 0 for v in samples[-1]['rss_kib'].values()) / 1024:.0f} MiB",
                      flush=True)  # fmt: skip
                next_mark += args.every
        for _ in range(args.requests):
            done.acquire()
        pids = processes_of(s)
        samples.append({"completed": args.requests, "t_s": time.perf_counter() - t0,
                        "rss_kib": {k: rss_kib(p) for k, p in pids.items()}})  # fmt: skip
    rep = s.report
    torch.set_num_threads(s.check_threads)
    worst = 0.0
    with torch.inference_mode():
        for i, outs in checked.items():
            for r, o in zip(reference_outputs(model, inputs[i]), outs, strict=True):
                worst = max(worst, float((r - o).abs().max()))
    first = next(x for x in samples if x["completed"] >= 1000)
    last = samples[-1]
    tot = lambda x: sum(v or 0 for v in x["rss_kib"].values())  # noqa: E731
    growth = tot(last) / tot(first) - 1.0
    per_process = {
        k: (last["rss_kib"].get(k) or 0) / v - 1.0 for k, v in first["rss_kib"].items() if v
    }
    result = {
        "model": args.model,
        "devices": list(keep),
        "plan": [str(st) for st in plan.stages],
        "requests": args.requests,
        "submitted": rep.submitted,
        "completed": rep.completed,
        "lost": rep.lost,
        "duplicated": rep.duplicated,
        "throughput_rps": rep.throughput_rps(),
        "seconds": time.perf_counter() - t0,
        "rss_growth_1000_to_end": growth,
        "rss_growth_per_process": per_process,
        "checked": len(checked),
        "max_abs_error": worst,
        "samples": samples,
        "load_start": load_start,
        "load_end": host_load(),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    md = [
        f"Soak: {args.requests} requests of {args.model} through {', '.join(keep)} "
        f"({' | '.join(result['plan'])}) in one session: {rep.completed} completed, {rep.lost} "
        f"lost, {rep.duplicated} duplicated, {rep.throughput_rps():.0f} req/s; {len(checked)} "
        f"outputs checked, max |error| {worst}.",
        "",
        f"Resident memory (all processes) from request {first['completed']} to {last['completed']}: "
        f"{tot(first) / 1024:.0f} -> {tot(last) / 1024:.0f} MiB ({growth:+.2%}).",
        "",
        "| process | RSS at 1,000 (MiB) | RSS at end (MiB) | growth |",
        "|---|---|---|---|",
    ]
    for k, v in first["rss_kib"].items():
        end = last["rss_kib"].get(k) or 0
        md.append(
            f"| {k} | {(v or 0) / 1024:.0f} | {end / 1024:.0f} | {per_process.get(k, 0):+.2%} |"
        )
    with open(args.out.replace(".json", ".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
