"""Shared helpers of the runtime benchmarks (balanced cuts, plain clusters, baselines, host load)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def host_load() -> dict[str, Any]:
    """Load averages, core count and the VM's cumulative steal time: the CPU is shared, inside
    the VM (load) and by the host (steal: the same stage's CPU time per call varied 7 -> 17 ms
    within minutes while steal grew), so every result records both."""
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg_1m": one,
        "loadavg_5m": five,
        "loadavg_15m": fifteen,
        "cores": os.cpu_count(),
        "steal_s": _steal_s(),
    }


def _steal_s() -> float | None:
    """Seconds of CPU the hypervisor took from this VM since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def balanced_cuts(times: Sequence[float], stages: int) -> tuple[int, ...]:
    """Cuts (0-based, after piece) minimising the largest stage sum (exact DP, O(P^2 S))."""
    n = len(times)
    pre = [0.0]
    for t in times:
        pre.append(pre[-1] + t)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    arg = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for j in range(s, n + 1):
            for i in range(s - 1, j):
                v = max(best[s - 1][i], pre[j] - pre[i])
                if v < best[s][j]:
                    best[s][j], arg[s][j] = v, i
    cuts = []
    j = n
    for s in range(stages, 1, -1):
        j = arg[s][j]
        cuts.append(j - 1)
    return tuple(sorted(cuts))


def plain_cluster(
    names: Sequence[str],
    *,
    quotas: Sequence[float | None] | None = None,
    bandwidth_mbps: float = 100_000.0,
    latency_ms: float = 0.0,
) -> Any:
    """A cluster of ``names`` with one thread each, optional CPU quotas and uniform fast links."""
    from coinfer.cluster import cluster_from_yaml

    quotas = quotas or [None] * len(names)
    devs = []
    for n, q in zip(names, quotas, strict=True):
        emu = "{threads: 1}" if q is None else f"{{cpu_quota: {q}, threads: 1}}"
        devs.append(f"  - {{name: {n}, speed: {{gflops: 10}}, memory: 8GiB, emulate: {emu}}}")
    links = [
        f"  - {{src: {a}, dst: {b}, bandwidth_mbps: {bandwidth_mbps}, latency_ms: {latency_ms}}}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    text = (
        f"name: bench\nsource: {names[0]}\ndevices:\n"
        + "\n".join(devs)
        + ("\nlinks:\n" + "\n".join(links) if links else "\nlinks: []")
        + "\n"
    )
    return cluster_from_yaml(text)


def single_process_rps(
    model_spec: str, requests: int, threads: int = 1, microbatch: int = 1
) -> float:
    """Requests/s of the plain (unsplit) model in this process with ``threads`` threads."""
    from coinfer.runtime.prepare import make_inputs
    from coinfer.zoo import load_model

    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, example = load_model(model_spec, None)
        xs = make_inputs(example, requests, 0)
        batches = [
            tuple(torch.cat([x[j] for x in xs[i : i + microbatch]]) for j in range(len(example)))
            for i in range(0, requests, microbatch)
        ]
        with torch.inference_mode():
            model(*batches[0])
            t0 = time.perf_counter()
            for b in batches:
                model(*b)
            return requests / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def write_results(name: str, data: dict[str, Any], table: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
