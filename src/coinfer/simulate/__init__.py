"""coinfer.simulate: discrete-event simulation of a Schedule, the shared event-trace format, and
fixed-plan vs oracle throughput under bandwidth traces (:mod:`.oracle`)."""

from ..core.trace import (
    TraceEvent,
    events_from_json,
    events_to_csv,
    events_to_json,
    is_link,
    link_name,
    load_events,
    steady_period,
)
from .failures import FailureRun, goodput_over_seeds, simulate_failures
from .oracle import (
    OracleResult,
    OracleSegment,
    ReplayResult,
    Segment,
    fixed_plan_throughput,
    instance_at,
    oracle_throughput,
    replay_plan_timeline,
    segments,
    steady_throughput,
)
from .sim import SimResult, hop_time, load_arrivals, simulate

__all__ = [
    "FailureRun",
    "OracleResult",
    "OracleSegment",
    "ReplayResult",
    "Segment",
    "SimResult",
    "TraceEvent",
    "events_from_json",
    "events_to_csv",
    "events_to_json",
    "fixed_plan_throughput",
    "goodput_over_seeds",
    "hop_time",
    "instance_at",
    "is_link",
    "link_name",
    "load_arrivals",
    "load_events",
    "oracle_throughput",
    "replay_plan_timeline",
    "segments",
    "simulate",
    "simulate_failures",
    "steady_period",
    "steady_throughput",
]
