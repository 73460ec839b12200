"""Beyond exact reach: a good plan and a proven lower bound on the optimum over *all* devices.

When neither the bitset DP (at most ``max_exact_devices`` usable devices) nor the class DP
(``prod(n_c + 1)`` within ``max_class_states``) fits, :func:`plan_beyond_reach` returns the best
of a few plans and a number no plan over all devices can beat, so the caller knows how far
from optimal it may be: ``gap_bound = (value - lower_bound) / lower_bound``.

**Transfers.** One Floyd–Warshall over all devices, vectorised over the distinct cut sizes
(``O(K D^3)`` numpy work, ~0.1 s at 64 devices x 101 sizes, where ``D x K`` Dijkstra runs in
Python take ~5 s), gives exact cheapest-path times. The reference model charges a transfer's
period item to the busiest resource of *its* cheapest path, which depends on tie-breaking; a
lower bound valid for every cheapest path is ``max(least first hop, least last hop)`` over the
hops that lie on some cheapest path (every resource on the path is busy at least as long as
each of its hops). When the direct link is the only cheapest path, that is the direct hop, as
in the reference.

**Throughput bound (grouped relaxation).** Sort the usable devices by speed and split them
into groups (the source alone; small groups for the fast devices, one for the slow rest) so
that ``prod(size + 1)`` stays within ``bound_states``. Give each group the *least* figure of
its members for every item — each stage time, each transfer between two distinct members of
two groups, from and to the source — and let group ``g`` serve at most ``size_g`` stages. Let
``T_lb`` be the least item threshold at which this group DP (:mod:`._dp_period`, units with
counts) has a plan. Proof that ``T_lb <= period(Q)`` for every real plan ``Q`` over the usable
devices, hence for the optimum:

1. ``period(Q)`` >= each of ``Q``'s items: a stage's compute time is its device's busy time
   (one stage per device), and a transfer keeps every resource on its path busy at least as
   long as each of its hops, so the busiest resource's load is at least each hop's time.
2. Each item of ``Q`` is >= its figure here: stage times are the same numbers; a transfer's
   path in the reference model is a cheapest one, so its first hop ``u -> y`` satisfies
   ``w(u, y) + dist(y, v) = dist(u, v)`` and is >= the least such hop (likewise its last), and
   the figure is the larger of those two minima (the tolerance only widens the set minimised
   over, which only lowers the figure).
3. Mapping each device of ``Q`` to its group gives a group plan: stages in the same order, the
   same piece ranges, group ``g`` used at most ``size_g`` times (devices are distinct), two
   consecutive stages in one group on distinct members; its items (group minima) are <= the
   figures of step 2.
4. So that group plan has every item <= ``period(Q)``; its largest item is one of the candidate
   thresholds and feasibility is monotone in the threshold, so the binary search's least
   feasible candidate ``T_lb`` is <= it <= ``period(Q)``.

Its quality depends on how alike the members of a group are; exact classes lose nothing. On
random 64-device instances it is set by an unavoidable item (e.g. two heavy neighbouring pieces
on the fastest device, or the cut between them), so finer groups rarely raise it.

**Throughput plans.** (1) the group plan at that threshold, realised by giving each stage
the free member of its group with the smallest bottleneck so far; (2) the same for a group DP
priced with each group's *largest* figures (a plan whose every realisation keeps its items
under that threshold); (3) the old cut — the source and the fastest ``max_exact_devices``
others, solved by the bitset DP (on the reference paths when the instance is small enough to
route every pair, else on the Floyd–Warshall figures); and each of them improved by the
bottleneck descent of :mod:`._dp_polish` over all devices. Each is priced by the reference
model and the best is returned. Plans (1), (2) and the descent run only with ``search``
(``DPOptions.beyond_reach="search"``); the default keeps the cut alone, the long-standing
behaviour, and only adds the bound.

**Latency and energy.** The reuse-allowed relaxation over ``(pieces, device)`` is a lower bound
(every real plan is one of its paths); the best-first branching of :func:`least_sum_path` runs
on all devices (it has no ``2^D`` state), so latency is usually solved exactly. For energy the
transfer figures are bounded below by path time x the least transmit power; the plan comes from
the same search and is priced by the reference model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.evaluate import objective_value
from ...core.instance import Instance
from ...core.plans import Stage
from ...errors import InfeasibleError
from .._shared import REL_EPS, best_energy_freq, infeasible_message
from ._dp_classes import path_sum
from ._dp_model import INF
from ._dp_period import _PeriodSearch, least_feasible
from ._dp_polish import polish_period
from ._dp_sum import least_sum_path, relaxed_to_go

# Relative slack for "this hop lies on a cheapest path" (wider only lowers the bound).
TIGHT_REL = 1e-9


class DeviceTransfers:
    """Cheapest-path time ``total_s[k, u, v]`` and a lower bound ``hop_lb[k, u, v]`` on its
    period item, for every cut ``k`` and device pair (instance order); see module docs."""

    def __init__(self, instance: Instance) -> None:
        names = instance.device_names
        idx = {d: i for i, d in enumerate(names)}
        D = len(names)
        sizes = sorted({instance.cut_bytes(k) for k in range(instance.num_pieces + 1)})
        X = np.array(sizes, dtype=float)
        bw = np.full((D, D), np.inf)
        lat = np.zeros((D, D))
        for lk in instance.links:
            bw[idx[lk.src], idx[lk.dst]] = lk.bandwidth_Bps
            lat[idx[lk.src], idx[lk.dst]] = lk.latency_s
        has = np.isfinite(bw)
        W = np.where(has[None], lat[None] + X[:, None, None] / np.where(has, bw, 1.0)[None], INF)
        eye = np.eye(D, dtype=bool)
        W[:, eye] = INF
        dist = W.copy()
        dist[:, eye] = 0.0
        for m in range(D):
            np.minimum(dist, dist[:, :, m : m + 1] + dist[:, m : m + 1, :], out=dist)
        hop = np.empty_like(dist)
        for k in range(len(sizes)):
            w, d = W[k], dist[k]
            lim = d * (1 + TIGHT_REL) + 1e-15
            first = np.where(w[:, :, None] + d[None] <= lim[:, None, :], w[:, :, None], INF)
            last = np.where(d[:, :, None] + w[None] <= lim[:, None, :], w[None], INF)
            hop[k] = np.maximum(first.min(axis=1), last.min(axis=1))
        hop[:, eye] = 0.0
        pos = {x: i for i, x in enumerate(sizes)}
        ix = [pos[instance.cut_bytes(k)] for k in range(instance.num_pieces + 1)]
        self.total_s, self.hop_lb = dist[ix], hop[ix]
        self.idx = idx


def stage_arrays(
    instance: Instance, names: Sequence[str], objective: str
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``time[e, i, j]`` and objective cost ``sc[e, i, j]`` of stage ``i..j`` on each device
    (``inf`` when it does not fit), and each device's DVFS level (as :class:`ChainModel`)."""
    P = instance.num_pieces
    mem_pref = np.zeros(P + 1)
    mem_pref[1:] = np.cumsum([pc.mem_bytes for pc in instance.pieces])
    mem = mem_pref[None, 1:] - mem_pref[:-1, None]
    upper = np.triu(np.ones((P, P), dtype=bool))
    tab = np.array([[pc.time_s[d] for d in names] for pc in instance.pieces]).T  # (n, P)
    pref = np.zeros((len(names), P + 1))
    pref[:, 1:] = np.cumsum(tab, axis=1)
    freqs = [best_energy_freq(instance.device_by_name[d]) if objective == "energy" else 1.0
             for d in names]  # fmt: skip
    time = np.full((len(names), P, P), INF)
    sc = np.full((len(names), P, P), INF)
    for e, d in enumerate(names):
        t = (pref[e, None, 1:] - pref[e, :-1, None]) / freqs[e]
        ok = upper & (mem <= instance.device_by_name[d].mem_bytes)
        time[e][ok] = t[ok]
        pw = instance.device_by_name[d].active_power_w(freqs[e]) if objective == "energy" else 1.0
        sc[e][ok] = t[ok] * pw
    return time, sc, freqs


class _Units:
    """A model over units with counts for :class:`_PeriodSearch`: ``time``, ``counts``, items."""

    def __init__(
        self,
        time: np.ndarray,
        counts: list[int],
        mid: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
    ) -> None:
        self.time, self.counts = time, counts
        self.n, self.P = time.shape[0], time.shape[1]
        self._arrays = (mid, start, end)

    def hop_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._arrays


def least_threshold(units: _Units) -> tuple[float, list[tuple[int, int, int]]] | None:
    """Least item threshold at which the unit DP finds a plan, and one such plan (or None)."""
    search = _PeriodSearch(units)
    found = least_feasible(search)
    if found is None:
        return None
    T, reach = found
    return T, search.recover(T, reach)


def group_sizes(n: int, budget: int) -> list[int]:
    """Sizes of consecutive groups of ``n`` devices (fastest first) with ``prod(size + 1) <=
    budget``: a geometric run (ratio ``r``) of small groups for the fast devices, then one group
    for all the rest. Over a grid of ratios and run lengths the split with the most groups wins
    (more groups, tighter bound), ties going to the smaller largest group."""
    best: list[int] = [n]
    for r in np.linspace(1.0, 4.0, 61):
        run, x, tot = [], 1.0, 0
        while tot < n:
            s = min(max(1, round(x)), n - tot)
            run.append(s)
            tot += s
            x *= r
        for m in range(len(run)):
            sizes = [*run[:m], n - sum(run[:m])]
            if math.prod(s + 1 for s in sizes) > budget:
                break
            if (len(sizes), -max(sizes)) > (len(best), -max(best)):
                best = sizes
    return best


def plan_beyond_reach(
    instance: Instance,
    objective: str,
    names: Sequence[str],
    cut: Sequence[Stage] | None,
    *,
    max_exact_devices: int,
    bound_states: int,
    search: bool,
) -> tuple[tuple[Stage, ...], dict[str, Any]]:
    """A plan over ``names`` and a proven lower bound on the optimum over all of them.

    ``cut`` is the caller's plan on the source + the fastest ``max_exact_devices`` (None: make
    one here on the Floyd–Warshall figures); with ``search`` the grouped plans and, for
    latency/energy, the search over all devices compete with it. See module docs."""
    tt = DeviceTransfers(instance)
    ix = [tt.idx[d] for d in names]
    src = tt.idx[instance.source]
    time, sc, freqs = stage_arrays(instance, names, objective)
    speed = [sum(pc.time_s[d] for pc in instance.pieces) for d in names]  # whole-model seconds
    if objective != "throughput":
        return _sum_beyond(instance, objective, names, tt, ix, src, sc, freqs, cut, search)
    hop = tt.hop_lb
    mid_d = hop[:, ix][:, :, ix].copy()
    k = np.arange(len(ix))
    mid_d[:, k, k] = INF
    st_d, en_d = hop[0, src, ix], hop[instance.num_pieces, ix, src]
    others = sorted(
        (e for e, d in enumerate(names) if d != instance.source), key=lambda e: (speed[e], e)
    )
    has_src = instance.source in names
    sizes = group_sizes(len(others), max(2, bound_states // (2 if has_src else 1)))
    groups: list[list[int]] = [[names.index(instance.source)]] if has_src else []
    at = 0
    for s in sizes:
        groups.append(others[at : at + s])
        at += s
    lower, plans = None, []
    for agg in (np.min, np.max) if search else (np.min,):
        units = _grouped(groups, time, mid_d, st_d, en_d, agg)
        got = least_threshold(units)
        if got is None:
            if agg is np.min:  # the relaxation has no plan, so no real plan exists
                raise InfeasibleError(infeasible_message(instance, "dp", list(names)))
            continue
        T, gpath = got
        if agg is np.min:
            lower = T
        if search:
            plans.append(_stages(_realise(gpath, groups, time, mid_d, st_d, en_d), names, freqs))
    if cut is None:
        path = _fastest_cut(instance, names, speed, max_exact_devices, time, mid_d, st_d, en_d)
        if path is not None:
            cut = _stages(path, names, freqs)
    if cut is not None:
        plans.insert(0, tuple(cut))
    if search:  # descend from every start over all devices (figures: the bound's, per device)
        pos = {d: e for e, d in enumerate(names)}
        for stages in list(plans):
            path = [(st.first, st.last, pos[st.devices[0]]) for st in stages]
            better = polish_period(path, time, mid_d, st_d, en_d)
            plans.append(_stages(better, names, freqs))
    assert lower is not None
    best_v, best = INF, None
    for stages in plans:
        v = objective_value(instance, stages, "throughput")
        if v < best_v * (1 - REL_EPS):
            best_v, best = v, stages
    if best is None:
        raise InfeasibleError(infeasible_message(instance, "dp", list(names)))
    return tuple(best), _bound_details(best_v, lower, groups)


def _grouped(groups, time, mid, start, end, agg) -> _Units:  # type: ignore[no-untyped-def]
    """Units = groups; each item the least (``np.min``: a relaxation) or largest (``np.max``)
    over the group's members; a transfer inside a group is between two distinct members."""
    G = len(groups)
    gt = np.stack([agg(time[g], axis=0) for g in groups])
    K = mid.shape[0]
    gm = np.full((K, G, G), INF)
    for a, ga in enumerate(groups):
        for b, gb in enumerate(groups):
            block = mid[:, ga][:, :, gb]
            if a == b:
                if len(ga) < 2:
                    continue
                r = np.arange(len(ga))
                block = block.copy()
                # the diagonal (a device to itself) is inf already; for np.max ignore it
                if agg is np.max:
                    block[:, r, r] = -INF
            gm[:, a, b] = agg(block.reshape(K, -1), axis=1)
    gs = np.array([agg(start[g]) for g in groups])
    ge = np.array([agg(end[g]) for g in groups])
    return _Units(gt, [len(g) for g in groups], gm, gs, ge)


def _realise(gpath, groups, time, mid, start, end) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """Give each stage of a group plan the free member with the least running bottleneck."""
    used: set[int] = set()
    out: list[tuple[int, int, int]] = []
    prev, worst = -1, 0.0
    last = len(gpath) - 1
    for k, (i, j, g) in enumerate(gpath):
        best, best_v = None, INF
        for e in groups[g]:
            if e in used:
                continue
            t = start[e] if prev < 0 else mid[i, prev, e]
            v = max(worst, t, time[e, i, j], end[e] if k == last else 0.0)
            if best is None or v < best_v:
                best, best_v = e, v
        assert best is not None
        used.add(best)
        out.append((i, j, best))
        prev, worst = best, best_v
    return out


def _fastest_cut(instance, names, speed, limit, time, mid, start, end):  # type: ignore[no-untyped-def]
    """The source + the fastest others, bitset DP on the Floyd–Warshall figures (a plan)."""
    keep = sorted(range(len(names)), key=lambda e: (names[e] != instance.source, speed[e], e))[
        :limit
    ]
    keep.sort()
    sub = np.ix_(keep, keep)
    units = _Units(time[keep], [1] * len(keep), mid[:, sub[0], sub[1]], start[keep], end[keep])
    got = least_threshold(units)
    if got is None:
        return None
    return [(i, j, keep[e]) for i, j, e in got[1]]


def _stages(path, names, freqs) -> tuple[Stage, ...]:  # type: ignore[no-untyped-def]
    return tuple(
        Stage(i, j, (names[e],), None if freqs[e] == 1.0 else (freqs[e],)) for i, j, e in path
    )


def _bound_details(value: float, lower: float, groups) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    # no finite relative gap above a zero bound: None keeps the details JSON-clean
    gap = max(0.0, (value - lower) / lower) if lower > 0 else (0.0 if value == 0 else None)
    return {
        "exact": bool(value <= lower * (1 + REL_EPS)),
        "lower_bound": lower,
        "gap_bound": gap,
        "bound_groups": [len(g) for g in groups],
    }


def _sum_beyond(instance, objective, names, tt, ix, src, sc, freqs, cut, search):  # type: ignore[no-untyped-def]
    """Latency/energy: the relaxation over all devices bounds; the plan is the cut's, or with
    ``search`` the reuse-branching search over all devices if better (see module docs)."""
    P = instance.num_pieces
    tot = tt.total_s
    if objective == "energy":
        ptx = min(instance.device_by_name[d].power_transmit_w or 0.0 for d in instance.device_names)
        tot = tot * ptx  # every hop's radio energy >= its time x the least transmit power
    mid = tot[:, ix][:, :, ix].copy()
    k = np.arange(len(ix))
    mid[:, k, k] = INF
    st, en = tot[0, src, ix], tot[P, ix, src]
    _H, _G, lower = relaxed_to_go(sc, mid, st, en, "sum")
    if not math.isfinite(lower):
        raise InfeasibleError(infeasible_message(instance, "dp", list(names)))
    plans = [tuple(cut)] if cut is not None else []
    if search or not plans:
        path, proven = least_sum_path(sc, mid, st, en, 200)
        if path is not None:
            if proven:  # the least sum over the lower-bound figures is itself a bound
                lower = max(lower, path_sum(path, sc, mid, st, en))
            plans.append(_stages(path, names, freqs))
    best_v, best = INF, None
    for stages in plans:
        v = objective_value(instance, stages, objective)
        if v < best_v * (1 - REL_EPS):
            best_v, best = v, stages
    if best is None:
        raise InfeasibleError(infeasible_message(instance, "dp", list(names)))
    return tuple(best), _bound_details(best_v, lower, [[e] for e in range(len(names))])
