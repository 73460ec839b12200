"""What a run measured, and the arithmetic that turns raw worker reports into it.

Pure functions of the reports (no processes, no sockets), so each is tested on hand-built data:
:func:`measured_links` (each link's achieved bandwidth), :func:`percentile`,
:func:`output_errors` (every output of every micro-batch against the unsplit model) and
:func:`build_result` (trace on one clock, steady-state period, latencies, utilisation).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..core.trace import TraceEvent, medium_name, steady_period
from ..errors import PeerError
from .ledger import Completion
from .transport import LinkShape


@dataclass(frozen=True)
class RunResult:
    """What a real run measured (seconds; throughput in requests = samples per second).

    ``period_s`` is the steady-state time per micro-batch (completions with fill and drain
    trimmed, the simulator's definition) and ``throughput_rps = microbatch / period_s``;
    ``wall_s`` runs from the first release to the last output. Latencies are per micro-batch,
    release at the source to output back there. ``utilisation`` is compute busy time / ``wall_s``.
    ``links`` holds each used link's achieved bandwidth next to the cluster's (see
    :func:`measured_links`); ``network`` says where links were emulated. ``max_abs_error`` is
    the largest difference over EVERY output tensor of every micro-batch (``None``: unchecked).
    """

    requests: int
    microbatch: int
    wall_s: float
    period_s: float
    throughput_rps: float
    latency_p50_s: float
    latency_p95_s: float
    max_abs_error: float | None
    utilisation: Mapping[str, float]
    emulation: Mapping[str, Mapping[str, Any]]
    trace: tuple[Any, ...] = field(repr=False)
    stages: tuple[tuple[int, int, tuple[str, ...]], ...] = ()
    links: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    network: str = "transport"
    # every output of the model, each concatenated over the micro-batches in request order
    # (``outputs`` is the first of them, for single-output models)
    all_outputs: tuple[torch.Tensor, ...] = field(default=(), repr=False, compare=False)
    # measured energy estimate per request (joules), same definition as the cost model's
    energy_j_per_request: float | None = None

    @property
    def outputs(self) -> torch.Tensor | None:
        return self.all_outputs[0] if self.all_outputs else None

    @property
    def emulation_mode(self) -> str:
        modes = sorted({str(e.get("mode")) for e in self.emulation.values()})
        return "+".join(modes) if modes else "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "microbatch": self.microbatch,
            "wall_s": self.wall_s,
            "period_s": self.period_s,
            "throughput_rps": self.throughput_rps,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "max_abs_error": self.max_abs_error,
            "utilisation": dict(self.utilisation),
            "emulation": {d: dict(e) for d, e in self.emulation.items()},
            "emulation_mode": self.emulation_mode,
            "stages": [{"pieces": [a, b], "devices": list(d)} for a, b, d in self.stages],
            "links": {k: dict(v) for k, v in self.links.items()},
            "network": self.network,
            "energy_j_per_request": self.energy_j_per_request,
            "trace": [ev.to_dict() for ev in self.trace],
        }

    def __str__(self) -> str:
        err = "unchecked" if self.max_abs_error is None else f"max|err|={self.max_abs_error:.3g}"
        util = ", ".join(f"{d} {u:.0%}" for d, u in self.utilisation.items())
        return (
            f"RunResult({self.requests} requests x{self.microbatch}: {self.throughput_rps:.2f} req/s, "
            f"p50 {self.latency_p50_s * 1e3:.1f} ms, p95 {self.latency_p95_s * 1e3:.1f} ms, {err}, "
            f"util [{util}], emulation {self.emulation_mode})"
        )


def measured_energy(
    trace: Sequence[Any],
    devices: Mapping[str, Any],
    freqs: Mapping[tuple[int, str], float],
    requests: int,
) -> float | None:
    """Joules per request from what the run measured, by the cost model's definition: every
    compute interval x the device's active power at its DVFS level, every hop's transfer time x
    the sender's transmit power. ``None`` when no device has power figures.

    ``devices`` maps names to objects with ``active_power_w(freq)`` and ``power_transmit_w``
    (:class:`coinfer.core.instance.Device`); ``trace`` holds :class:`TraceEvent` objects.
    """
    if not any(getattr(d, "power_active_w", None) is not None for d in devices.values()):
        return None
    joules = 0.0
    for e in trace:
        if e.kind == "compute" and e.resource in devices:
            f = freqs.get((int(e.stage), e.resource), 1.0) if e.stage is not None else 1.0
            joules += (e.end_s - e.start_s) * devices[e.resource].active_power_w(f)
        elif e.kind == "transfer":
            src = e.resource.split("->", 1)[0]
            if src in devices:
                joules += (e.end_s - e.start_s) * (devices[src].power_transmit_w or 0.0)
    return joules / max(1, requests)


def measured_links(
    trace: Sequence[Mapping[str, Any]],
    arrivals: Mapping[tuple[str, str, int, int], float],
    shapes: Mapping[str, Mapping[str, LinkShape]],
    *,
    ends: str = "arrival",
) -> dict[str, dict[str, float]]:
    """Per directed link, and per shared medium: transfers, bytes, busy seconds (latency
    included, as the cost model and the simulator charge occupancy) and the bandwidth the run
    actually achieved (latency left out, so it means what the configured figure means).

    A transfer occupies its resource from the sender's start plus the emulated latency (or the
    previous transfer's end on the same resource, if later: it queued behind it) to its end; the
    achieved bandwidth is the bytes / the summed occupancy — the same meaning as the configured
    figure. Hops over a shared medium queue behind each other whatever their direction, so they
    are sequenced together, and the medium gets its own entry (named ``"<medium><->"``, as in
    the simulator) beside its hops'.
    ``ends="arrival"`` ends a transfer at the receiver's arrival time (``--netns``: checks tc's
    shaping, where a send completes into a socket buffer before the data arrives);
    ``ends="sender"`` at the sender's completion (the transport's emulation: a send completes
    when the receiver, which posts its receives ahead, has the data, while the receiver's own
    arrival stamp waits for its compute loop to get to the message).
    """
    groups: dict[str, list[tuple[float, float, float, str]]] = {}
    for e in trace:
        if e.get("kind") != "transfer" or "nbytes" not in e:
            continue
        src, dst = e["resource"].split("->", 1)
        if ends == "sender":
            end = float(e["end_s"])
        else:
            end = arrivals.get((src, dst, int(e["request"]), int(e["stage"])))
        if end is None:
            continue
        shape = shapes.get(src, {}).get(dst, LinkShape())
        group = e["resource"] if shape.medium is None else medium_name(shape.medium)
        groups.setdefault(group, []).append(
            (float(e["start_s"]), end, float(e["nbytes"]), e["resource"])
        )
    acc: dict[str, list[float]] = {}
    for group, xfers in groups.items():
        prev_end = -math.inf
        for start, end, nbytes, name in sorted(xfers):
            src, dst = name.split("->", 1)
            lat = shapes.get(src, {}).get(dst, LinkShape()).latency_s
            # a message queued behind the previous one (socket buffer, qdisc, the air) only
            # occupies the resource from when that one has arrived; the bandwidth figure leaves
            # the emulated latency out, the busy time keeps it (the cost model's occupancy)
            moving = max(1e-9, end - max(start + lat, prev_end))
            held = max(0.0, end - max(start, prev_end))
            prev_end = max(prev_end, end)
            for key in {name, group}:
                a = acc.setdefault(key, [0.0, 0.0, 0.0, 0.0])
                a[0] += 1
                a[1] += nbytes
                a[2] += moving
                a[3] += held
    nominal_of: dict[str, float | None] = {}
    for u, m in shapes.items():
        for v, sh in m.items():
            nominal_of[f"{u}->{v}"] = sh.bandwidth_Bps
            if sh.medium is not None:
                nominal_of[medium_name(sh.medium)] = sh.bandwidth_Bps
    out = {}
    for name, (n, nbytes, secs, held) in acc.items():
        nominal = nominal_of.get(name)
        out[name] = {
            "transfers": n,
            "bytes": nbytes,
            "busy_s": held,
            "measured_Bps": nbytes / secs,
            "nominal_Bps": float("nan") if nominal is None else nominal,
        }
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] (``nan`` for no values)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def reference_outputs(model: Any, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The unsplit model's outputs as a flat list of tensors, in the order the last stage sends
    them (the model's output structure flattened, as capture does)."""
    out = model(*inputs)
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def output_errors(
    reference: Callable[[int], Sequence[torch.Tensor]],
    received: Callable[[int], Sequence[torch.Tensor]],
    messages: int,
) -> float:
    """Largest absolute difference over every output tensor of every micro-batch.

    ``reference(m)`` / ``received(m)`` give micro-batch ``m``'s outputs. A missing or extra
    output, or one of the wrong shape, is a :class:`PeerError` naming the micro-batch and the
    output: a pipeline that drops an output must not pass because the first one matched.
    """
    worst = 0.0
    for m in range(messages):
        ref, got = list(reference(m)), list(received(m))
        if len(ref) != len(got):
            raise PeerError(
                f"micro-batch {m} returned {len(got)} outputs, the model has {len(ref)}"
            )
        for j, (r, g) in enumerate(zip(ref, got, strict=True)):
            if tuple(g.shape) != tuple(r.shape):
                raise PeerError(
                    f"output {j} of micro-batch {m} has shape {tuple(g.shape)}, "
                    f"expected {tuple(r.shape)}"
                )
            if g.numel():
                worst = max(worst, float((g.double() - r.double()).abs().max()))
    return worst


def trace_events(raw: Sequence[Mapping[str, Any]], t0: float) -> tuple[TraceEvent, ...]:
    """Workers' event dicts (already on the coordinator's clock) as TraceEvents from ``t0``."""
    return tuple(
        sorted(
            (
                TraceEvent(
                    e["resource"],
                    e["kind"],
                    int(e["request"]),
                    e["start_s"] - t0,
                    e["end_s"] - t0,
                    e.get("stage"),
                )
                for e in raw
            ),
            key=lambda ev: (ev.start_s, ev.resource),
        )
    )


def build_result(
    *,
    requests: int,
    microbatch: int,
    completions: Sequence[Completion],
    outputs: tuple[torch.Tensor, ...],
    max_abs_error: float | None,
    trace: Sequence[Mapping[str, Any]],
    busy_s: Mapping[str, float],
    computing: Sequence[str],
    emulation: Mapping[str, Mapping[str, Any]],
    stages: tuple[tuple[int, int, tuple[str, ...]], ...],
    links: Mapping[str, Mapping[str, float]],
    netns: bool,
) -> RunResult:
    """Assemble the :class:`RunResult`: one clock starting at the first release, the
    steady-state period (the simulator's definition), latencies and utilisation."""
    t0 = min(c.t_release_s for c in completions)
    t1 = max(c.t_done_s for c in completions)
    lat = [c.latency_s for c in completions]
    period = steady_period([c.t_done_s - t0 for c in completions])
    return RunResult(
        requests=requests,
        microbatch=microbatch,
        wall_s=t1 - t0,
        period_s=period,
        throughput_rps=microbatch / period if period > 0 else math.inf,
        latency_p50_s=statistics.median(lat),
        latency_p95_s=percentile(lat, 95),
        max_abs_error=max_abs_error,
        utilisation={d: min(1.0, busy_s.get(d, 0.0) / (t1 - t0)) for d in computing},
        emulation={d: dict(e) for d, e in emulation.items()},
        trace=trace_events(trace, t0),
        stages=stages,
        links=dict(links),
        network="netns+tc (bandwidth), transport (latency)"
        if netns
        else "transport (bandwidth + latency)",
        all_outputs=outputs,
    )


__all__ = [
    "RunResult",
    "build_result",
    "measured_energy",
    "measured_links",
    "output_errors",
    "percentile",
    "reference_outputs",
    "trace_events",
]
