"""coinfer.simulate: discrete-event simulation of a Schedule, and the shared event-trace format."""

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
from .sim import SimResult, hop_time, load_arrivals, simulate

__all__ = [
    "SimResult",
    "TraceEvent",
    "events_from_json",
    "events_to_csv",
    "events_to_json",
    "hop_time",
    "is_link",
    "link_name",
    "load_arrivals",
    "load_events",
    "simulate",
    "steady_period",
]
