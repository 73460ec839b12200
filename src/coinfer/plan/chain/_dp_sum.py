"""Latency and energy for the exact chain DP: additive costs, branch on device reuse.

The relaxation (a device may be reused) is a shortest path over ``(pieces done, device)``;
a best-first search branches on the first reused device until the optimum is reuse-free. See
the **Latency and energy** section of :mod:`.dp`. Over device classes (units with counts,
:mod:`._dp_classes`) the same relaxation comes first, and when it overuses a class an exact DP
over count vectors replaces the branching (:func:`least_sum_counts`): branching on which twin
to drop would explore every permutation of identical devices.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ...errors import InfeasibleError
from .._shared import close, infeasible_message
from ._dp_model import INF, ChainModel, strides


def relaxed_to_go(
    sc: np.ndarray, mid: np.ndarray, start: np.ndarray, end: np.ndarray, combine: str = "sum"
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cost-to-go when devices may be reused (a lower bound), by backward DP in numpy.

    Returns ``H[i, d]`` (``i`` pieces done, last device ``d``; ``H[P] = end``), ``G[i, e]`` (a
    stage starting at piece ``i`` on ``e``, included) and the value from the start. ``combine``
    is ``"sum"`` (latency/energy) or ``"max"`` (the bottleneck, for periods)."""
    n, P, _ = sc.shape
    op = np.add if combine == "sum" else np.maximum
    H = np.full((P + 1, n), INF)
    G = np.full((P, n), INF)
    H[P] = end
    for i in range(P - 1, -1, -1):
        G[i] = op(sc[:, i, i:], H[i + 1 :, :].T).min(axis=1)
        if i > 0:
            H[i] = op(mid[i], G[i][None, :]).min(axis=1)
    h0 = float(op(start, G[0]).min()) if P else 0.0
    return H, G, h0


def _relaxed_path(sc, mid, start, H, G) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """The relaxed optimum itself (may reuse a device), following the argmins forward."""
    P = sc.shape[1]
    path = []
    e = int(np.argmin(start + G[0]))
    i = 0
    while True:
        j = i + int(np.argmin(sc[e, i, i:] + H[i + 1 :, e]))
        path.append((i, j, e))
        if j == P - 1:
            return path
        i = j + 1
        e = int(np.argmin(mid[i][e] + G[i]))


def min_sum_path(model: ChainModel, node_limit: int) -> tuple[list[tuple[int, int, int]], bool]:
    """Least total latency/energy plan; returns the stage path and whether it is proven optimal."""
    mid, start, end = model.transfer_cost()
    path, exact = least_sum_path(model.sc, mid, start, end, node_limit)
    if path is None:
        raise InfeasibleError(infeasible_message(model.instance, "dp", model.names))
    return path, exact


# A device's allowed stages in a search node: (lo, hi, must_to, must_from) = a stage [i, j] on it
# needs lo <= i, j <= hi, i <= must_to and j >= must_from. The free constraint allows anything.
_FREE = (0, 1 << 30, 1 << 30, -1)


def least_sum_path(
    sc: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    node_limit: int,
    *,
    dive: bool = True,
) -> tuple[list[tuple[int, int, int]] | None, bool]:
    """Least-sum plan using each device at most once: best-first branching on reused devices.

    Each search node is the reuse-allowed relaxation (:func:`relaxed_to_go`) with some (device,
    piece range) combinations forbidden. If a node's relaxed optimum uses every device once it is
    feasible, and since nodes are expanded in order of their relaxed bound it is optimal. Otherwise
    take the first device ``x`` it uses twice, at stages ``k1 < k2``, and ``m`` = the first piece of
    ``k2``; every plan that uses ``x`` once has ``x``'s stage (a) end before ``m``, (b) start at or
    after ``m``, or (c) contain pieces ``m - 1`` and ``m`` — three children, each excluding the
    current relaxed optimum (in (c) two stages on ``x`` would overlap, so ``x`` is used at most
    once). Returns ``(path, proven optimal)``; ``(None, True)`` if no plan exists. Past
    ``node_limit`` nodes, a depth-first dive finds some plan (not proven optimal), or with
    ``dive=False`` the search gives up (``(None, False)``)."""
    n, P, _ = sc.shape
    ii = np.arange(P)[:, None]
    jj = np.arange(P)[None, :]

    def solve(
        cons: tuple[tuple[int, int, int, int], ...],
    ) -> tuple[float, list[tuple[int, int, int]]] | None:
        s = sc
        if any(c != _FREE for c in cons):
            s = sc.copy()
            for x, (lo, hi, mt, mf) in enumerate(cons):
                if (lo, hi, mt, mf) != _FREE:
                    s[x][~((ii >= lo) & (jj <= hi) & (ii <= mt) & (jj >= mf))] = INF
        H, G, h0 = relaxed_to_go(s, mid, start, end, "sum")
        if not math.isfinite(h0):
            return None
        return h0, _relaxed_path(s, mid, start, H, G)

    root = solve((_FREE,) * n)
    if root is None:
        return None, True
    heap: list[tuple[float, int, tuple, list]] = [(root[0], 0, (_FREE,) * n, root[1])]  # type: ignore[type-arg]
    order = 0
    while heap:
        _val, _, cons, path = heapq.heappop(heap)
        seen: dict[int, int] = {}
        reuse = None
        for k, (_i, _j, e) in enumerate(path):
            if e in seen:
                reuse = (e, seen[e], k)
                break
            seen[e] = k
        if reuse is None:
            return path, True
        if order >= node_limit:
            if not dive:
                return None, False
            break
        x, _k1, k2 = reuse
        m = path[k2][0]
        lo, hi, mt, mf = cons[x]
        for child in (
            (lo, min(hi, m - 1), mt, mf),
            (max(lo, m), hi, mt, mf),
            (lo, hi, min(mt, m - 1), max(mf, m)),
        ):
            c2 = (*cons[:x], child, *cons[x + 1 :])
            sol = solve(c2)
            if sol is not None:
                order += 1
                heapq.heappush(heap, (sol[0], order, c2, sol[1]))
    H, _G, _h0 = relaxed_to_go(sc, mid, start, end, "sum")
    dive = _dive(
        sc.tolist(),
        mid.tolist(),
        start.tolist(),
        end.tolist(),
        H.tolist(),
        P,
        n,
        max(node_limit, 10_000),
    )
    return dive, False


def _dive(scl, midl, startl, endl, hl, P, n, budget) -> list[tuple[int, int, int]] | None:  # type: ignore[no-untyped-def]
    """Depth-first, best-heuristic-first search for any complete plan (fallback past the cap)."""
    steps = [0]

    def rec(i: int, d: int, S: int, g: float) -> list[tuple[int, int, int]] | None:
        steps[0] += 1
        if steps[0] > budget:
            return None
        if i == P:
            return [] if endl[d] < INF else None
        opts = []
        for e in range(n):
            if S >> e & 1:
                continue
            t = startl[e] if i == 0 else midl[i][d][e]
            if t == INF:
                continue
            for j in range(i, P):
                c = scl[e][i][j]
                if c == INF:
                    break
                opts.append((g + t + c + hl[j + 1][e], j, e, g + t + c))
        for _f, j, e, g2 in sorted(opts):
            if _f == INF:
                break
            rest = rec(j + 1, e, S | (1 << e), g2)
            if rest is not None:
                return [(i, j, e), *rest]
        return None

    return rec(0, -1, 0, 0.0)


# Budget of the exact count-vector DP (pieces x units x used-count vectors, one float each):
# 4 million floats = 32 MB and ~0.1-0.3 s of numpy here; past it the caller settles for a
# heuristic and reports the relaxation as a bound.
COUNT_DP_BUDGET = 4_000_000


def least_sum_counts(
    sc: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    counts: list[int],
    budget: int = COUNT_DP_BUDGET,
) -> tuple[list[tuple[int, int, int]] | None, bool]:
    """Least-sum plan over units with multiplicities (device classes): unit ``e`` serves at most
    ``counts[e]`` stages; ``mid[k, e, e]`` prices a transfer between two members of ``e``.

    First the relaxation without the count limits (:func:`relaxed_to_go`); when its optimum
    respects the counts it is optimal (the usual case: a lone request uses few devices). Else,
    if ``P * units * prod(counts + 1)`` is within ``budget``, the exact DP over (pieces done,
    last unit, used-count vector), vectorised over the vectors in numpy. Returns
    ``(path, proven)``: ``(None, True)`` when no plan exists, ``(None, False)`` past the budget.
    """
    n, P, _ = sc.shape
    H, G, h0 = relaxed_to_go(sc, mid, start, end, "sum")
    if not math.isfinite(h0):
        return None, True
    path = _relaxed_path(sc, mid, start, H, G)
    used = [0] * n
    for _i, _j, e in path:
        used[e] += 1
    if all(u <= c for u, c in zip(used, counts, strict=True)):
        return path, True
    place, size = strides(counts)
    if P * n * size > budget:
        return None, False
    return _count_dp(sc, mid, start, end, counts, place, size), True


def _count_dp(sc, mid, start, end, counts, place, size) -> list[tuple[int, int, int]] | None:  # type: ignore[no-untyped-def]
    """Exact least sum over (pieces done, last unit, used-count vector); see :func:`least_sum_counts`."""
    n, P, _ = sc.shape
    vec = np.arange(size)
    room = [(vec // place[e]) % (counts[e] + 1) < counts[e] for e in range(n)]
    V = np.full((P + 1, n, size), INF)
    for e in range(n):
        if math.isfinite(start[e]):
            V[1:, e, place[e]] = start[e] + sc[e, 0, :]
    for i in range(1, P):
        for e in range(n):
            row = sc[e, i, i:]
            cnt = int(np.isfinite(row).sum())  # memory-feasible ends are a prefix
            if cnt == 0:
                continue
            inn = (V[i] + mid[i][:, e][:, None]).min(axis=0)
            shifted = np.full(size, INF)
            k = place[e]
            shifted[k:] = np.where(room[e][: size - k], inn[: size - k], INF)
            if not np.isfinite(shifted).any():
                continue
            blk = V[i + 1 : i + cnt + 1, e]
            np.minimum(blk, shifted[None, :] + row[:cnt, None], out=blk)
    tot = V[P] + np.asarray(end)[:, None]
    flat = int(np.argmin(tot))
    if not math.isfinite(float(tot.ravel()[flat])):
        return None
    e, s = divmod(flat, size)
    out = []
    j = P - 1
    while True:
        v = V[j + 1, e, s]
        prev = s - place[e]
        found = None
        for i in range(j, -1, -1):
            if not math.isfinite(sc[e, i, j]):
                break
            if i == 0:
                if prev == 0 and close(float(start[e] + sc[e, 0, j]), float(v)):
                    found = (0, -1)
                    break
                continue
            for d in range(n):
                if close(float(V[i, d, prev] + mid[i, d, e] + sc[e, i, j]), float(v)):
                    found = (i, d)
                    break
            if found:
                break
        assert found is not None, "count DP state without predecessor"
        i, d = found
        out.append((i, j, e))
        if i == 0:
            return out[::-1]
        j, e, s = i - 1, d, prev
