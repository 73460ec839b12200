"""coinfer.report: Gantt charts, latency CDFs, comparison plots (matplotlib, lazily) and rich tables.

The event-trace format the charts draw is :class:`coinfer.core.trace.TraceEvent` (re-exported
here), shared by the simulator and the runtime.
"""

from ..core.trace import TraceEvent
from .plots import (
    gantt,
    gantt_pair,
    latency_cdf,
    line_plot,
    resource_order,
    search_trace,
    session_timeline,
    throughput_vs_devices,
)
from .tables import rows_table, schedule_table, sim_table, utilisation_table

__all__ = [
    "TraceEvent",
    "gantt",
    "gantt_pair",
    "latency_cdf",
    "line_plot",
    "resource_order",
    "rows_table",
    "schedule_table",
    "search_trace",
    "session_timeline",
    "sim_table",
    "throughput_vs_devices",
    "utilisation_table",
]
