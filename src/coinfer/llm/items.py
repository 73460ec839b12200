"""The ordered work items of a generation job — the same list on every stage and in the model.

Why a module of its own: the stages (:mod:`.stagejob`) run exactly this order, and the
simulator (:mod:`.simulate`) replays it; neither may drift from the other, and the simulator
must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work: a prefill chunk (``step`` = chunk index) or a decode step ``≥ 1``."""

    group: int
    prefill: bool
    step: int
    tokens: int
    final: bool  # produces a token (the prompt's last chunk, or a decode step)


def schedule(groups: list[dict[str, Any]], new_tokens: int) -> list[Item]:
    """The ordered work items of a job (the same on every stage)."""
    items = []
    for g, grp in enumerate(groups):
        sizes = grp["slices"]
        for k, c in enumerate(sizes):
            items.append(Item(g, True, k, int(c), k == len(sizes) - 1))
    for r in range(1, new_tokens):
        items.extend(Item(g, False, r, 1, True) for g in range(len(groups)))
    return items
