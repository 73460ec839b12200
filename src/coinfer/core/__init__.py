"""coinfer.core: the vocabulary every stage of the pipeline shares.

- :mod:`.instance`: the planning problem as data (``Instance`` of ``Piece``/``Device``/``Link``),
  with the cheapest-path routing every transfer takes, and its JSON form;
- :mod:`.plans`: ``Plan``/``Stage``/``Metrics``/``Objective``, what a planner returns;
- :mod:`.evaluate`: the reference cost model (latency, period, energy) that every planner, the
  simulator, the runtime's report and the tests agree on;
- :mod:`.schedules`: ``Schedule``/``Action``, the per-device ordered work that both the simulator
  and the runtime execute;
- :mod:`.trace`: ``TraceEvent`` (one busy interval of a device or link) and the steady-state
  period of a completion stream, shared by the simulator, the runtime and the charts.

``core`` imports no other coinfer package (only the leaf :mod:`coinfer.errors`), so any package
may depend on it without pulling in planners, torch or the runtime.
"""

from __future__ import annotations

from .evaluate import (
    busy_times,
    check_plan,
    energy_j,
    evaluate,
    latency_s,
    memory_bound_check,
    objective_value,
    period_s,
    replica_weights,
    validate_stages,
)
from .instance import (
    Device,
    Instance,
    Link,
    Medium,
    Piece,
    Resource,
    instance_from_dict,
    instance_to_dict,
    load_instance,
    make_instance,
)
from .plans import Metrics, Objective, Plan, Stage, check_objective, stages_from_cuts
from .schedules import Action, Schedule
from .trace import TraceEvent, is_link, link_name, steady_period

__all__ = [
    "Action",
    "Device",
    "Instance",
    "Link",
    "Medium",
    "Metrics",
    "Objective",
    "Piece",
    "Plan",
    "Resource",
    "Schedule",
    "Stage",
    "TraceEvent",
    "busy_times",
    "check_objective",
    "check_plan",
    "energy_j",
    "evaluate",
    "instance_from_dict",
    "instance_to_dict",
    "is_link",
    "latency_s",
    "link_name",
    "load_instance",
    "make_instance",
    "memory_bound_check",
    "objective_value",
    "period_s",
    "replica_weights",
    "stages_from_cuts",
    "steady_period",
    "validate_stages",
]
