"""Throughput for the exact chain DP: parametric search over bitset reachability, then an
exact branch-and-bound when relayed transfers share a link. See the **Throughput** section of
:mod:`.dp`.
"""

from __future__ import annotations

import numpy as np

from ...core.evaluate import period_s
from ...errors import InfeasibleError
from .._shared import REL_EPS, close, infeasible_message
from ._dp_model import INF, ChainModel
from ._dp_sum import least_sum_path, relaxed_to_go

# Search-node budget of the latency tie-break among period-optimal plans (each node is one
# numpy relaxation, ~1-5 ms at 50-180 pieces). Past it the plan is still period-optimal, just not
# proven the lowest-latency one among them.
TIE_BREAK_NODES = 20


def _clear_masks(n: int) -> list[int]:
    """``CLEAR[e]``: the bitset (over the 2^n subsets) of subsets that do not contain device ``e``."""
    size = 1 << n
    out = []
    for e in range(n):
        run = 1 << e
        pattern, length = (1 << run) - 1, 2 * run
        while length < size:
            pattern |= pattern << length
            length *= 2
        out.append(pattern & ((1 << size) - 1))
    return out


class _PeriodSearch:
    """Feasibility of "every item <= T" and plan recovery, for one ChainModel."""

    def __init__(self, model: ChainModel) -> None:
        self.m = model
        self.hop_mid, self.hop_start, self.hop_end = model.local(model.tt.hop_s)
        self.hop_midl = self.hop_mid.tolist()
        self.clear = _clear_masks(model.n)

    def candidates(self) -> np.ndarray:
        n, P = self.m.n, self.m.P
        vals = [self.m.time[np.isfinite(self.m.time)], self.hop_start, self.hop_end]
        off = ~np.eye(n, dtype=bool)
        if P > 1:
            vals.append(self.hop_mid[1:P][:, off].ravel())
        allv = np.concatenate([np.ravel(v) for v in vals])
        return np.unique(allv[np.isfinite(allv)])

    def reach(self, T: float) -> list[list[int]] | None:
        """Forward reachable used-sets per (pieces done, last device), or None if infeasible."""
        n, P = self.m.n, self.m.P
        counts = (
            (self.m.time <= T).sum(axis=2).tolist()
        )  # valid stage ends per (e, i): contiguous from i
        hs = self.hop_start.tolist()
        he = self.hop_end.tolist()
        hm = self.hop_midl
        clear = self.clear
        reach = [[0] * n for _ in range(P + 1)]
        for i in range(P):
            row = reach[i]
            if i > 0 and not any(row):
                continue
            for e in range(n):
                cnt = counts[e][i]
                if cnt == 0:
                    continue
                if i == 0:
                    if hs[e] > T:
                        continue
                    inn = 1  # only the empty set, before any stage
                else:
                    inn = 0
                    hme = hm[i]
                    for d in range(n):
                        if d != e and row[d] and hme[d][e] <= T:
                            inn |= row[d]
                    if not inn:
                        continue
                shifted = (inn & clear[e]) << (1 << e)
                if not shifted:
                    continue
                for j in range(i + 1, i + cnt + 1):
                    reach[j][e] |= shifted
        if any(reach[P][d] and he[d] <= T for d in range(n)):
            return reach
        return None

    def finish_sets(self, T: float) -> list[list[int]]:
        """Backward twin of :meth:`reach`: ``fin[i][d]`` holds the used-sets ``S`` from which the
        plan can still be completed with every item <= T (for states that really have ``d`` in ``S``)."""
        n, P = self.m.n, self.m.P
        counts = (self.m.time <= T).sum(axis=2).tolist()
        full = (1 << (1 << n)) - 1
        he = self.hop_end.tolist()
        hm = self.hop_midl
        with_e = [full ^ c for c in self.clear]  # subsets that contain device e
        fin = [[0] * n for _ in range(P + 1)]
        fin[P] = [full if he[d] <= T else 0 for d in range(n)]
        for i in range(P - 1, 0, -1):
            g = [0] * n
            for e in range(n):
                acc = 0
                for j in range(i + 1, i + counts[e][i] + 1):
                    acc |= fin[j][e]
                g[e] = (acc & with_e[e]) >> (1 << e)  # S without e such that S + e can finish
            for d in range(n):
                acc = 0
                hmd = hm[i][d]
                for e in range(n):
                    if e != d and g[e] and hmd[e] <= T:
                        acc |= g[e]
                fin[i][d] = acc
        return fin

    def recover(self, T: float, reach: list[list[int]]) -> list[tuple[int, int, int]]:
        """Walk back from a reachable end state to the start: one plan with every item <= T."""
        n, P = self.m.n, self.m.P
        time = self.m.time
        he = self.hop_end.tolist()
        d = next(d for d in range(n) if reach[P][d] and he[d] <= T)
        S = reach[P][d]
        S = (S & -S).bit_length() - 1  # lowest reachable set
        path = []
        j, e = P - 1, d
        while True:
            prev = S ^ (1 << e)
            found = None
            for i in range(j, -1, -1):
                if time[e, i, j] > T:
                    break
                if i == 0:
                    if prev == 0 and self.hop_start[e] <= T:
                        found = (0, -1)
                        break
                    continue
                for dd in range(n):
                    if prev >> dd & 1 and reach[i][dd] >> prev & 1 and self.hop_midl[i][dd][e] <= T:
                        found = (i, dd)
                        break
                if found:
                    break
            assert found is not None, "reachable state without predecessor"
            i, dd = found
            path.append((i, j, e))
            if i == 0:
                return path[::-1]
            j, e, S = i - 1, dd, prev


def min_period_path(
    model: ChainModel, node_limit: int, tie_break_latency: bool = True
) -> tuple[list[tuple[int, int, int]], bool, float, bool]:
    """Least-period plan: ``(stage path, proven optimal, lower bound T*, least latency among optimal)``."""
    search = _PeriodSearch(model)
    cands = search.candidates()
    if len(cands) == 0 or search.reach(float(cands[-1])) is None:
        raise InfeasibleError(infeasible_message(model.instance, "dp", model.names))
    lo, hi = 0, len(cands) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if search.reach(float(cands[mid])) is not None:
            hi = mid
        else:
            lo = mid + 1
    T = float(cands[lo])
    reach = search.reach(T)
    assert reach is not None
    recovered = search.recover(T, reach)
    candidates = [recovered]
    tie_broken = False
    if tie_break_latency:
        sc = np.where(model.time <= T, model.time, INF)
        lat_mid, lat_start, lat_end = model.local(model.tt.total_s)
        mid_ok = np.where(search.hop_mid <= T, lat_mid, INF)
        st_ok = np.where(search.hop_start <= T, lat_start, INF)
        en_ok = np.where(search.hop_end <= T, lat_end, INF)
        fast, fast_exact = least_sum_path(
            sc, mid_ok, st_ok, en_ok, min(node_limit, TIE_BREAK_NODES), dive=False
        )
        tie_broken = fast is not None and fast_exact
        # past the budget, improve the recovered plan's latency by local moves instead
        better = fast if tie_broken else polish_latency(recovered, sc, mid_ok, st_ok, en_ok)
        candidates.insert(0, better)
    # The first candidate whose true period attains the bound T* is optimal. Shared links (relayed
    # transfers) can push a candidate's period above T*; if all are pushed, search exactly.
    periods = [period_s(model.instance, model.stages(c)) for c in candidates]
    for k, (cand, true) in enumerate(zip(candidates, periods, strict=True)):
        if close(true, T):
            return cand, True, T, tie_broken and k == 0
    k = min(range(len(candidates)), key=lambda x: periods[x])
    inc, upper = _raise_threshold(model, search, cands, lo, candidates[k], periods[k])
    path, exact = _bnb_period(model, search, inc, upper, node_limit, T)
    return path, exact, T, False


# How many larger thresholds to try for a good incumbent before the exact branch and bound.
RAISE_TRIES = 24


def _raise_threshold(
    model: ChainModel,
    search: _PeriodSearch,
    cands: np.ndarray,
    lo: int,
    path: list[tuple[int, int, int]],
    upper: float,
) -> tuple[list[tuple[int, int, int]], float]:
    """Incumbents for the shared-link case: plans recovered at thresholds between T* and the best
    true period so far, kept when their true period is lower. Cheap (one reachability pass each)
    and often lands on the optimum, which makes the exact search a proof rather than a hunt."""
    hi = int(np.searchsorted(cands, upper, side="left"))
    if hi <= lo + 1:
        return path, upper
    for idx in sorted({int(x) for x in np.linspace(lo + 1, hi - 1, min(RAISE_TRIES, hi - lo - 1))}):
        if cands[idx] >= upper:
            break
        reach = search.reach(float(cands[idx]))
        if reach is None:
            continue
        cand = search.recover(float(cands[idx]), reach)
        true = period_s(model.instance, model.stages(cand))
        if true < upper * (1 - REL_EPS):
            path, upper = cand, true
    return path, upper


def polish_latency(
    path: list[tuple[int, int, int]],
    sc: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> list[tuple[int, int, int]]:
    """Best-improvement local search on a plan's latency, keeping every stage/transfer finite.

    Costs are the latency arrays with forbidden items (over the period bound, or not fitting in
    memory) set to ``inf``, so every move stays period-optimal in the relaxed sense. Moves: shift
    a boundary by one piece, merge two neighbouring stages onto either device, move a stage to
    an unused device, swap the devices of two stages. Heuristic; ``O(rounds * K * (D + K))``."""
    n, P, _ = sc.shape
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
        used = {e for _, _, e in cur}
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
        for k, (a, b, _e) in enumerate(cur):
            for x in range(n):
                if x not in used:
                    cands.append([*cur[:k], (a, b, x), *cur[k + 1 :]])
        for cand in cands:
            v = cost(cand)
            if v < best_val * (1 - REL_EPS):
                best, best_val = cand, v
        if best is None:
            break
        cur, cur_val = best, best_val
    return cur


def _bnb_period(
    model: ChainModel,
    search: _PeriodSearch,
    path: list[tuple[int, int, int]],
    upper: float,
    node_limit: int,
    lower: float = 0.0,
) -> tuple[list[tuple[int, int, int]], bool]:
    """Branch and bound over plans with exact per-link loads (needed only when transfers share links).

    Stops as soon as the incumbent reaches ``lower`` (the relaxed bound T*): nothing can beat it."""
    n, P = model.n, model.P
    tt = model.tt
    ix, src = model.inst_idx, model.src
    time = model.time.tolist()
    Hb, _G, _h0 = relaxed_to_go(model.time, search.hop_mid, search.hop_start, search.hop_end, "max")
    hb = Hb.tolist()
    fin = search.finish_sets(upper)  # completions with every item <= the incumbent (a relaxation)
    best = [upper, path]
    nodes = [0]
    complete = [True]

    def better(v: float) -> bool:
        return v < best[0] * (1 - REL_EPS)

    def add(loads: dict, k: int, u: int, v: int) -> tuple[float, list]:  # type: ignore[type-arg]
        peak, touched = 0.0, []
        for key, t in tt.paths[k][u][v]:
            new = loads.get(key, 0.0) + t
            touched.append((key, loads.get(key)))
            loads[key] = new
            peak = max(peak, new)
        return peak, touched

    def undo(loads: dict, touched: list) -> None:  # type: ignore[type-arg]
        for key, old in reversed(touched):
            if old is None:
                del loads[key]
            else:
                loads[key] = old

    def rec(i: int, d: int, S: int, cur: float, loads: dict, stages: list) -> None:  # type: ignore[type-arg]
        if best[0] <= lower * (1 + REL_EPS):
            return  # the incumbent attains the lower bound: optimal, stop searching
        nodes[0] += 1
        if nodes[0] > node_limit:
            complete[0] = False
            return
        if i == P:
            peak, touched = add(loads, P, ix[d], src)
            v = max(cur, peak)
            if better(v):
                best[0], best[1] = v, list(stages)
            undo(loads, touched)
            return
        u = src if i == 0 else ix[d]
        free = [e for e in range(n) if not S >> e & 1]
        free.sort(key=lambda e: tt.hop_s[i, u, ix[e]])  # cheap links first: good plans early
        for e in free:
            S2 = S | (1 << e)
            peak, touched = add(loads, i, u, ix[e])
            c0 = max(cur, peak)
            if better(c0):
                for j in range(i, P):
                    c = max(c0, time[e][i][j])
                    if not better(c):
                        break
                    if fin[j + 1][e] >> S2 & 1 and better(max(c, hb[j + 1][e])):
                        stages.append((i, j, e))
                        rec(j + 1, e, S2, c, loads, stages)
                        stages.pop()
            undo(loads, touched)

    rec(0, -1, 0, 0.0, {}, [])
    return best[1], complete[0]
