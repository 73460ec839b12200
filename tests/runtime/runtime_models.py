"""Models for runtime tests (loaded by path in worker processes: ``tests/runtime/runtime_models.py:wide``)."""

from __future__ import annotations

import torch
from torch import nn


def wide() -> nn.Sequential:
    """A 3-piece chain whose first cut carries 64 KiB per sample (16384 float32): link-bound."""
    return nn.Sequential(nn.Linear(32, 16384), nn.ReLU(), nn.Linear(16384, 10))


class _TwoHeads(nn.Module):
    """A small detector-like net with several outputs: class logits and a two-part mask."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.cls = nn.Linear(8, 5)
        self.seg = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        h = self.body(self.stem(x))
        seg = self.seg(h)
        return {"logits": self.cls(h.mean(dim=(2, 3))), "mask": (seg[:, :1], seg[:, 1:].sigmoid())}


def two_heads() -> nn.Module:
    return _TwoHeads().eval()
