"""Same-process hand-offs between a worker's threads: the source's client and its own stage work.

A tensor that stays on one device never touches the wire; the client puts it here under its
``(request, stage)`` key and the stage work takes it, with the same bounded wait as a receive.
"""

from __future__ import annotations

import threading

import torch

from ..errors import PeerError


class Mailbox:
    """Same-process hand-offs (the source's client <-> its own stage work), keyed by (request, stage)."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._cond = threading.Condition()

    def put(self, key: tuple[int, int], tensors: list[torch.Tensor]) -> None:
        with self._cond:
            self._items[key] = tensors
            self._cond.notify_all()

    def get(self, key: tuple[int, int], timeout_s: float) -> list[torch.Tensor]:
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._items, timeout=timeout_s):
                raise PeerError(f"local hand-off of request {key[0]} stage {key[1]} timed out")
            return self._items.pop(key)


__all__ = ["Mailbox"]
