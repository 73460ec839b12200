"""coinfer.runtime: real pipelined inference across processes (and machines).

Modules: :mod:`.control` (authenticated JSON control plane), :mod:`.transport` (gloo
point-to-point with shape contracts and link emulation), :mod:`.emulation` (cgroup CPU quotas,
thread limits), :mod:`.netns` (network namespaces + tc), :mod:`.stages` (build one stage, ship
only its weights), :mod:`.worker`, :mod:`.coordinator` (:func:`run`), :mod:`.ledger`,
:mod:`.measure` (a locally measured instance), :mod:`.report` (measured vs simulated).

``run`` and ``RunResult`` are imported lazily so ``coinfer worker`` can reject bad arguments
before paying for the torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunResult", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".coordinator", __name__), name)
    raise AttributeError(f"module 'coinfer.runtime' has no attribute {name!r}")
