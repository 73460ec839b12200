"""Cheapest store-and-forward routes: the path every transfer takes under the reference model.

A hop of ``x`` bytes over a directed link costs ``L + x / B``; a transfer takes the path with the
least total cost for its size (a relay through other devices when that beats the direct link).
A pure function of the links, so the instance, planners and runtime all route the same way.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar


class _Hop(Protocol):
    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    def transfer_s(self, nbytes: float) -> float: ...


LinkLike = TypeVar("LinkLike", bound=_Hop)


def cheapest_paths(
    out_links: Mapping[str, Sequence[LinkLike]],
    link_by_pair: Mapping[tuple[str, str], LinkLike],
    src: str,
    nbytes: float,
) -> dict[str, tuple[LinkLike, ...]]:
    """Dijkstra from ``src`` with edge weight ``L + x / B``: the cheapest path to every device.

    An improvement must exceed 1e-15 s to replace a path (float noise never flips a route), and
    a direct link wins exact ties so plans read naturally."""
    best: dict[str, float] = {src: 0.0}
    prev: dict[str, LinkLike] = {}
    heap: list[tuple[float, str]] = [(0.0, src)]
    done: set[str] = set()
    while heap:
        dist, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        for lk in out_links.get(u, ()):
            nd = dist + lk.transfer_s(nbytes)
            if nd < best.get(lk.dst, math.inf) - 1e-15:
                best[lk.dst] = nd
                prev[lk.dst] = lk
                heapq.heappush(heap, (nd, lk.dst))
    tree: dict[str, tuple[LinkLike, ...]] = {}
    for dst in prev:
        if dst == src:
            continue
        direct = link_by_pair.get((src, dst))
        if direct is not None and direct.transfer_s(nbytes) <= best[dst] + 1e-15:
            tree[dst] = (direct,)
            continue
        links: list[LinkLike] = []
        v = dst
        while v != src:
            lk = prev[v]
            links.append(lk)
            v = lk.src
        tree[dst] = tuple(reversed(links))
    return tree
