"""Planners over the chain of pieces: contiguous stages on devices in pipeline order.

Exact ones (``dp``, ``brute``, ``split2``), PICO's many-to-many mapping (``pico``) and the
baselines (``single``, ``even``, ``memory``). Each module holds one planner.
"""

from .baselines import (
    EvenOptions,
    MemoryOptions,
    SingleOptions,
    plan_even,
    plan_memory,
    plan_single,
)
from .brute import BruteOptions, plan_brute
from .dp import DPOptions, plan_dp
from .pico import PicoOptions, plan_pico
from .split2 import Split2Options, plan_split2

__all__ = [
    "BruteOptions",
    "DPOptions",
    "EvenOptions",
    "MemoryOptions",
    "PicoOptions",
    "SingleOptions",
    "Split2Options",
    "plan_brute",
    "plan_dp",
    "plan_even",
    "plan_memory",
    "plan_pico",
    "plan_single",
    "plan_split2",
]
