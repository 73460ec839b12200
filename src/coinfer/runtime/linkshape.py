"""An emulated link's shape: how long a transfer holds it (latency, bandwidth, a live trace).

Split from :mod:`.transport` because the shape is data every side of a run shares — the
coordinator builds it from the cluster, ships it in each worker's setup, the network-namespace
testbed turns it into ``tc`` classes — while only the sender threads apply it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cluster.types import BandwidthTrace


@dataclass(frozen=True, slots=True)
class LinkShape:
    """Emulated link from this process to one peer: ``latency_s + nbytes / bandwidth_Bps``.

    ``bandwidth_Bps = None`` means unshaped (only the real transport cost). ``medium`` names
    the shared medium the hop crosses: its time is then booked on that medium's clock.

    A link with a ``trace`` follows it live: trace time 0 is ``origin_unix`` (the run's or
    session's start, the same for every worker), and a transfer starting at ``t`` holds the link
    for the latency plus the time to push its bytes through the trace from ``t + latency`` on —
    the simulator's :func:`~coinfer.simulate.sim.hop_time`, so one trace drives both.
    """

    bandwidth_Bps: float | None = None
    latency_s: float = 0.0
    medium: str | None = None
    trace: BandwidthTrace | None = None
    origin_unix: float = 0.0

    def delay_s(self, nbytes: int, at_unix: float | None = None) -> float:
        """How long a transfer of ``nbytes`` starting at ``at_unix`` (now if ``None``) holds
        the link."""
        if self.trace is not None:
            start = (time.time() if at_unix is None else at_unix) - self.origin_unix
            start += self.latency_s
            return self.latency_s + self.trace.finish_s(start, nbytes) - start
        bw = 0.0 if self.bandwidth_Bps is None else nbytes / self.bandwidth_Bps
        return self.latency_s + bw

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bandwidth_Bps": self.bandwidth_Bps, "latency_s": self.latency_s}
        if self.medium is not None:
            out["medium"] = self.medium
        if self.trace is not None:
            out["trace"] = [list(self.trace.times_s), list(self.trace.bandwidth_Bps)]
            out["origin_unix"] = self.origin_unix
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinkShape:
        bw = d.get("bandwidth_Bps")
        medium = d.get("medium")
        trace = d.get("trace")
        return cls(
            None if bw is None else float(bw),
            float(d.get("latency_s", 0.0)),
            None if medium is None else str(medium),
            None
            if trace is None
            else BandwidthTrace(
                tuple(float(t) for t in trace[0]),
                tuple(float(b) for b in trace[1]),
                origin="link trace in the setup",
            ),
            float(d.get("origin_unix", 0.0)),
        )


__all__ = ["LinkShape"]
