"""On-device profiler: each node's and each piece's latency on this host, cached.

What is measured, per pass (warm-up passes excluded, ``repeats`` passes kept):

* every **node**, by running the captured fx graph node by node (an :class:`torch.fx.Interpreter`
  that times each compute node's call);
* every **piece**, by running the split stage modules (one stage per piece) in a chain, each
  fed the real outputs of the previous one;
* the **whole model** (eager ``model(*inputs)``), as the reference for stage overhead.

Statistics: median, mean and inter-quartile range per item. Which one is "the" time: without a
quota, the median wall time. Under a CPU quota below the thread count, CFS throttling stalls
whatever call happens to be running when the period's quota runs out, so one call's wall time is
its CPU time plus a random stall: the per-item wall mean converges only after many hundreds of
periods (measured on ResNet-18 at 0.3 core, 20 periods of 100 ms: the 14-piece middle stage came
out at 25 ms, a third of its true 52 ms, while the last stage doubled). Throttling charges every
CPU-microsecond the same wait, so ``time_s`` under a quota is the item's *CPU time* (low variance,
process CPU clock) times the chain's measured wall/CPU ratio: the pieces' times then sum to the
measured wall time of the whole chain, and each piece gets its fair share of the stalls.

Quotas: with ``quota`` set the measurement runs in a child process that is moved into a cgroup v1
CPU quota (root) once the model is loaded, before the warm-up passes, with the same CFS period as
the runtime's workers (:data:`~coinfer.profile.cgroup.EMULATION_PERIOD_US`) and, for one thread,
pinned to one CPU as they are: CPU time per call grows under throttling (the cache is cold after
every stall: ResNet-18 at 0.5 core used 41-43 ms of CPU per pass against 34 ms unthrottled), so a
profile is only a prediction for the runtime if it is measured the way the runtime runs. Without
cgroups it falls back to a thread limit only, and the profile says so.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CoinferError, InputError
from ._isolate import ProgressFn, run_child
from .allocator import keep_freed_memory
from .cache import ProfileKey, default_host, get_or_measure, graph_hash
from .cgroup import (
    EMULATION_PERIOD_US,
    CgroupUnavailableError,
    cgroup_support,
    cpu_quota_cgroup,
)
from .features import graph_node_records

# Default passes: 2 warm-up (first-call allocations, oneDNN primitive caches) then 10 timed.
DEFAULT_WARMUP = 2
DEFAULT_REPEATS = 10
# Under throttling, keep measuring until the timed passes span this many seconds: 20 CFS periods
# of 100 ms, so each item sees many throttle events and the mean converges to the steady-state
# (throughput) time; a tiny model otherwise fits inside one period's quota and looks unthrottled.
THROTTLED_MIN_DURATION_S = 2.0
# ...but never more passes than this (tiny models at ~0.1 ms per pass).
MAX_PASSES = 20_000


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of repeated timings (seconds)."""

    median_s: float
    mean_s: float
    iqr_s: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        xs = sorted(samples)
        if len(xs) >= 4:
            q = statistics.quantiles(xs, n=4, method="inclusive")
            iqr = q[2] - q[0]
        else:
            iqr = xs[-1] - xs[0] if xs else 0.0
        return cls(statistics.median(xs), statistics.fmean(xs), iqr, len(xs))

    def estimate(self, throttled: bool) -> float:
        """The time to use (see module docstring): mean under throttling, else median."""
        return self.mean_s if throttled else self.median_s

    def to_dict(self, throttled: bool) -> dict[str, float]:
        return {
            "time_s": self.estimate(throttled),
            "median_s": self.median_s,
            "mean_s": self.mean_s,
            "iqr_s": self.iqr_s,
        }


def is_throttled(quota: float | None, threads: int) -> bool:
    """A quota below the threads' demand makes CFS throttle the process."""
    return quota is not None and quota < threads


# ----- the in-process measurement --------------------------------------------------------------


def _node_timer(
    gm: Any, names: set[str], sink: dict[str, float], cpu_sink: dict[str, float]
) -> Any:
    import torch.fx as fx

    class _Timer(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            if n.name not in names:
                return super().run_node(n)
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = super().run_node(n)
            sink[n.name] = time.perf_counter() - t0
            cpu_sink[n.name] = time.process_time() - c0
            return out

    return _Timer(gm)


def measure(
    spec: str,
    *,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
    threads: int = 1,
    quota: float | None = None,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    progress: ProgressFn | None = None,
    min_duration_s: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Measure ``spec`` in THIS process (sets torch's intra-op threads; restores them after).

    ``quota`` decides which statistic becomes ``time_s`` and, when it throttles, the minimum
    measured duration (``min_duration_s``, default :data:`THROTTLED_MIN_DURATION_S`); placing
    the process under the quota is the caller's job (see :func:`profile_model`). ``on_ready`` is
    called once the model is loaded, captured and split, right before the warm-up passes: the
    parent uses it to move this process into the cgroup, so imports and capture run at full speed.
    Freed memory stays in the process from here on (:func:`~.allocator.keep_freed_memory`), as
    in the runtime's workers, so a piece is measured at the CPU cost it has in a run.
    """
    import torch

    from ..graph import capture, split
    from ..zoo import load_model

    if repeats < 1 or warmup < 0:
        raise InputError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    keep_freed_memory()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        model, inputs = load_model(spec, tuple(input_shape) if input_shape else None)
        graph = capture(model, inputs, max_pieces=max_pieces, name=spec)
        captured = getattr(graph, "_captured", None)
        if captured is None:
            raise CoinferError(
                f"{spec}: the captured graph has no executable fx graph to time node by node"
            )
        names = {n.name for n in graph.nodes}
        stages = split(graph, list(range(graph.num_pieces - 1)))
        node_samples: dict[str, list[float]] = {n: [] for n in names}
        node_cpu: dict[str, list[float]] = {n: [] for n in names}
        piece_samples: list[list[float]] = [[] for _ in stages]
        piece_cpu: list[list[float]] = [[] for _ in stages]
        model_samples: list[float] = []
        if on_ready is not None:
            on_ready()
        throttled = is_throttled(quota, threads)
        if min_duration_s is None:
            min_duration_s = THROTTLED_MIN_DURATION_S if throttled else 0.0
        total = warmup + repeats
        timed_s = 0.0
        timed_cpu_s = 0.0
        it = 0
        with torch.no_grad():
            while it < total or (timed_s < min_duration_s and it < MAX_PASSES):
                t_pass = time.perf_counter()
                c_pass = time.process_time()
                sink: dict[str, float] = {}
                cpu_sink: dict[str, float] = {}
                _node_timer(captured.gm, names, sink, cpu_sink).run(*inputs)
                x: tuple[Any, ...] = tuple(inputs)
                ptimes = []
                pcpu = []
                for stage in stages:
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    x = stage(*x)
                    ptimes.append(time.perf_counter() - t0)
                    pcpu.append(time.process_time() - c0)
                t0 = time.perf_counter()
                model(*inputs)
                mtime = time.perf_counter() - t0
                if it >= warmup:
                    for k, v in sink.items():
                        node_samples[k].append(v)
                        node_cpu[k].append(cpu_sink[k])
                    for i, v in enumerate(ptimes):
                        piece_samples[i].append(v)
                        piece_cpu[i].append(pcpu[i])
                    model_samples.append(mtime)
                    timed_s += time.perf_counter() - t_pass
                    timed_cpu_s += time.process_time() - c_pass
                it += 1
                if progress is not None:
                    # progress counts the required passes; extra time-filling passes show as done
                    progress(min(it, total), total)
    finally:
        torch.set_num_threads(old_threads)

    # Under a quota: wall seconds per CPU second over all timed passes (see the module docstring).
    stall_factor = timed_s / timed_cpu_s if throttled and timed_cpu_s > 0 else 1.0
    records = graph_node_records(graph)
    node_rows = []
    node_time: dict[str, float] = {}
    for rec in records:
        st = Stats.of(node_samples[rec["name"]] or [0.0])
        rec.update(st.to_dict(throttled))
        cpu = node_cpu[rec["name"]]
        rec["cpu_s"] = statistics.fmean(cpu) if cpu else 0.0
        if throttled:
            rec["time_s"] = rec["cpu_s"] * stall_factor
        node_time[rec["name"]] = rec["time_s"]
        node_rows.append(rec)
    piece_rows = []
    for p, samples, cpu in zip(graph.pieces, piece_samples, piece_cpu, strict=True):
        st = Stats.of(samples)
        row = {"index": p.index, "nodes": list(p.nodes), "flops": p.flops, **st.to_dict(throttled)}
        row["cpu_s"] = statistics.fmean(cpu) if cpu else 0.0
        if throttled:
            row["time_s"] = row["cpu_s"] * stall_factor
        row["nodes_sum_s"] = sum(node_time.get(n, 0.0) for n in p.nodes)
        row["overhead_s"] = row["time_s"] - row["nodes_sum_s"]
        piece_rows.append(row)
    mst = Stats.of(model_samples)
    return {
        "model": spec,
        "input_shape": [int(d) for d in graph.inputs[0].shape] if graph.inputs else None,
        "max_pieces": max_pieces,
        "graph_hash": graph_hash(graph),
        "threads": int(threads),
        "quota": quota,
        "throttled": throttled,
        "warmup": warmup,
        "repeats": repeats,
        "passes": len(model_samples),
        "timed_s": timed_s,
        "timed_cpu_s": timed_cpu_s,
        "torch": torch.__version__,
        "nodes": node_rows,
        "pieces": piece_rows,
        "model_time": mst.to_dict(throttled),
        "pieces_sum_s": sum(r["time_s"] for r in piece_rows),
        "stall_factor": stall_factor,
        "nodes_sum_s": sum(node_time.values()),
    }


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0.0


def profile_model(
    spec: str,
    *,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
    threads: int = 1,
    quota: float | None = None,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    device: str | None = None,
    use_cache: bool = True,
    refresh: bool = False,
    cache_directory: Path | None = None,
    progress: ProgressFn | None = None,
    notice: Callable[[str], None] | None = None,
    graph: Any | None = None,
) -> tuple[dict[str, Any], bool]:
    """Profile ``spec`` on this host, optionally under a CPU quota; returns ``(profile, cache_hit)``.

    Parameters
    ----------
    spec, input_shape, max_pieces
        The model, as for :func:`coinfer.zoo.load_model` / :func:`coinfer.graph.capture`.
    threads, quota
        Intra-op threads, and the CPU quota in cores (``None``: unlimited).
    device
        Name recorded in the profile and the cache key (default: ``host-q<quota>-t<threads>``).
    use_cache, refresh
        Read/write the profile cache; ``refresh`` re-measures even on a hit.
    notice
        Called with a one-line message when the quota cannot be applied (fallback to threads)
        or the machine was busier than its cores while measuring.
    graph
        The already captured graph of ``spec`` at this shape and ``max_pieces`` (skips a capture
        that only serves to compute the cache key).

    Raises
    ------
    InputError
        Bad model spec or shape (from the zoo / capture).
    """
    import torch

    from ..graph import capture
    from ..zoo import load_model

    if quota is not None and not quota > 0:
        raise InputError(f"--cpu-quota must be > 0 cores (got {quota})")
    if threads < 1:
        raise InputError(f"--threads must be >= 1 (got {threads})")
    emulation = "none" if quota is None else "cgroup"
    ok, why = cgroup_support()
    effective_quota = quota
    if quota is not None and not ok:
        emulation = f"threads only ({why})"
        effective_quota = None
        if notice is not None:
            notice(
                f"cannot apply a {quota:g}-core CPU quota: {why}; measuring with {threads} thread(s) only"
            )
    # The key needs the graph hash: capture here (cheap next to the measurement itself).
    if graph is None:
        old = torch.get_num_threads()
        try:
            model, inputs = load_model(spec, tuple(input_shape) if input_shape else None)
            graph = capture(model, inputs, max_pieces=max_pieces, name=spec)
        finally:
            torch.set_num_threads(old)
    host = default_host()
    qtag = "none" if effective_quota is None else f"{effective_quota:g}"
    key = ProfileKey(
        model=spec,
        graph_hash=graph_hash(graph),
        device=device or f"{host}-q{qtag}-t{threads}",
        host=host,
        dtype="float32",
        batch=int(graph.inputs[0].shape[0]) if graph.inputs and graph.inputs[0].shape else 1,
        threads=int(threads),
        quota=effective_quota,
        torch=torch.__version__,
        max_pieces=max_pieces,
    )
    args = {
        "spec": spec,
        "input_shape": list(input_shape) if input_shape else None,
        "max_pieces": max_pieces,
        "threads": int(threads),
        "quota": effective_quota,
        "repeats": int(repeats),
        "warmup": int(warmup),
    }

    def run() -> dict[str, Any]:
        throttle: tuple[int, float] = (0, 0.0)
        load_before = _loadavg()
        if effective_quota is not None:
            name = f"coinfer-prof-{os.getpid()}"
            try:
                with cpu_quota_cgroup(name, effective_quota, period_us=EMULATION_PERIOD_US) as cg:
                    data = run_child(args, cg, progress)
                    throttle = cg.throttled()
            except CgroupUnavailableError as exc:
                raise CoinferError(f"cannot apply the CPU quota: {exc}") from None
        else:
            data = run_child(args, None, progress)
        data["device"] = key.device
        data["host"] = host
        data["emulation"] = emulation
        data["requested_quota"] = quota
        data["throttled_periods"] = throttle[0]
        data["throttled_s"] = throttle[1]
        # A quota is a cap, not a guarantee: when the machine is busier than its cores, every
        # device gets less than its quota and profiles understate the differences between them.
        data["loadavg_1m"] = max(load_before, _loadavg())
        data["cpu_count"] = os.cpu_count() or 1
        if notice is not None and data["loadavg_1m"] > data["cpu_count"]:
            notice(
                f"the machine was busy while profiling (load {data['loadavg_1m']:.1f} on "
                f"{data['cpu_count']} cores): times include contention from other processes"
            )
        data["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return data

    if not use_cache:
        return run(), False
    return get_or_measure(key, run, directory=cache_directory, refresh=refresh)


__all__ = ["DEFAULT_REPEATS", "DEFAULT_WARMUP", "Stats", "is_throttled", "measure", "profile_model"]
