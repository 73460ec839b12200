"""coinfer.plan.online: controllers that re-decide a split every time slot.

- :mod:`.cutedge`: CutEdge (seed S3), a virtual-queue Lyapunov controller choosing the
  device–edge split, the device's DVFS level and its transmission rate each slot;
- :mod:`.slots`: the slotted simulator (Poisson arrivals, trace or Markov bandwidth) and the
  fixed-split and greedy baselines.

Pure numpy; like the rest of :mod:`coinfer.plan` it imports only :mod:`coinfer.core` and
:mod:`coinfer.errors`.
"""

from __future__ import annotations

from .cutedge import CutEdge, Decision, SlotOptions, SplitSystem, drift_plus_penalty, next_queues
from .slots import (
    FixedSplit,
    Greedy,
    SlotRun,
    markov_bandwidth,
    poisson_arrivals,
    run_slots,
    trace_bandwidth,
)

__all__ = [
    "CutEdge",
    "Decision",
    "FixedSplit",
    "Greedy",
    "SlotOptions",
    "SlotRun",
    "SplitSystem",
    "drift_plus_penalty",
    "markov_bandwidth",
    "next_queues",
    "poisson_arrivals",
    "run_slots",
    "trace_bandwidth",
]
