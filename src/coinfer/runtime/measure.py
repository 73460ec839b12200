"""A measured instance for the runtime's own use: time every piece here, scale by device quotas.

The profiler/cost model (:mod:`coinfer.profile`) is the main source of instances; this is the
runtime's self-contained fallback and the instance behind ``--partition sequential`` (whose
pieces the graph profiler does not number). Every piece is its own stage (the model split after
every piece), timed in this process on real intermediate inputs with one thread.

Modelling assumption: a device emulated with ``cpu_quota = q`` (q <= 1 core, one thread) runs a
piece ``1 / q`` times slower than this unthrottled process — the CFS quota gives it ``q`` of the
time; ``q > 1`` with one thread gives no speed-up, so the factor is ``1 / min(q, 1)``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..core.instance import Device, Instance, make_instance, network_of
from ..zoo import load_model
from .stages import Partition, as_tuple, split_pieces

# Timed repetitions per piece (after one warm-up); the median resists a noisy shared host.
REPEATS = 5


def piece_times(
    model_spec: str,
    input_shape: Sequence[int] | None,
    partition: Partition = "graph",
    max_pieces: int | None = None,
    repeats: int = REPEATS,
) -> tuple[list[float], list[int], list[int], int]:
    """Seconds per piece (batch 1, one thread), memory per piece, cut bytes, input bytes."""
    model, example = load_model(model_spec, input_shape)
    pieces, _ = split_pieces(model, example, None, partition, max_pieces)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times, mem, out_bytes = [], [], []
    xs = example
    try:
        with torch.inference_mode():
            for mod in pieces:
                ys = as_tuple(mod(*xs))  # warm-up
                samples = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    ys = as_tuple(mod(*xs))
                    samples.append(time.perf_counter() - t0)
                times.append(statistics.median(samples))
                nb = sum(t.numel() * t.element_size() for t in ys)
                params = sum(p.numel() * p.element_size() for p in mod.state_dict().values())
                mem.append(int(params + nb))
                out_bytes.append(int(nb))
                xs = ys
    finally:
        torch.set_num_threads(threads)
    in_bytes = sum(t.numel() * t.element_size() for t in example)
    return times, mem, out_bytes, in_bytes


def measured_instance(
    model_spec: str,
    cluster: Any,
    input_shape: Sequence[int] | None,
    partition: Partition = "graph",
    max_pieces: int | None = None,
) -> Instance:
    """The instance of ``model_spec`` on ``cluster`` from local measurements (module docstring)."""
    base, mem, out_bytes, in_bytes = piece_times(model_spec, input_shape, partition, max_pieces)
    slow = {}
    for d in cluster.devices:
        q = getattr(getattr(d, "emulate", None), "cpu_quota", None)
        slow[d.name] = 1.0 / min(q, 1.0) if q else 1.0
    times = [{d: t * f for d, f in slow.items()} for t in base]
    devices = [
        Device(
            d.name,
            d.mem_bytes,
            d.power_idle_w,
            d.power_active_w,
            d.power_transmit_w,
            d.dvfs_levels,
            cores=tuple(getattr(d, "cores", ())),  # a SoC's core group keeps its rule
        )
        for d in cluster.devices
    ]
    links, media = network_of(cluster)
    return make_instance(
        times,
        mem,
        out_bytes,
        in_bytes,
        devices,
        links,
        cluster.source,
        name=model_spec,
        media=media,
    )


__all__ = ["measured_instance", "piece_times"]
