"""PICO on instances beyond exact reach: multi-start search scored by the exact period.

Starts come from the exact one-device-per-stage DP and from PICO's grouped DP over several
device orders (consecutive runs of an order serve each stage as replicas); each start is
improved by an iterated local search whose scorer mirrors the reference period exactly (with
memoisation). See the module docstring of :mod:`.pico` for the model and measured gaps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ...core.instance import Instance
from ...core.plans import Stage
from .._shared import REL_EPS, TransferTable


def replica_shares(times: list[float]) -> list[float]:
    """Replica shares exactly as :func:`coinfer.core.evaluate.replica_weights` computes them."""
    zero = [i for i, t in enumerate(times) if t <= 0.0]
    if zero:
        return [(1.0 / len(zero)) if i in zero else 0.0 for i in range(len(times))]
    rates = [1.0 / t for t in times]
    total = sum(rates)
    return [r / total for r in rates]


# A stage in index space: (first piece, last piece, device indices in instance order).
_IStage = tuple[int, int, tuple[int, ...]]


class _Scorer:
    """Exact period of index-space stages, mirroring :func:`coinfer.core.evaluate.period_s`.

    The local search scores thousands of neighbours; going through :class:`Stage` objects and
    per-call path look-ups would dominate, so this keeps prefix sums and the precomputed paths
    of a :class:`TransferTable` and memoises every plan it has scored. The planner's final
    prediction is still the reference model's (:func:`finish`).
    """

    def __init__(self, instance: Instance, tt: TransferTable) -> None:
        self.names = list(instance.device_names)
        self.src = self.names.index(instance.source)
        self.P = instance.num_pieces
        self.tt = tt
        self.pref = [
            [0.0, *itertools.accumulate(pc.time_s[d] for pc in instance.pieces)] for d in self.names
        ]
        self.cap = [instance.device_by_name[d].mem_bytes for d in self.names]
        self.mem = instance.mem_bytes
        self.cache: dict[tuple[_IStage, ...], float] = {}
        self.stage_cache: dict[_IStage, tuple[list[float], float]] = {}
        self.bound_cache: dict[tuple[Any, Any], tuple[dict[tuple[str, str], float], float]] = {}
        self.evals = 0

    def fits(self, first: int, last: int, devs: tuple[int, ...]) -> bool:
        need = self.mem(first, last)
        return all(self.cap[e] >= need for e in devs)

    def period(self, stages: tuple[_IStage, ...]) -> float:
        """Busiest device or link per request; each stage and each boundary is computed once
        and memoised, and boundaries' link loads are summed only when they share a link."""
        hit = self.cache.get(stages)
        if hit is not None:
            return hit
        self.evals += 1
        peak = 0.0
        parts: list[dict[tuple[str, str], float]] = []
        prev: _IStage | None = None  # None: the source
        for st in (*stages, None):
            if st is not None:
                peak = max(peak, self._stage(st)[1])
            loads, p = self._boundary(prev, st)
            peak = max(peak, p)
            parts.append(loads)
            prev = st
        if sum(map(len, parts)) != len(set().union(*parts)):  # a link carries two boundaries
            total: dict[tuple[str, str], float] = {}
            for loads in parts:
                for key, x in loads.items():
                    total[key] = total.get(key, 0.0) + x
            peak = max(peak, max(total.values()))
        self.cache[stages] = peak
        return peak

    def _stage(self, st: _IStage) -> tuple[list[float], float]:
        """Replica shares and busy seconds per request of one stage (memoised)."""
        hit = self.stage_cache.get(st)
        if hit is None:
            first, last, devs = st
            times = [self.pref[e][last + 1] - self.pref[e][first] for e in devs]
            w = replica_shares(times)
            hit = (w, max(wi * ti for wi, ti in zip(w, times, strict=True)))
            self.stage_cache[st] = hit
        return hit

    def _boundary(
        self, a: _IStage | None, b: _IStage | None
    ) -> tuple[dict[tuple[str, str], float], float]:
        """Per-link loads (and their peak) of the transfer from stage ``a`` to stage ``b``."""
        key = (a, b)
        hit = self.bound_cache.get(key)
        if hit is not None:
            return hit
        g_from, w_from = ((self.src,), [1.0]) if a is None else (a[2], self._stage(a)[0])
        g_to, w_to = ((self.src,), [1.0]) if b is None else (b[2], self._stage(b)[0])
        k = self.P if b is None else b[0]
        loads: dict[tuple[str, str], float] = {}
        peak = 0.0
        paths = self.tt.paths[k]
        for u, wu in zip(g_from, w_from, strict=True):
            for v, wv in zip(g_to, w_to, strict=True):
                share = wu * wv
                if share == 0.0 or u == v:
                    continue
                path = paths[u][v]
                if not path:
                    peak = math.inf
                    continue
                for lk, t in path:
                    new = loads.get(lk, 0.0) + share * t
                    loads[lk] = new
                    peak = max(peak, new)
        hit = (loads, peak)
        self.bound_cache[key] = hit
        return hit


def _grouped_dp(
    instance: Instance, tt: TransferTable, order: list[int]
) -> tuple[_IStage, ...] | None:
    """PICO's grouping as a DP: consecutive runs of ``order`` form the pipeline's stages.

    Devices are laid out in ``order`` (e.g. fastest first); every stage takes the next run
    ``order[b:e]`` as its replicas and the next range of pieces, so a plan is two monotone
    staircases (piece cuts and device cuts) and the DP over ``(cut i, previous run (a, b),
    next run end e)`` is polynomial: ``O(P^2 D^2 + P D^3)`` numpy work. Plans may stop before
    the end of ``order`` (use only the first ``e`` devices), so appending a device to
    ``order`` never makes this DP's *estimated* optimum worse (every old plan keeps its cost).

    Compute periods are exact (``1 / sum of the replicas' rates`` over the exact piece range).
    Transfers are approximated so they depend on the two runs only: replica shares use each
    device's whole-model speed and a pair's load is its busiest hop (no link shared between
    pairs). The local search that follows scores everything exactly. Returns ``None`` if no
    plan fits in memory.
    """
    P, D = instance.num_pieces, len(order)
    names = list(instance.device_names)
    src = names.index(instance.source)
    t = np.array([[pc.time_s[names[e]] for e in order] for pc in instance.pieces])
    cum = np.vstack([np.zeros(D), np.cumsum(t, axis=0)])  # cum[k, pos] = time of pieces < k
    mem_pref = np.array([instance.mem_bytes(0, k - 1) if k else 0 for k in range(P + 1)])
    caps = np.array([instance.device_by_name[names[e]].mem_bytes for e in order], dtype=float)
    # static replica shares for the transfer estimate: proportional to whole-model speed
    total = np.maximum(cum[P], 1e-300)  # guard all-zero rows (zero-time devices)
    rate = 1.0 / total
    hop = tt.hop_s[:, order][:, :, order]  # (cut, pos, pos)
    hop_src_in = tt.hop_s[:, src, order]  # source -> pos
    hop_src_out = tt.hop_s[P, order, src]  # pos -> source (output)
    inf = math.inf
    # trans[a, b, e, k]: estimated busiest-link load moving cut k from run a:b to run b:e
    trans = np.full((D + 1, D + 1, D + 1, P + 1), inf)
    for b in range(D):
        for e in range(b + 1, D + 1):
            w2 = rate[b:e] / rate[b:e].sum()
            trans[0, 0, e, 0] = float(np.max(w2 * hop_src_in[0, b:e])) if b == 0 else inf
            for a in range(b):
                w1 = rate[a:b] / rate[a:b].sum()
                pair = hop[:, a:b, b:e] * (w1[:, None] * w2[None, :])
                trans[a, b, e] = pair.max(axis=(1, 2))
    best = np.full((P + 1, D + 1, D + 1), inf)  # best[k, a, b]: pieces < k, last stage on a:b
    par_i = np.full((P + 1, D + 1, D + 1), -1, dtype=np.int64)
    par_a = np.full((P + 1, D + 1, D + 1), -1, dtype=np.int64)
    best[0, 0, 0] = 0.0
    with np.errstate(divide="ignore"):
        for i in range(P):
            span = cum[i + 1 :] - cum[i]  # (P - i, D): time of pieces i..k on each position
            rates = 1.0 / span  # inf where a piece range takes no time
            room = mem_pref[i + 1 :] - mem_pref[i]  # memory of pieces i..k
            for b in range(D) if i else (0,):
                if i:
                    col = best[i, :b, b]
                    if not np.isfinite(col).any():
                        continue
                    inc_all = np.maximum(col[:, None], trans[:b, b, :, i])  # (a, e)
                    a_best = np.argmin(inc_all, axis=0)
                    inc = inc_all[a_best, np.arange(D + 1)]
                else:
                    a_best = np.zeros(D + 1, dtype=np.int64)
                    inc = trans[0, 0, :, 0].copy()
                # period of pieces i..k on run b:e = 1 / sum of the run's rates
                per = 1.0 / np.cumsum(rates[:, b:], axis=1)  # (P - i, D - b) for e = b+1..D
                cap = np.minimum.accumulate(caps[b:])  # memory of the run = its smallest device
                per[room[:, None] > cap[None, :]] = inf
                val = np.maximum(per, inc[b + 1 :][None, :])
                blk = best[i + 1 :, b, b + 1 :]
                better = val < blk
                if not better.any():
                    continue
                blk[better] = val[better]
                ks, es = np.nonzero(better)
                par_i[ks + i + 1, b, es + b + 1] = i
                par_a[ks + i + 1, b, es + b + 1] = a_best[es + b + 1]
    # close the pipeline: the last run sends the output back to the source
    end = np.full((D + 1, D + 1), inf)
    for a in range(D):
        for b in range(a + 1, D + 1):
            if np.isfinite(best[P, a, b]):
                w = rate[a:b] / rate[a:b].sum()
                end[a, b] = max(best[P, a, b], float(np.max(w * hop_src_out[a:b])))
    if not np.isfinite(end).any():
        return None
    a, b = np.unravel_index(int(np.argmin(end)), end.shape)
    stages: list[_IStage] = []
    k = P
    while k > 0:
        i, pa = int(par_i[k, a, b]), int(par_a[k, a, b])
        stages.append((i, k - 1, tuple(sorted(order[p] for p in range(a, b)))))
        k, a, b = i, pa, a
    return tuple(reversed(stages))


def _starts(  # type: ignore[no-untyped-def]
    instance: Instance,
    tt: TransferTable,
    sc: _Scorer,
    base: tuple[Stage, ...],
    opts: Any,
    rng: np.random.Generator,
):
    """Starting plans (index space): dp's optimum; PICO's grouped DP with devices fastest
    first, slowest first and source first; every device that can hold the model replicating
    all of it (data parallelism); and the two best grouped-DP plans over further device orders
    (all of them when ``D!`` is small, else random ones) within ``opts.order_cells`` DP cells.
    Further orders matter when devices differ: which run of devices serves which stage is
    fixed by the order, and memory limits or fast links can favour any of them."""
    names = list(instance.device_names)
    idx = {d: e for e, d in enumerate(names)}
    out: list[tuple[str, tuple[_IStage, ...]]] = [
        ("dp", tuple((s.first, s.last, tuple(sorted(idx[d] for d in s.devices))) for s in base))
    ]
    P = instance.num_pieces
    whole = [instance.compute_s(0, P - 1, d) for d in names]
    fastest = sorted(range(len(names)), key=lambda e: (whole[e], e))
    src = idx[instance.source]
    orders = {
        "grouped-fastest-first": fastest,
        "grouped-slowest-first": fastest[::-1],
        "grouped-source-first": [src, *(e for e in fastest if e != src)],
    }
    for label, order in orders.items():
        plan = _grouped_dp(instance, tt, order)
        if plan is not None:
            out.append((label, plan))
    need = instance.mem_bytes(0, P - 1)
    roomy = tuple(
        e for e in range(len(names)) if instance.device_by_name[names[e]].mem_bytes >= need
    )
    if roomy:
        out.append(("data-parallel", ((0, P - 1, roomy),)))
    D = len(names)
    n_orders = min(opts.orders, opts.order_cells // (P * D * D))
    if n_orders > 0 and D > 2:
        if math.factorial(D) <= n_orders:
            perms = [list(q) for q in itertools.permutations(range(D))]
        else:
            perms = [[int(e) for e in rng.permutation(D)] for _ in range(n_orders)]
        found = {plan for _, plan in out}
        extra = [p for p in (_grouped_dp(instance, tt, q) for q in perms) if p is not None]
        ranked = sorted({p for p in extra if p not in found}, key=lambda p: (sc.period(p), p))
        out += [("grouped-other-order", p) for p in ranked[:2]]
    return out


def search_from_starts(
    instance: Instance, base: tuple[Stage, ...], opts: Any
) -> tuple[tuple[Stage, ...], str]:
    """Multi-start descent: every start of :func:`_starts` improved by :func:`_local_search`;
    the best result wins (ties go to the earlier start, dp's first, so it is never worse)."""
    tt = TransferTable(instance)
    sc = _Scorer(instance, tt)
    n = len(instance.device_names)
    best: tuple[_IStage, ...] | None = None
    best_val, best_label = math.inf, ""
    rng = np.random.default_rng(opts.seed)
    for label, start in _starts(instance, tt, sc, base, opts, rng):
        got, val = _local_search(sc, start, n, opts.max_rounds, sc.evals + opts.max_evals)
        if best is None or val < best_val * (1 - REL_EPS):
            best, best_val, best_label = got, val, label
    assert best is not None  # dp's plan is always a start
    stop = sc.evals + opts.kick_evals
    idle = 0  # kicks since the last improvement
    for _ in range(opts.kicks):
        if sc.evals >= stop or idle >= opts.patience:
            break
        idle += 1
        cand = best
        for _ in range(int(rng.integers(2, 4))):  # 2-3 random moves: one rarely escapes
            moves = list(_moves(sc, cand, n))
            if not moves:
                break
            cand = moves[int(rng.integers(len(moves)))]
        got, val = _local_search(sc, cand, n, opts.max_rounds, min(stop, sc.evals + opts.max_evals))
        if val < best_val * (1 - REL_EPS):
            best, best_val, best_label = got, val, best_label.split("+")[0] + "+kick"
            idle = 0
    names = sc.names
    return tuple(Stage(f, last, tuple(names[e] for e in g)) for f, last, g in best), best_label


def _local_search(
    sc: _Scorer, stages: tuple[_IStage, ...], n_dev: int, max_rounds: int, max_evals: int
) -> tuple[tuple[_IStage, ...], float]:
    """Best-improvement descent over :func:`_moves` until no move helps (or a budget runs out)."""
    cur, cur_val = stages, sc.period(stages)
    for _ in range(max_rounds):
        best, best_val = None, cur_val
        for cand in _moves(sc, cur, n_dev):
            v = sc.period(cand)
            if v < best_val * (1 - REL_EPS):
                best, best_val = cand, v
            if sc.evals >= max_evals:
                break
        if best is None:
            break
        cur, cur_val = best, best_val
        if sc.evals >= max_evals:
            break
    return cur, cur_val


def _moves(sc: _Scorer, stages: tuple[_IStage, ...], n_dev: int):  # type: ignore[no-untyped-def]
    """Neighbours of a plan. Device moves: add an unused device as a replica, drop a replica,
    move a replica to another stage, swap two stages' devices. Structure moves: merge two
    neighbours onto one side's devices and hand the freed devices to some stage (how a plan
    that uses every device makes room for replicas); split a replicated stage in two, its
    replicas divided (the inverse); shift a boundary by one piece."""
    K = len(stages)
    used = {e for s in stages for e in s[2]}
    unused = [e for e in range(n_dev) if e not in used]

    def put(k: int, st: _IStage, base: tuple[_IStage, ...] = stages) -> tuple[_IStage, ...]:
        return (*base[:k], st, *base[k + 1 :])

    for k, (f, last, g) in enumerate(stages):
        for e in unused:
            if sc.fits(f, last, (e,)):
                yield put(k, (f, last, tuple(sorted((*g, e)))))
        if len(g) > 1:
            for e in g:
                rest = tuple(x for x in g if x != e)
                yield put(k, (f, last, rest))
                for q, (f2, l2, g2) in enumerate(stages):
                    if q != k and sc.fits(f2, l2, (e,)):
                        moved = put(q, (f2, l2, tuple(sorted((*g2, e)))), put(k, (f, last, rest)))
                        yield moved
            # split: pieces f..c and c+1..last, the replicas halved (in device order)
            for c in range(f, last):
                ga, gb = g[: len(g) // 2], g[len(g) // 2 :]
                for x, y in ((ga, gb), (gb, ga)):
                    if sc.fits(f, c, x) and sc.fits(c + 1, last, y):
                        yield (*stages[:k], (f, c, x), (c + 1, last, y), *stages[k + 1 :])
        for q in range(k + 1, K):
            f2, l2, g2 = stages[q]
            for e in g:
                for e2 in g2:
                    ng = tuple(sorted(x if x != e else e2 for x in g))
                    ng2 = tuple(sorted(x if x != e2 else e for x in g2))
                    if sc.fits(f, last, ng) and sc.fits(f2, l2, ng2):
                        yield put(q, (f2, l2, ng2), put(k, (f, last, ng)))
        for e in unused:  # swap a stage's device for an unused one
            if sc.fits(f, last, (e,)):
                for x in g:
                    yield put(k, (f, last, tuple(sorted(e if y == x else y for y in g))))
    for k in range(K - 1):
        (fa, la, ga), (_, lb, gb) = stages[k], stages[k + 1]
        for keep, freed in ((ga, gb), (gb, ga)):
            if not sc.fits(fa, lb, keep):
                continue
            base = (*stages[:k], (fa, lb, keep), *stages[k + 2 :])
            yield base
            for q, (f, last, g) in enumerate(base):
                if sc.fits(f, last, freed):
                    yield put(q, (f, last, tuple(sorted((*g, *freed)))), base)
        for cut in (la - 1, la + 1):
            if fa <= cut < lb and sc.fits(fa, cut, ga) and sc.fits(cut + 1, lb, gb):
                yield (*stages[:k], (fa, cut, ga), (cut + 1, lb, gb), *stages[k + 2 :])
