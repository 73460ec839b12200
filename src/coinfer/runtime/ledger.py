"""The coordinator's in-flight ledger: every submitted request ends with a result or an error.

Requests are individual samples (ids ``0..N-1``); the wire unit is a *message* — a micro-batch of
``microbatch`` consecutive requests. The ledger is the single source of truth for which requests
completed, so a failure can name exactly the ones that did not (and a later fail-over can
resubmit exactly those).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import torch

RequestState = Literal["pending", "done", "failed"]


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished message: when its input left the source and its output came back."""

    message: int
    t_release_s: float
    t_done_s: float

    @property
    def latency_s(self) -> float:
        return self.t_done_s - self.t_release_s


class Ledger:
    """Thread-safe request states for one run of ``num_requests`` in messages of ``microbatch``."""

    def __init__(self, num_requests: int, microbatch: int):
        if microbatch < 1 or num_requests < 1 or num_requests % microbatch:
            raise ValueError(
                f"{num_requests} requests do not split into micro-batches of {microbatch}"
            )
        self.num_requests = num_requests
        self.microbatch = microbatch
        self.num_messages = num_requests // microbatch
        self._state: list[RequestState] = ["pending"] * num_requests
        self._completions: dict[int, Completion] = {}
        self._outputs: dict[int, list[torch.Tensor]] = {}
        self._errors: dict[int, str] = {}
        self._lock = threading.Lock()

    def requests_of(self, message: int) -> range:
        """Request ids carried by ``message``."""
        return range(message * self.microbatch, (message + 1) * self.microbatch)

    def complete(
        self, message: int, t_release_s: float, t_done_s: float, outputs: list[torch.Tensor]
    ) -> None:
        """Record ``message``'s result; a duplicate or unknown message is a protocol error."""
        if not 0 <= message < self.num_messages:
            raise ValueError(f"result for unknown message {message}")
        with self._lock:
            if message in self._completions:
                raise ValueError(f"duplicate result for message {message}")
            self._completions[message] = Completion(message, t_release_s, t_done_s)
            self._outputs[message] = outputs
            for r in self.requests_of(message):
                self._state[r] = "done"

    def shift_times(self, delta_s: float) -> None:
        """Move every recorded completion by ``delta_s`` (onto another clock)."""
        with self._lock:
            self._completions = {
                m: Completion(c.message, c.t_release_s + delta_s, c.t_done_s + delta_s)
                for m, c in self._completions.items()
            }

    def fail_open(self, reason: str) -> tuple[int, ...]:
        """Mark every still-pending request failed with ``reason``; returns their ids."""
        with self._lock:
            ids = tuple(r for r, s in enumerate(self._state) if s == "pending")
            for r in ids:
                self._state[r] = "failed"
                self._errors[r] = reason
            return ids

    def state(self, request: int) -> RequestState:
        with self._lock:
            return self._state[request]

    @property
    def pending(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(r for r, s in enumerate(self._state) if s == "pending")

    @property
    def all_done(self) -> bool:
        with self._lock:
            return len(self._completions) == self.num_messages

    @property
    def completions(self) -> tuple[Completion, ...]:
        with self._lock:
            return tuple(self._completions[m] for m in sorted(self._completions))

    def outputs(self, message: int) -> list[torch.Tensor]:
        with self._lock:
            return self._outputs[message]


def format_ids(ids: tuple[int, ...], limit: int = 12) -> str:
    """``0-3, 7, 9-12`` style, truncated after ``limit`` runs."""
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    if len(runs) > limit:
        return ", ".join(runs[:limit]) + f", ... ({len(ids)} requests)"
    return ", ".join(runs)


__all__ = ["Completion", "Ledger", "format_ids"]
