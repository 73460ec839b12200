"""Planners that work on graphs: min-cut partitioning of the model DAG (``mincut``: DADS-style
cuts, ``cic``: CIC's compressed splitting model, S5) and layered-graph routing (``route``, S11)."""

from .mincut import MincutOptions, plan_mincut
from .route import RouteOptions, plan_route

__all__ = ["MincutOptions", "RouteOptions", "plan_mincut", "plan_route"]
