"""Tiny models for fast tests of every layer of coinfer (capture, profile, plan, run).

Small enough to run in milliseconds, but each exercises one graph shape: a chain of
convolutions, a DAG with a fan-out/concat and a residual add, and a plain MLP.
"""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn() -> nn.Module:
    """A chain of three conv/BN/ReLU layers and a classifier (input 1×3×32×32)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(16, 10),
    )


class TinyDag(nn.Module):
    """Stem, two parallel branches concatenated, a residual add, a long skip to the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 1)
        self.mix = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        y = torch.cat([torch.relu(self.left(s)), torch.relu(self.right(s))], dim=1)
        y = torch.relu(self.mix(y)) + s
        feats = torch.cat([self.pool(y), self.pool(s)], dim=1)
        return self.head(torch.flatten(feats, 1))


def tiny_dag() -> nn.Module:
    """:class:`TinyDag` (input 1×3×16×16)."""
    return TinyDag()


def tiny_mlp() -> nn.Module:
    """Three linear layers with GELU (input 1×64)."""
    return nn.Sequential(
        nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 10)
    )
