"""Send order: every link sends each receiving thread's messages in the order it posts them.

gloo finishes a large send only once the receiver has posted the matching receive, and a
receiving thread (a device's compute receiver, or one of its relays) posts its receives in its
own schedule order, a bounded window ahead. A link that carries messages for one such thread from
two producers on the sender — the device's own outputs and a flow it relays, or the source's
inputs and its own stage's outputs — queues them in whatever order they were produced. A message
more than the window ahead of the one the receiver waits for then holds the link for good, and
the message the receiver waits for sits behind it: a head-of-line deadlock (measured: MobileNetV2
on the heterogeneous testbed hung until the timeout).

So every sender learns, per peer, the order of each receiving thread's messages from it (one
cycle of message ids, :func:`send_orders`), and holds a message produced early until its
predecessor in that thread's order has gone (:class:`SendOrder`). Every message that reaches the
wire is then the next one its receiving thread will post, and a link waits for a receiver only
as long as a link with a FIFO per receiving thread would — the network the cost model prices.
Messages no thread orders (probes, the source's outputs, which are posted at release) go at once.

Pure functions of the routed run (no process, no socket), tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .relays import RoutedRun


def message_id(request: int, stage: int, num_stages: int) -> int:
    """Wire id of the input of ``stage`` for ``request`` (stage ``num_stages`` = the output)."""
    return request * (num_stages + 2) + stage + 1


@dataclass(frozen=True)
class SendOrder:
    """The receiving threads' orders of one link's messages.

    ``streams`` are the message ids of one cycle, one tuple per receiving thread, in the order
    that thread posts them; ``stride`` is the id offset of one cycle in a session (``0``: a
    finite run, the ids once). Message ``m + c * stride`` is the ``c``-th repetition of ``m``.
    """

    streams: tuple[tuple[int, ...], ...]
    stride: int = 0
    _where: dict[int, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where: dict[int, tuple[int, int]] = {}
        for s, ids in enumerate(self.streams):
            for i, m in enumerate(ids):
                if m in where:
                    raise ValueError(f"message {m} is in two receive orders")
                if self.stride and not 0 <= m < self.stride:
                    raise ValueError(f"message {m} lies outside the cycle (stride {self.stride})")
                where[m] = (s, i)
        object.__setattr__(self, "_where", where)

    def place(self, message: int) -> tuple[int, int | None] | None:
        """``(thread, predecessor)`` of ``message`` — the message its thread posts just before
        it, ``None`` for the thread's first; ``None`` when no thread orders ``message``."""
        cycle, base = divmod(message, self.stride) if self.stride else (0, message)
        if message < 0 or base not in self._where:
            return None
        s, i = self._where[base]
        ids = self.streams[s]
        if i > 0:
            return s, ids[i - 1] + cycle * self.stride
        if cycle > 0:
            return s, ids[-1] + (cycle - 1) * self.stride
        return s, None


class HeldSends:
    """A sender's messages that came before their predecessor (one per link; not thread-safe:
    only the link's sender thread uses it)."""

    def __init__(self, order: SendOrder | None):
        self.order = order
        self._last: dict[int, int] = {}  # thread -> the last message sent to it
        self._held: dict[int, tuple[int, object]] = {}  # predecessor -> (message, payload)

    def release(self, message: int, payload: object) -> list[tuple[int, object]]:
        """What may go on the wire now that ``message`` was produced, in order: nothing (it is
        held), or it and every held message it unblocks."""
        place = None if self.order is None else self.order.place(message)
        if place is None:
            return [(message, payload)]
        thread, pred = place
        if pred is not None and self._last.get(thread) != pred:
            self._held[pred] = (message, payload)
            return []
        out = [(message, payload)]
        self._last[thread] = message
        while message in self._held:
            message, payload = self._held.pop(message)
            out.append((message, payload))
            self._last[thread] = message
        return out

    @property
    def held(self) -> list[int]:
        """Messages still waiting for their predecessor."""
        return sorted(m for m, _ in self._held.values())


def send_orders(
    routed: RoutedRun, num_stages: int
) -> dict[str, dict[str, tuple[tuple[int, ...], ...]]]:
    """For every sender, per peer, the receive orders of that peer's threads restricted to the
    sender's messages (the :class:`SendOrder` streams, one cycle of them in a session).

    A device's compute receiver posts its ``recv`` actions in order; each relay flow's thread
    posts that flow's steps in order. The source's collector is left out: it posts a request's
    output when it releases the request, before any device can send it.
    """
    threads: list[tuple[str, Sequence[tuple[str, int, int]]]] = []
    for d, acts in routed.actions.items():
        recvs = [(str(a.peer), a.request, a.stage) for a in acts if a.kind == "recv"]
        threads.append((d, [r for r in recvs if r[0] != d]))  # a local input never crosses a link
    for d, steps in routed.relays.items():
        flows: dict[str, list[tuple[str, int, int]]] = {}
        for request, stage_in, prev, _nxt, flow in steps:
            flows.setdefault(flow, []).append((prev, request, stage_in))
        threads.extend((d, posts) for posts in flows.values())
    out: dict[str, dict[str, list[tuple[int, ...]]]] = {}
    for receiver, posts in threads:
        by_sender: dict[str, list[int]] = {}
        for sender, request, stage in posts:
            by_sender.setdefault(sender, []).append(message_id(request, stage, num_stages))
        for sender, ids in by_sender.items():
            out.setdefault(sender, {}).setdefault(receiver, []).append(tuple(ids))
    return {u: {v: tuple(s) for v, s in peers.items()} for u, peers in out.items()}


def link_orders(
    orders: Mapping[str, Sequence[Sequence[int]]], cycle: int, num_stages: int
) -> dict[str, SendOrder]:
    """A worker's :class:`SendOrder` per peer from its setup's streams."""
    stride = cycle * (num_stages + 2) if cycle else 0
    return {
        peer: SendOrder(tuple(tuple(int(m) for m in s) for s in streams), stride)
        for peer, streams in orders.items()
    }


__all__ = ["HeldSends", "SendOrder", "link_orders", "message_id", "send_orders"]
