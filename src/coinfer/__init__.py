"""coinfer: make one DNN run faster on several heterogeneous devices together.

The pipeline (see docs/): ``capture`` a model into a costed DAG and ordered pieces, describe a
``Cluster``, build an ``Instance`` (the cost model as data), ``plan`` it, ``schedule`` the plan,
then ``simulate`` or ``run`` it. Public names are imported lazily so ``import coinfer`` stays
cheap and never pulls optional dependencies (transformers, matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "capture": "coinfer.graph",
    "split": "coinfer.graph",
    "ModelGraph": "coinfer.graph",
    "load_model": "coinfer.zoo",
    "Instance": "coinfer.core.instance",
    "Plan": "coinfer.core.plans",
    "Stage": "coinfer.core.plans",
    "Metrics": "coinfer.core.plans",
    "evaluate": "coinfer.core.evaluate",
    "plan": "coinfer.plan",
    "Schedule": "coinfer.core.schedules",
    "CoinferError": "coinfer.errors",
    "InputError": "coinfer.errors",
    "InfeasibleError": "coinfer.errors",
    "PeerError": "coinfer.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coinfer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
