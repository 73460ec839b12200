"""Profiling and cost estimation: measured profiles, the affinity predictor, the CostModel.

* :mod:`~coinfer.profile.profiler` measures node and piece latencies on this host (optionally
  under a cgroup CPU quota, :mod:`~coinfer.profile.cgroup`) and caches them
  (:mod:`~coinfer.profile.cache`);
* :mod:`~coinfer.profile.predictor` is AP²'s task–device affinity predictor;
* :mod:`~coinfer.profile.costmodel` turns a model + cluster into an Instance, choosing per device
  between a profile, the predictor and the analytic FLOPs / GFLOP/s fallback.

Submodules are imported lazily: ``import coinfer.profile`` does not import torch or sklearn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CostModel": "coinfer.profile.costmodel",
    "build_cost_model": "coinfer.profile.costmodel",
    "build_instance": "coinfer.profile.costmodel",
    "cluster_to_instance_links": "coinfer.profile.costmodel",
    "profile_model": "coinfer.profile.profiler",
    "AffinityPredictor": "coinfer.profile.predictor",
    "default_predictor": "coinfer.profile.predictor",
    "load_predictor": "coinfer.profile.predictor",
    "train_predictor": "coinfer.profile.predictor",
    "cpu_quota_cgroup": "coinfer.profile.cgroup",
    "move_pid": "coinfer.profile.cgroup",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coinfer.profile' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
