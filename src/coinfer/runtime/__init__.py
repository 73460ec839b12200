"""coinfer.runtime: real pipelined inference across processes (and machines).

Modules: :mod:`.control` (authenticated JSON control plane), :mod:`.transport` (gloo
point-to-point with shape contracts and link emulation), :mod:`.emulation` (cgroup CPU quotas,
thread limits), :mod:`.netns` (network namespaces + tc), :mod:`.stages` (build one stage, ship
only its weights), :mod:`.worker`, :mod:`.coordinator` (:func:`run`), :mod:`.ledger`.
"""

from __future__ import annotations

from .coordinator import RunResult, run

__all__ = ["RunResult", "run"]
