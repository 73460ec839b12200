"""Throughput for the exact chain DP: parametric search over bitset reachability, then an
exact branch-and-bound when relayed transfers share a link. See the **Throughput** section of
:mod:`.dp`.

The search runs over *units* with multiplicities: a unit is one device (the bitset DP, every
count 1) or a class of interchangeable devices (:mod:`._dp_classes`, count = class size). A
used-set is then a vector of used counts per unit, numbered in mixed radix (digit ``e`` in
``0..counts[e]``, place value ``stride[e]``), and the reachable vectors of one ``(pieces done,
last unit)`` are one Python int over those ``prod(counts + 1)`` numbers. With every count 1 this
is exactly the ``2^D`` subset bitset (stride ``2^e``), so one code path serves both: "use one
more member of ``e``" is an AND with the vectors whose digit ``e`` is below its count and a
shift by ``stride[e]``.
"""

from __future__ import annotations

import numpy as np

from ...core.evaluate import period_s
from ...errors import InfeasibleError
from .._shared import REL_EPS, close, infeasible_message
from ._dp_model import INF, ChainModel, strides
from ._dp_polish import polish_latency
from ._dp_sum import least_sum_counts, least_sum_path, relaxed_to_go

# Search-node budget of the latency tie-break among period-optimal plans (each node is one
# numpy relaxation, ~1-5 ms at 50-180 pieces). Past it the plan is still period-optimal, just not
# proven the lowest-latency one among them.
TIE_BREAK_NODES = 20


def _clear_masks(counts: list[int]) -> list[int]:
    """``CLEAR[e]``: the bitset (over all used-count vectors) of vectors whose digit ``e`` is below
    ``counts[e]`` — those that may still take one more member of unit ``e``. With every count 1
    these are the subsets that do not contain device ``e``."""
    place, size = strides(counts)
    out = []
    for e, c in enumerate(counts):
        run = place[e] * c  # within one period of digit e: the first c * stride numbers qualify
        period = place[e] * (c + 1)
        pattern, length = (1 << run) - 1, period
        while length < size:
            pattern |= pattern << length
            length *= 2
        out.append(pattern & ((1 << size) - 1))
    return out


def unit_count(state: int, e: int, place: list[int], counts: list[int]) -> int:
    """Digit ``e`` of a used-count vector: how many members of unit ``e`` it has used."""
    return state // place[e] % (counts[e] + 1)


class _PeriodSearch:
    """Feasibility of "every item <= T" and plan recovery, for one model over units.

    ``model`` is a :class:`ChainModel` (units = devices) or a class model (units = classes); it
    provides ``time``, ``counts`` and ``hop_arrays()`` whose middle diagonal ``[k, e, e]`` is the
    item of a transfer between two members of unit ``e`` (``inf`` for a single device)."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.m = model
        self.hop_mid, self.hop_start, self.hop_end = model.hop_arrays()
        self.hop_midl = self.hop_mid.tolist()
        self.counts = list(model.counts)
        self.place, self.size = strides(self.counts)
        self.clear = _clear_masks(self.counts)

    def candidates(self) -> np.ndarray:
        P = self.m.P
        vals = [self.m.time[np.isfinite(self.m.time)], self.hop_start, self.hop_end]
        if P > 1:
            vals.append(self.hop_mid[1:P].ravel())
        allv = np.concatenate([np.ravel(v) for v in vals])
        return np.unique(allv[np.isfinite(allv)])

    def reach(self, T: float) -> list[list[int]] | None:
        """Forward reachable used-vectors per (pieces done, last unit), or None if infeasible."""
        n, P = self.m.n, self.m.P
        counts = (
            (self.m.time <= T).sum(axis=2).tolist()
        )  # valid stage ends per (e, i): contiguous from i
        hs = self.hop_start.tolist()
        he = self.hop_end.tolist()
        hm = self.hop_midl
        clear, place = self.clear, self.place
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
                    inn = 1  # only the empty vector, before any stage
                else:
                    inn = 0
                    hme = hm[i]
                    for d in range(n):
                        if row[d] and hme[d][e] <= T:
                            inn |= row[d]
                    if not inn:
                        continue
                shifted = (inn & clear[e]) << place[e]
                if not shifted:
                    continue
                for j in range(i + 1, i + cnt + 1):
                    reach[j][e] |= shifted
        if any(reach[P][d] and he[d] <= T for d in range(n)):
            return reach
        return None

    def finish_sets(self, T: float) -> list[list[int]]:
        """Backward twin of :meth:`reach`: ``fin[i][d]`` holds the used-vectors ``S`` from which the
        plan can still be completed with every item <= T (for states that really have used ``d``)."""
        n, P = self.m.n, self.m.P
        counts = (self.m.time <= T).sum(axis=2).tolist()
        full = (1 << self.size) - 1
        he = self.hop_end.tolist()
        hm = self.hop_midl
        with_e = [(c << p) & full for c, p in zip(self.clear, self.place, strict=True)]
        fin = [[0] * n for _ in range(P + 1)]
        fin[P] = [full if he[d] <= T else 0 for d in range(n)]
        for i in range(P - 1, 0, -1):
            g = [0] * n
            for e in range(n):
                acc = 0
                for j in range(i + 1, i + counts[e][i] + 1):
                    acc |= fin[j][e]
                g[e] = (acc & with_e[e]) >> self.place[e]  # S such that S + one e can finish
            for d in range(n):
                acc = 0
                hmd = hm[i][d]
                for e in range(n):
                    if g[e] and hmd[e] <= T:
                        acc |= g[e]
                fin[i][d] = acc
        return fin

    def recover(self, T: float, reach: list[list[int]]) -> list[tuple[int, int, int]]:
        """Walk back from a reachable end state to the start: one plan with every item <= T."""
        n, P = self.m.n, self.m.P
        time = self.m.time
        place, cnts = self.place, self.counts
        he = self.hop_end.tolist()
        d = next(d for d in range(n) if reach[P][d] and he[d] <= T)
        S = reach[P][d]
        S = (S & -S).bit_length() - 1  # lowest reachable vector
        path = []
        j, e = P - 1, d
        while True:
            prev = S - place[e]
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
                    if (
                        unit_count(prev, dd, place, cnts)
                        and reach[i][dd] >> prev & 1
                        and self.hop_midl[i][dd][e] <= T
                    ):
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


def least_feasible(
    search: _PeriodSearch, cands: np.ndarray | None = None
) -> tuple[float, list[list[int]]] | None:
    """The least candidate threshold at which ``search`` reaches a plan, with its reach sets,
    by binary search over the sorted candidates (``None``: no plan at any threshold)."""
    cands = search.candidates() if cands is None else cands
    if len(cands) == 0 or search.reach(float(cands[-1])) is None:
        return None
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
    return T, reach


def min_period_path(
    model,
    node_limit: int,
    tie_break_latency: bool = True,  # type: ignore[no-untyped-def]
) -> tuple[list[tuple[int, int, int]], bool, float, bool]:
    """Least-period plan: ``(stage path, proven optimal, lower bound T*, least latency among optimal)``.

    ``model`` is a :class:`ChainModel` or a class model (:mod:`._dp_classes`). With classes the
    exact shared-link branch and bound is not available (it needs concrete devices per state):
    when relayed transfers push every candidate above ``T*``, the best incumbent is returned
    unproven and ``T*`` still bounds the optimum from below."""
    search = _PeriodSearch(model)
    cands = search.candidates()
    found = least_feasible(search, cands)
    if found is None:
        raise InfeasibleError(infeasible_message(model.instance, "dp", model.names))
    T, reach = found
    lo = int(np.searchsorted(cands, T))  # T is one of the candidates
    recovered = search.recover(T, reach)
    candidates = [recovered]
    tie_broken = False
    if tie_break_latency:
        sc = np.where(model.time <= T, model.time, INF)
        lat_mid, lat_start, lat_end = model.latency_arrays()
        mid_ok = np.where(search.hop_mid <= T, lat_mid, INF)
        st_ok = np.where(search.hop_start <= T, lat_start, INF)
        en_ok = np.where(search.hop_end <= T, lat_end, INF)
        if all(c == 1 for c in search.counts):
            fast, fast_exact = least_sum_path(
                sc, mid_ok, st_ok, en_ok, min(node_limit, TIE_BREAK_NODES), dive=False
            )
        else:
            fast, fast_exact = least_sum_counts(sc, mid_ok, st_ok, en_ok, search.counts)
        tie_broken = fast is not None and fast_exact
        # past the budget, improve the recovered plan's latency by local moves instead
        better = (
            fast
            if tie_broken
            else polish_latency(recovered, sc, mid_ok, st_ok, en_ok, search.counts)
        )
        candidates.insert(0, better)
    # The first candidate whose true period attains the bound T* is optimal. Shared links (relayed
    # transfers) can push a candidate's period above T*; if all are pushed, search exactly.
    periods = [period_s(model.instance, model.stages(c)) for c in candidates]
    for k, (cand, true) in enumerate(zip(candidates, periods, strict=True)):
        if close(true, T):
            return cand, True, T, tie_broken and k == 0
    k = min(range(len(candidates)), key=lambda x: periods[x])
    inc, upper = _raise_threshold(model, search, cands, lo, candidates[k], periods[k])
    if not isinstance(model, ChainModel):
        inc, upper = _medium_variants(model, inc, upper)
        return inc, close(upper, T), T, False
    path, exact = _bnb_period(model, search, inc, upper, node_limit, T)
    return path, exact, T, False


# Factors by which the class DP's shared-medium items are inflated in its extra attempts.
MEDIUM_FACTORS = (2.0, 3.0, 4.0, 6.0)


class _Scaled:
    """A model whose items over a shared medium count ``factor`` times (see below)."""

    def __init__(self, model, factor: float) -> None:  # type: ignore[no-untyped-def]
        self.n, self.P, self.time, self.counts = model.n, model.P, model.time, model.counts
        mid, start, end = model.hop_arrays()
        mm, ms, me = model.medium_masks()
        self._arrays = (
            np.where(mm[None], mid * factor, mid),
            np.where(ms, start * factor, start),
            np.where(me, end * factor, end),
        )

    def hop_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._arrays


def _medium_variants(model, path, upper: float) -> tuple[list[tuple[int, int, int]], float]:  # type: ignore[no-untyped-def]
    """Class plans for instances with a shared medium: the items do not see several transfers
    adding up on one medium, so the plan at ``T*`` may load it several times over. Searching
    again with each medium item counted ``f`` times (a plan with ``f`` medium transfers then
    fits) finds plans that use the medium less; each is priced by the reference model and the
    best kept. Heuristic (the bound stays ``T*``); skipped when no transfer crosses a medium."""
    mm, ms, me = model.medium_masks()
    if not (mm.any() or ms.any() or me.any()):
        return path, upper
    for f in MEDIUM_FACTORS:
        search = _PeriodSearch(_Scaled(model, f))
        cands = search.candidates()
        lo, hi = 0, len(cands) - 1
        if hi < 0 or search.reach(float(cands[hi])) is None:
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if search.reach(float(cands[mid])) is not None:
                hi = mid
            else:
                lo = mid + 1
        reach = search.reach(float(cands[lo]))
        assert reach is not None
        cand = search.recover(float(cands[lo]), reach)
        true = period_s(model.instance, model.stages(cand))
        if true < upper * (1 - REL_EPS):
            path, upper = cand, true
    return path, upper


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


# The branch and bound rebuilds its "can still finish under the incumbent" table when the
# incumbent has improved by this fraction since the table was built, at most this many times
# (each rebuild is one backward reachability pass; no measurable cost at 48 x 16). Measured on
# 16 random sparse 48 x 16 instances (seeds 1000-1015): node-cap hits 3 -> 2, the instance newly
# proven got a 6 % better plan, and two others finished 3-4x sooner.
FIN_REFRESH_GAIN = 1e-3
FIN_REFRESHES = 8


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
    # completions with every item <= the incumbent (a relaxation); re-derived when the incumbent
    # improves, since a lower threshold prunes far more (fin_at: the threshold it was built at)
    fin = search.finish_sets(upper)
    fin_at = [upper]
    refreshes = [0]
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
        if best[0] < fin_at[0] * (1 - FIN_REFRESH_GAIN) and refreshes[0] < FIN_REFRESHES:
            fin[:] = search.finish_sets(best[0])
            fin_at[0] = best[0]
            refreshes[0] += 1
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
