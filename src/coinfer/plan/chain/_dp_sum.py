"""Latency and energy for the exact chain DP: additive costs, branch on device reuse.

The relaxation (a device may be reused) is a shortest path over ``(pieces done, device)``;
a best-first search branches on the first reused device until the optimum is reuse-free. See
the **Latency and energy** section of :mod:`.dp`.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ...errors import InfeasibleError
from .._shared import infeasible_message
from ._dp_model import INF, ChainModel


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
