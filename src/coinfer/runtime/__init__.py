"""coinfer.runtime: real pipelined inference across processes (and machines).

Modules, one job each:

- :mod:`.protocol` — the typed control messages (Setup, Ready, Go, Result, Done, ...);
- :mod:`.prepare` — the pure step: model → stages → contracts → schedule → per-device setups;
- :mod:`.coordinator` — :func:`run`, which reads top to bottom: prepare, start, set up, supervise;
- :mod:`.supervision` — spawn / accept workers, heartbeats, blame, abort, reap;
- :mod:`.results` — :class:`RunResult`, link measurements, the output check;
- :mod:`.worker` — one device's process; :mod:`.transport` — gloo point-to-point with shape
  contracts and link emulation; :mod:`.control` — the authenticated JSON channel;
- :mod:`.stages` (build one stage, ship only its weights), :mod:`.ledger` (request states),
  :mod:`.emulation` (cgroup CPU quotas, thread limits), :mod:`.netns` (namespaces + tc),
  :mod:`.measure` (a locally measured instance), :mod:`.measured_eval` (candidate plans
  measured through one live session, for a measured plan search).

Measured vs simulated is :mod:`coinfer.report.compare`: the runtime never consults the simulator.

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
