"""An online cost estimate: the instance as a running system's telemetry says it really is.

A session reports, per worker and every half second, its stage computes and its transfers per peer
(``Session.telemetry``). :class:`OnlineEstimate` turns that stream into a corrected
:class:`~coinfer.core.instance.Instance` a planner can re-plan with:

- each device's piece times are scaled by how much slower (or faster) its stage really computed
  than the instance priced it;
- each dedicated link's bandwidth is what its transfers achieved once the link's latency is taken
  out (``busy = n * latency + bytes / bandwidth``, the cost model's own transfer time).

Why smoothed and outlier-robust: half-second samples on a shared host jump (a neighbour's burst,
a garbage collection). Each new ratio enters a short window whose *median* is the sample, and
the estimate follows those medians by an exponential moving average: a lone 10x outlier moves
nothing, a real 2x slow-down is tracked within a few seconds.

Why a jump rule as well: a moving average needs many seconds to follow a link that lost 90 % of
its bandwidth (after one step of weight 0.4 it still believes 64 % of the old rate), and a
controller that must act within seconds cannot wait for it. When ``JUMP_AFTER`` consecutive
samples all lie beyond ``JUMP_RATIO`` of the estimate on the same side, the estimate jumps to
the latest of them and the window restarts from it (the first sample after a step usually
straddles it: a link that fell 10x mid-sample reads as 2.6x slower): a lone outlier never jumps
(it is one sample), a real step is followed two samples after it happened.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InputError
from .instance import Instance
from .plans import Stage

# Samples in each median window, and the weight of a new median in the moving average.
DEFAULT_WINDOW = 5
DEFAULT_ALPHA = 0.4
# Transfers whose bytes took less than this each say little about the link's bandwidth (a 4 KB
# result is mostly per-message overhead): they do not update the estimate.
MIN_WIRE_S = 2e-3
# A step change: this many consecutive samples beyond this factor of the estimate, same side.
JUMP_AFTER = 2
JUMP_RATIO = 1.5


@dataclass
class OnlineEstimate:
    """Running correction of ``instance`` for the plan ``stages`` (see the module docstring).

    ``device_scale[d]``: measured / priced compute time of ``d``'s stage (1 = as priced);
    ``link_Bps[(u, v)]``: estimated bandwidth of the dedicated link ``u -> v``.
    """

    instance: Instance
    stages: Sequence[Stage]
    alpha: float = DEFAULT_ALPHA
    window: int = DEFAULT_WINDOW
    device_scale: dict[str, float] = field(default_factory=dict)
    link_Bps: dict[tuple[str, str], float] = field(default_factory=dict)
    _samples: dict[Any, deque[float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.alpha <= 1) or self.window < 1:
            raise InputError(
                f"alpha must be in (0, 1] and window >= 1 (got {self.alpha}, {self.window})"
            )
        self._stage_of = {d: st for st in self.stages for d in st.devices}

    def _smooth(self, key: Any, value: float, current: float) -> float:
        window = self._samples.setdefault(key, deque(maxlen=self.window))
        window.append(value)
        recent = list(window)[-JUMP_AFTER:]
        if (
            len(recent) == JUMP_AFTER
            and current > 0
            and (
                all(v > current * JUMP_RATIO for v in recent)
                or all(v * JUMP_RATIO < current for v in recent)
            )
        ):
            # the latest sample: the first one after a step usually mixes both regimes
            window.clear()
            window.append(recent[-1])
            return recent[-1]
        return (1 - self.alpha) * current + self.alpha * statistics.median(window)

    def observe(self, record: Mapping[str, Any]) -> None:
        """Take one telemetry record (``Session.telemetry`` / a ``--telemetry`` line)."""
        device = str(record["device"])
        st = self._stage_of.get(device)
        ms = record.get("compute_ms")
        if st is not None and ms is not None and record.get("computes", 0) > 0:
            priced = self.instance.compute_s(
                st.first, st.last, device, st.freq_of(st.devices.index(device))
            )
            if priced > 0:
                ratio = ms / 1e3 / priced
                self.device_scale[device] = self._smooth(
                    device, ratio, self.device_scale.get(device, 1.0)
                )
        links = self.instance.link_by_pair
        for peer, row in (record.get("links") or {}).items():
            lk = links.get((device, str(peer)))
            n, nbytes, busy = row.get("transfers", 0), row.get("bytes", 0.0), row.get("busy_s", 0.0)
            if lk is None or lk.medium is not None or n <= 0 or nbytes <= 0:
                continue
            key = (device, str(peer))
            wire = busy - n * lk.latency_s  # the time the bytes themselves took
            if wire < n * MIN_WIRE_S:
                continue  # too short to tell the bandwidth from per-message overheads
            self.link_Bps[key] = self._smooth(
                key, nbytes / wire, self.link_Bps.get(key, lk.bandwidth_Bps)
            )

    def current(self) -> Instance:
        """``instance`` with every observed correction applied."""
        inst = self.instance
        pieces = tuple(
            replace(pc, time_s={d: t * self.device_scale.get(d, 1.0) for d, t in pc.time_s.items()})
            for pc in inst.pieces
        )
        links = tuple(
            replace(lk, bandwidth_Bps=self.link_Bps.get((lk.src, lk.dst), lk.bandwidth_Bps))
            for lk in inst.dedicated_links
        )
        return replace(inst, pieces=pieces, links=links)


__all__ = ["DEFAULT_ALPHA", "DEFAULT_WINDOW", "OnlineEstimate"]
