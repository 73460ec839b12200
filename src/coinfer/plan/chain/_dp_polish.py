"""Local searches on a stage path: on its period items (:func:`polish_period`, for plans beyond
exact reach, :mod:`._dp_bound`) and on its latency (:func:`polish_latency`, the tie-break among
period-optimal plans when the exact latency search runs out of budget, :mod:`._dp_period`).

**Period.** The exact searches shrink the state space; past their reach the plan comes from a reduced
problem (a cut to the fastest devices, or a grouped relaxation realised member by member),
and the devices it leaves out may hold better stages. This descent works on the full device
set with the per-item figures (stage times, transfer items): each round it looks only at the
stages around the current bottleneck item — only changes there can lower the maximum — and
tries every unused device on each of them, every split of each of them with an unused device
taking one side, every boundary between them, and merging neighbours. The best move by
(largest item, then sum of items: the sum breaks plateaus where the maximum cannot move yet)
is applied. A move is priced in ``O(stages it touches)`` from prefix/suffix maxima and sums,
so a round over 64 devices costs a few milliseconds. Heuristic: the caller prices the result
with the reference model and keeps it only if it is better.
"""

from __future__ import annotations

import numpy as np

from .._shared import REL_EPS

Path = list[tuple[int, int, int]]

# Relative improvement a move must bring (float noise never makes the descent cycle).
MIN_GAIN = 1e-12


def polish_period(
    path: Path,
    time: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    rounds: int = 200,
) -> Path:
    """Descend on (max item, sum of items) from ``path``; ``mid[k, d, e]`` must be ``inf`` for
    ``d == e``. Returns a path no worse than ``path`` under those figures."""
    figs = (time.tolist(), mid.tolist(), start.tolist(), end.tolist())
    cur = list(path)
    for _ in range(rounds):
        move = _best_move(cur, figs, time.shape[0])
        if move is None:
            break
        a, b, new = move
        cur = [*cur[:a], *new, *cur[b:]]
    return cur


def _best_move(cur: Path, figs, n: int) -> tuple[int, int, Path] | None:  # type: ignore[no-untyped-def]
    """The best improving replacement of some stages ``a..b-1`` near the bottleneck, or None."""
    tl, ml, sl, el = figs
    K = len(cur)
    its = []  # item 2k = transfer into stage k, 2k+1 = stage k's compute, 2K = back to the source
    for k, (i, j, e) in enumerate(cur):
        its.append(sl[e] if k == 0 else ml[i][cur[k - 1][2]][e])
        its.append(tl[e][i][j])
    its.append(el[cur[-1][2]])
    pre_m, pre_s = [0.0] * (2 * K + 2), [0.0] * (2 * K + 2)
    for t, v in enumerate(its):
        pre_m[t + 1], pre_s[t + 1] = max(pre_m[t], v), pre_s[t] + v
    suf_m, suf_s = [0.0] * (2 * K + 2), [0.0] * (2 * K + 2)
    for t in range(2 * K, -1, -1):
        suf_m[t], suf_s[t] = max(suf_m[t + 1], its[t]), suf_s[t + 1] + its[t]
    best = (pre_m[-1], pre_s[-1])
    best_move: tuple[int, int, Path] | None = None

    def consider(a: int, b: int, new: Path) -> None:
        """Price stages ``a..b-1`` replaced by ``new``: the items before 2a and after 2b stay."""
        nonlocal best, best_move
        m, s = pre_m[2 * a], pre_s[2 * a]
        prev = cur[a - 1][2] if a > 0 else -1
        for i, j, e in new:
            v = sl[e] if prev < 0 else ml[i][prev][e]
            c = tl[e][i][j]
            m, s = max(m, v, c), s + v + c
            prev = e
        if b < K:
            v = ml[cur[b][0]][prev][cur[b][2]]
            m, s = max(m, v, suf_m[2 * b + 1]), s + v + suf_s[2 * b + 1]
        else:
            v = el[prev]
            m, s = max(m, v), s + v
        bm, bs = best
        if m < bm * (1 - MIN_GAIN) or (m <= bm and s < bs * (1 - MIN_GAIN)):
            best, best_move = (m, s), (a, b, new)

    used = {e for _, _, e in cur}
    free = [x for x in range(n) if x not in used]
    worst = max(range(len(its)), key=lambda t: its[t])
    k = min(worst // 2, K - 1)
    around = sorted({x for x in (k - 1, k, k + 1) if 0 <= x < K})
    for q in around:
        i, j, e = cur[q]
        for x in free:
            consider(q, q + 1, [(i, j, x)])
            for m_ in range(i + 1, j + 1):
                consider(q, q + 1, [(i, m_ - 1, e), (m_, j, x)])
                consider(q, q + 1, [(i, m_ - 1, x), (m_, j, e)])
    for q in around:
        if q + 1 >= K:
            continue
        (i, _j, e), (_i2, j2, f) = cur[q], cur[q + 1]
        for m_ in range(i + 1, j2 + 1):
            consider(q, q + 2, [(i, m_ - 1, e), (m_, j2, f)])
        consider(q, q + 2, [(i, j2, e)])
        consider(q, q + 2, [(i, j2, f)])
    return best_move


def polish_latency(
    path: list[tuple[int, int, int]],
    sc: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    counts: list[int] | None = None,
) -> list[tuple[int, int, int]]:
    """Best-improvement local search on a plan's latency, keeping every stage/transfer finite.

    Costs are the latency arrays with forbidden items (over the period bound, or not fitting in
    memory) set to ``inf``, so every move stays period-optimal in the relaxed sense. Moves: shift
    a boundary by one piece, merge two neighbouring stages onto either device, move a stage to
    an unused device, swap the devices of two stages. Heuristic; ``O(rounds * K * (D + K))``.
    ``counts`` (default all 1) is how many members each unit has: a stage may move to a unit
    with a member to spare; ``mid[k, e, e]`` prices a transfer between two members of ``e``."""
    n, P, _ = sc.shape
    cap = counts or [1] * n
    scl, midl, stl, enl = sc.tolist(), mid.tolist(), start.tolist(), end.tolist()

    def cost(p: list[tuple[int, int, int]]) -> float:
        total = stl[p[0][2]]
        for k, (i, j, e) in enumerate(p):
            if k:
                total += midl[i][p[k - 1][2]][e]
            total += scl[e][i][j]
        return total + enl[p[-1][2]]

    cur, cur_val = list(path), cost(path)
    for _ in range(10 * P):
        best, best_val = None, cur_val
        used = [0] * n
        for _i, _j, e in cur:
            used[e] += 1
        cands: list[list[tuple[int, int, int]]] = []
        for k in range(len(cur) - 1):
            (a, b, e), (c, d, f) = cur[k], cur[k + 1]
            if b > a:
                cands.append([*cur[:k], (a, b - 1, e), (b, d, f), *cur[k + 2 :]])
            if c < d:
                cands.append([*cur[:k], (a, c, e), (c + 1, d, f), *cur[k + 2 :]])
            cands.append([*cur[:k], (a, d, e), *cur[k + 2 :]])
            cands.append([*cur[:k], (a, d, f), *cur[k + 2 :]])
            for q in range(k + 1, len(cur)):
                sw = list(cur)
                sw[k], sw[q] = (cur[k][0], cur[k][1], cur[q][2]), (cur[q][0], cur[q][1], cur[k][2])
                cands.append(sw)
        for k, (a, b, e0) in enumerate(cur):
            for x in range(n):
                if used[x] < cap[x] and x != e0:
                    cands.append([*cur[:k], (a, b, x), *cur[k + 1 :]])
        for cand in cands:
            v = cost(cand)
            if v < best_val * (1 - REL_EPS):
                best, best_val = cand, v
        if best is None:
            break
        cur, cur_val = best, best_val
    return cur
