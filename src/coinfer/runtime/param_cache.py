"""The parameter cache a session's zygote fills and its forked workers read (Quart, S10).

A module of its own so that the zygote (which fills it) and the worker (which reads it) share
one dictionary without importing each other: the zygote runs as ``__main__``, and what its forks
inherit is this package module's ``CACHE`` (see :mod:`.zygote` for when stages are cached).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Stage modules, weights loaded, by :func:`stage_key`; filled in the zygote only.
CACHE: dict[str, Any] = {}


def cached_stage(key: str) -> Any:
    """The stage module cached under ``key`` in the zygote this process was forked from."""
    return CACHE.get(key)


def stage_key(spec: dict[str, Any], index: int) -> str:
    """The cache key of stage ``index`` of ``spec`` (the recipe determines the weights: zoo
    and factory models are built from a fixed seed, within one session from one model)."""
    text = json.dumps({"spec": spec, "index": index}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


__all__ = ["CACHE", "cached_stage", "stage_key"]
