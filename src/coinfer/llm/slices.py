"""Chunk boundaries for token-sliced prefill that minimise the pipeline's makespan.

Why not equal chunks: chunk ``k`` attends over every token before it, so with equal sizes the
later chunks are the slow ones and the pipeline drains behind them; the best slicing makes
early chunks longer and late ones shorter (TeraPipe makes the same observation). Why not a
closed form: the makespan is the longest monotone path through a (chunk × resource) grid of
times, and each chunk's times depend on where it starts.

The search is exact over its boundary grid: a dynamic programme over prefix lengths whose
state is the vector of per-resource finish times after the prefix. A state whose vector is
componentwise no better than another's (same prefix, same chunk count) can be dropped — the
flow-shop step is monotone in it — and so can a state whose lower bound (finish + the least
work the rest of the prompt can still put on each resource) reaches the best known makespan.
Boundaries lie on multiples of ``ceil(total / max_points)`` tokens; with ``total ≤
max_points`` every boundary is considered and the result is the true optimum (the tests check
it against brute force).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .cost import LinkCost, LlmCosts, advance, chunk_resource_times, prefill_makespan


@dataclass(frozen=True, slots=True)
class SliceChoice:
    """Chunk sizes (in order), their predicted makespan, and whether every boundary was
    considered (``exact``) or only those on the ``granularity`` grid."""

    sizes: tuple[int, ...]
    makespan_s: float
    granularity: int

    @property
    def exact(self) -> bool:
        return self.granularity == 1


def equal_slices(total: int, k: int) -> list[int]:
    """``k`` chunks whose sizes differ by at most one token, larger first."""
    k = max(1, min(k, total))
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def choose_slices(
    total_tokens: int,
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None = None,
    *,
    k: int | None = None,
    batch: int = 1,
    max_points: int = 64,
) -> SliceChoice:
    """The slicing of ``total_tokens`` into ``k`` chunks (any number when ``k`` is None) with
    the least :func:`prefill_makespan` on the grid described in the module docstring."""
    n = int(total_tokens)
    if n < 1:
        raise ValueError(f"total_tokens must be >= 1, got {total_tokens}")
    if k is not None and not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and {n}, got {k}")
    q = max(1, math.ceil(n / max_points))
    grid = sorted({*range(q, n, q), n})
    if k is not None and k > len(grid):
        q, grid = 1, list(range(1, n + 1))  # a coarse grid cannot hold k chunks

    def times(c: int, p: int) -> list[float]:
        return chunk_resource_times(c, p, p + c == n, layer_counts, speeds, costs, links, batch)

    # Upper bound from equal slicings (the allowed counts): states that cannot beat it go.
    counts = [k] if k is not None else range(1, min(n, len(grid)) + 1)
    best_sizes = min(
        (equal_slices(n, j) for j in counts),
        key=lambda s: prefill_makespan(s, layer_counts, speeds, costs, links, batch=batch),
    )
    best = prefill_makespan(best_sizes, layer_counts, speeds, costs, links, batch=batch)
    floor = _least_work(n, layer_counts, speeds, costs, links, batch)

    # front[(end, chunks)] = list of (finish vector, sizes so far); ``chunks`` is 0 when free.
    front: dict[tuple[int, int], list[tuple[list[float], tuple[int, ...]]]] = {(0, 0): [([], ())]}
    for start in [0, *grid[:-1]]:
        for key in [key for key in front if key[0] == start]:
            for finish, sizes in front.pop(key):
                chunks = key[1] + 1 if k is not None else 0
                for end in grid:
                    if end <= start or (k is not None and not _room(end, chunks, k, grid, n)):
                        continue
                    new = advance(finish, times(end - start, start))
                    if end < n and _bound(new, floor, end) >= best:
                        continue
                    if end == n:
                        if new[-1] < best:
                            best, best_sizes = new[-1], [*sizes, end - start]
                        continue
                    _insert(front.setdefault((end, chunks), []), new, (*sizes, end - start))
    return SliceChoice(tuple(best_sizes), best, q)


def _room(end: int, chunks: int, k: int, grid: Sequence[int], n: int) -> bool:
    """With ``chunks`` chunks ending at ``end``, can the remaining ``k - chunks`` still fit?"""
    left = k - chunks
    if end == n:
        return left == 0
    return left >= 1 and sum(1 for g in grid if g > end) >= left


def _insert(
    states: list[tuple[list[float], tuple[int, ...]]], new: list[float], sizes: tuple[int, ...]
) -> None:
    """Add ``new`` to a Pareto front of finish vectors unless a state there dominates it."""
    for old, _ in states:
        if all(a <= b for a, b in zip(old, new, strict=True)):
            return
    states[:] = [s for s in states if not all(b <= a for a, b in zip(s[0], new, strict=True))]
    states.append((new, sizes))


def _least_work(
    n: int,
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None,
    batch: int,
) -> list[list[float]]:
    """``floor[j][r]``: the least time resource ``j`` can still spend on the prompt's last
    ``r`` tokens, however they are sliced (one fixed cost, per-token costs, and the attention
    pairs of single-token chunks; a link: one latency plus the bytes). Lower bounds only."""
    n_res = 2 * len(layer_counts) - 1
    floor = [[0.0] * (n + 1) for _ in range(n_res)]
    pairs = 0
    for r in range(1, n + 1):
        pairs += n - r + 1  # the token at index i attends at least i + 1 keys
        for s, (layers, v) in enumerate(zip(layer_counts, speeds, strict=True)):
            work = layers * (
                costs.layer_fixed_s + batch * (costs.layer_token_s * r + costs.layer_pair_s * pairs)
            )
            work += costs.embed_s(r * batch) if s == 0 else 0.0
            work += costs.head_s(batch) if s == len(layer_counts) - 1 else 0.0
            work += costs.item_overhead_s  # at least one more chunk
            floor[2 * s][r] = work / v
            if s < len(layer_counts) - 1:
                link = links[s] if links is not None else LinkCost()
                floor[2 * s + 1][r] = link.time_s(r * batch * costs.act_bytes_per_token)
    return floor


def _bound(finish: Sequence[float], floor: list[list[float]], end: int) -> float:
    """A lower bound on the makespan of any completion of a prefix ending at ``end``."""
    left = len(floor[0]) - 1 - end
    return max(f + floor[j][left] for j, f in enumerate(finish))
