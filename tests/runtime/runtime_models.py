"""Models for runtime tests (loaded by path in worker processes: ``tests/runtime/runtime_models.py:wide``)."""

from __future__ import annotations

from torch import nn


def wide() -> nn.Sequential:
    """A 3-piece chain whose first cut carries 64 KiB per sample (16384 float32): link-bound."""
    return nn.Sequential(nn.Linear(32, 16384), nn.ReLU(), nn.Linear(16384, 10))
