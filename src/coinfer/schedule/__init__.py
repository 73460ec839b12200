"""coinfer.schedule: Plan -> Schedule (per-device ordered actions), and checks on schedules.

See :mod:`coinfer.schedule.scheduler` for the execution semantics the simulator and the runtime share.
"""

from ..core.schedules import Action, Schedule
from .scheduler import (
    assign_requests,
    client_actions,
    default_window,
    is_client_action,
    num_stages,
    schedule,
    smooth_weighted_round_robin,
    stage_freqs,
    validate_schedule,
    worker_actions,
)

__all__ = [
    "Action",
    "Schedule",
    "assign_requests",
    "client_actions",
    "default_window",
    "is_client_action",
    "num_stages",
    "schedule",
    "smooth_weighted_round_robin",
    "stage_freqs",
    "validate_schedule",
    "worker_actions",
]
