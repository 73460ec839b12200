"""What a streaming session did: its recoveries, hand-overs and per-request times, as data.

Typed, printable and JSON-ready (``to_dict``), so a session's story — which device failed, when
it was noticed, when the stream resumed and on which devices — can be replayed, tabulated and
drawn (docs/runtime.md, "Streaming sessions and fail-over").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.adapt import Replan


@dataclass(frozen=True)
class Recovery:
    """One fail-over, on the session's clock (seconds since it started)."""

    device: str
    reason: str
    epoch: int  # the epoch that took over
    detected_s: float
    resumed_s: float  # the new epoch's workers are running
    first_result_s: float | None
    rerun: int  # unfinished requests submitted again
    devices: tuple[str, ...]  # the new plan's devices
    fault_s: float | None = None  # when the fault was injected, if it was

    def to_dict(self) -> dict[str, Any]:
        since = self.fault_s if self.fault_s is not None else self.detected_s
        return {
            "device": self.device,
            "reason": self.reason,
            "epoch": self.epoch,
            "fault_s": self.fault_s,
            "detected_s": self.detected_s,
            "detected_after_s": None if self.fault_s is None else self.detected_s - self.fault_s,
            "resumed_s": self.resumed_s,
            "first_result_s": self.first_result_s,
            "first_result_after_s": (
                None if self.first_result_s is None else self.first_result_s - since
            ),
            "rerun": self.rerun,
            "devices": list(self.devices),
        }


@dataclass(frozen=True)
class SessionReport:
    """What a closed session did. Times are seconds since the session started."""

    submitted: int
    completed: int
    lost: int
    duplicated: int
    microbatch: int
    recoveries: tuple[Recovery, ...]
    handovers: tuple[Handover, ...]
    submit_s: tuple[float, ...]  # per completed request, in completion order
    done_s: tuple[float, ...]
    plan: dict[str, Any]
    trace: list[dict[str, Any]] = field(default_factory=list)  # last epoch, most recent events
    emulation: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    replans: tuple[Replan, ...] = ()  # live re-plans (coinfer.runtime.adapt), in order

    @property
    def latencies_s(self) -> list[float]:
        return [d - s for s, d in zip(self.submit_s, self.done_s, strict=True)]

    def throughput_rps(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Samples per second completed between ``start_s`` and ``end_s`` (default: from the
        first submission to the last result)."""
        if not self.done_s:
            return 0.0
        t0 = min(self.submit_s) if start_s is None else start_s
        t1 = max(self.done_s) if end_s is None else end_s
        n = sum(1 for t in self.done_s if t0 < t <= t1)
        return n * self.microbatch / (t1 - t0) if t1 > t0 else 0.0

    def timeline(self, bin_s: float = 0.5) -> dict[str, Any]:
        """Completed samples per second in bins of ``bin_s`` from the session's start (what a
        plot of the stream draws, with the recoveries and hand-overs marked on it)."""
        if not self.done_s:
            return {"bin_s": bin_s, "rps": []}
        bins = [0] * (int(max(self.done_s) / bin_s) + 1)
        for t in self.done_s:
            bins[int(t / bin_s)] += self.microbatch
        return {"bin_s": bin_s, "rps": [n / bin_s for n in bins]}

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "microbatch": self.microbatch,
            "throughput_rps": self.throughput_rps(),
            "latency_p50_s": pct(0.5),
            "latency_p95_s": pct(0.95),
            "timeline": self.timeline(),
            "recoveries": [r.to_dict() for r in self.recoveries],
            "handovers": [h.to_dict() for h in self.handovers],
            "replans": [r.to_dict() for r in self.replans],
            "plan": self.plan,
            "emulation": self.emulation,
            "error": self.error,
        }


@dataclass(frozen=True)
class Handover:
    """One switch to a new plan without stopping the stream (a device admitted, a re-balance),
    on the session's clock."""

    reason: str
    epoch: int  # the epoch that took over
    requested_s: float
    switched_s: float | None  # new requests go to the new epoch from here
    drained_s: float | None  # the old epoch finished what it held
    devices: tuple[str, ...]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "epoch": self.epoch,
            "requested_s": self.requested_s,
            "switched_s": self.switched_s,
            "drained_s": self.drained_s,
            "devices": list(self.devices),
            "error": self.error,
        }


__all__ = ["Handover", "Recovery", "Replan", "SessionReport"]
