"""Exact pipeline planning by dynamic programming over (pieces done, last device, devices used).

The problem (DESIGN.md's reference model, one device per stage): cut the chain of ``P`` pieces
into contiguous stages and give each stage its own device, in pipeline order, minimising the
period (throughput), the latency or the energy per request. Links differ per direction, so the
*order* of devices matters and a device may not be reused — the state must remember the set of
devices used, as PipeEdge's DP does (S-peer; ``usc-isi/PipeEdge``). Unlike PipeEdge, transfers
use per-link bandwidth *and* latency, may be relayed over several hops, and include the source
sending the input and receiving the output.

**Throughput** (parametric search). The period of a plan is at least the largest of its *items*:
each stage's compute time and each transfer's busiest hop (every item occupies one resource for
that long per request). "Is there a plan whose items are all <= T?" is a reachability question
over states ``(i pieces done, last device d, used set S)``; for a fixed ``(i, d)`` the reachable
``S`` form a bitset over ``2^D`` subsets, kept as one Python int, so a transition for all ``S``
at once is an AND with a mask and a shift. The optimum is one of the finitely many item values,
so a binary search over the sorted candidates finds the smallest feasible ``T*`` with
``O(log(P^2 D + P D^2))`` feasibility checks of ``O((P D^2 + P^2 D) * 2^D / 64)`` word operations.
Among plans at ``T*`` the one with the least latency is chosen (the latency search below, on the
items <= ``T*`` only, within a node budget).
When no link carries two transfers of the plan, its period equals ``T*`` and — since ``T*``
bounds every plan from below — it is optimal. If a relayed path makes two transfers share a
link (sparse networks), the true period can exceed ``T*``; then a branch-and-bound over plans
with exact link loads finishes the job (bounded by ``node_limit``; ``details["exact"]`` says
whether optimality was proven).

**Latency and energy** (branch on reuse). Both are sums over stages and transfers. Dropping the
"each device once" rule gives a plain shortest path over ``(i, d)``, solved backwards in
``O(P^2 D + P D^2)`` with numpy; if its optimum already uses every device at most once (the usual
case: a request rarely benefits from leaving a device and coming back), it is optimal. Otherwise
a best-first search branches on the first reused device ``x`` and a piece ``m`` between its two
stages — ``x``'s one stage ends before ``m``, starts at ``m`` or later, or spans ``m - 1..m`` —
solving the same relaxation with those (device, piece range) pairs forbidden in each child; the
first reuse-free relaxed optimum popped is optimal (see :func:`least_sum_path`). Energy runs
every device at its energy-best DVFS level (the level minimising ``P(f)/f``, which does not depend
on the work) and uses only devices with power figures.

**Beyond exact reach.** Bitsets of ``2^D`` bits stop being cheap near 20 devices. With more than
``max_exact_devices`` usable devices the planner keeps the source and the fastest others (by
total compute time over the model) and solves that sub-cluster exactly; ``details["exact"]`` is
then False. ``benchmarks/bench_planners.py`` measures the gap this costs.

Complexity summary: throughput ``O(log(C) (P D^2 + P^2 D) 2^D / w)`` with ``C`` candidates and
``w`` = machine word bits; latency/energy ``O(P^2 D + P D^2)`` when the relaxation is tight.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.evaluate import period_s
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage
from ...errors import InfeasibleError
from .._shared import REL_EPS, TransferTable, best_energy_freq, close, finish, infeasible_message

INF = math.inf
# Search-node budget of the latency tie-break among period-optimal plans (each node is one
# numpy relaxation, ~1-5 ms at 50-180 pieces). Past it the plan is still period-optimal, just not
# proven the lowest-latency one among them.
TIE_BREAK_NODES = 20


@dataclass(frozen=True)
class DPOptions:
    """Options of :func:`plan_dp`.

    Attributes
    ----------
    max_exact_devices : above this many usable devices, plan over the source + the fastest
        others (exact on that sub-cluster only). 16 keeps a 2^16-bit state set per (piece, device).
    tie_break_latency : for throughput, among period-optimal plans return one with least latency.
    node_limit : cap on branch-and-bound nodes of the shared-link period search before settling
        for the best plan found (``details["exact"]`` turns False if the cap is hit).
    reuse_branch_limit : cap on search nodes of the latency/energy search when the relaxation
        reuses devices (each node is one numpy relaxation); past it, a heuristic dive.
    """

    max_exact_devices: int = 16
    tie_break_latency: bool = True
    node_limit: int = 50_000
    reuse_branch_limit: int = 2_000


class ChainModel:
    """The instance as dense arrays over the usable devices (local indices ``0..n-1``).

    ``sc[e, i, j]`` is the objective's cost of stage ``i..j`` (0-based, inclusive) on device
    ``e`` — ``inf`` when it does not fit in memory or ``j < i``; ``time[e, i, j]`` is its compute
    seconds. ``tt`` holds every transfer; ``local(x)`` restricts an instance-indexed transfer
    array to usable devices; ``src`` is the source's instance index.
    """

    def __init__(self, instance: Instance, objective: str, devices: list[str]) -> None:
        self.instance = instance
        self.objective = objective
        self.names = list(devices)
        self.n = len(devices)
        self.P = instance.num_pieces
        all_names = instance.device_names
        self.inst_idx = [all_names.index(d) for d in devices]
        self.src = all_names.index(instance.source)
        self.tt = TransferTable(instance)
        self.freqs = [
            best_energy_freq(instance.device_by_name[d]) if objective == "energy" else 1.0
            for d in devices
        ]
        P = self.P
        mem_pref = np.zeros(P + 1)
        mem_pref[1:] = np.cumsum([pc.mem_bytes for pc in instance.pieces])
        mem = mem_pref[None, 1:] - mem_pref[:-1, None]  # mem[i, j] of pieces i..j
        upper = np.triu(np.ones((P, P), dtype=bool))
        self.time = np.full((self.n, P, P), INF)
        self.sc = np.full((self.n, P, P), INF)
        for e, d in enumerate(devices):
            acc = [0.0]
            for pc in instance.pieces:  # same accumulation order as Instance.compute_s
                acc.append(acc[-1] + pc.time_s[d])
            pref = np.array(acc)
            t = (pref[None, 1:] - pref[:-1, None]) / self.freqs[e]
            ok = upper & (mem <= instance.device_by_name[d].mem_bytes)
            self.time[e][ok] = t[ok]
            if objective == "energy":
                pw = instance.device_by_name[d].active_power_w(self.freqs[e])
                self.sc[e][ok] = t[ok] * pw
            else:
                self.sc[e][ok] = t[ok]

    def local(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(middle ``[k, d, e]``, start ``[e]`` from the source, end ``[d]`` to the source)."""
        ix = self.inst_idx
        return arr[:, ix][:, :, ix], arr[0, self.src, ix], arr[self.P, ix, self.src]

    def transfer_cost(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transfer cost in the objective's unit: seconds (latency) or joules (energy)."""
        return self.local(self.tt.energy_j if self.objective == "energy" else self.tt.total_s)

    def stages(self, path: list[tuple[int, int, int]]) -> tuple[Stage, ...]:
        """``(first, last, local device)`` triples → Stage objects with DVFS levels."""
        out = []
        for i, j, e in path:
            f = self.freqs[e]
            out.append(Stage(i, j, (self.names[e],), None if f == 1.0 else (f,)))
        return tuple(out)


def plan_dp(instance: Instance, objective: Objective, options: DPOptions | None = None) -> Plan:
    """Optimal one-device-per-stage pipeline (exact; latency, throughput, energy). See module docs.

    Raises
    ------
    InfeasibleError
        No plan fits in memory or reaches the source (message names the tightest device).
    InputError
        Energy objective on an instance without power figures.
    """
    opts = options or DPOptions()
    devices, complete = select_devices(instance, objective, opts.max_exact_devices)
    model = ChainModel(instance, objective, devices)
    details: dict[str, Any] = {"devices_considered": len(devices)}
    if objective == "throughput":
        path, exact, bound, tied = min_period_path(model, opts.node_limit, opts.tie_break_latency)
        details["period_lower_bound_s"] = bound
        details["least_latency_among_optimal"] = tied
    else:
        path, exact = min_sum_path(model, opts.reuse_branch_limit)
    details["exact"] = bool(exact and complete)
    return finish(instance, "dp", objective, model.stages(path), details=details)


def select_devices(instance: Instance, objective: str, limit: int) -> tuple[list[str], bool]:
    """Usable devices (power figures for energy), cut to ``limit``: the source + the fastest.

    Returns the names in instance order and whether nothing was cut."""
    from .._shared import energy_devices

    names = list(energy_devices(instance) if objective == "energy" else instance.device_names)
    if len(names) <= limit:
        return names, True
    work = {d: sum(pc.time_s[d] for pc in instance.pieces) for d in names}
    keep = {instance.source} & set(names)
    for d in sorted(names, key=lambda d: (work[d], names.index(d))):
        if len(keep) >= limit:
            break
        keep.add(d)
    return [d for d in names if d in keep], False


# ----- latency / energy: additive costs -------------------------------------------------------


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


# ----- throughput: parametric search with bitset reachability ----------------------------------


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


__all__ = [
    "ChainModel",
    "DPOptions",
    "least_sum_path",
    "min_period_path",
    "min_sum_path",
    "plan_dp",
    "polish_latency",
    "select_devices",
]
