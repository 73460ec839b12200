"""Device classes for the chain DP: interchangeable devices searched as one unit with a count.

**What counts as interchangeable.** Devices ``u`` and ``v`` (neither the source) are in one
class when swapping their names maps the instance onto itself: identical piece times, memory,
power figures, DVFS levels and power exponent, and for every other device ``w`` the hop
``u -> w`` equals ``v -> w`` and ``w -> u`` equals ``w -> v`` (bandwidth, latency and the shared
medium it crosses), and ``u -> v`` equals ``v -> u``. Equality is exact float equality, on
purpose: a cluster file that describes a fleet of identical phones yields identical numbers,
while two *measured* devices that differ by noise are different devices — merging them under
a tolerance would make the planner exactly optimal for an instance nobody has. (Round measured
costs before planning to merge near-twins.)
"Swap ``u`` and ``v``" is a symmetry of the instance; if ``(u v)`` and ``(v w)`` are symmetries
so is ``(u w) = (u v)(v w)(u v)``, so the relation is an equivalence and each device is compared
with one representative per class only. A hashed signature (node data + the sorted multisets
of its out- and in-hops, which a swap preserves) buckets candidates first, so detection is
``O(D^2)`` dictionary look-ups for a fleet of few classes.

**Why classes make the DP exact and small.** If the instance is symmetric under every
permutation within each class, two plans that differ by such a permutation have the same
latency, period and energy. A one-device-per-stage plan is then determined, up to symmetry,
by the *class* of each stage's device, subject to class ``c`` serving at most ``n_c`` stages.
The used-device set of the DP state becomes the vector of used counts per class,
``prod(n_c + 1)`` states instead of ``2^D`` — 5 096 instead of ``2^64`` for a 64-device fleet
of 48 phones, 12 boards, 3 servers and a source. Exactly when it holds: when every class is a
genuine symmetry of the whole instance, which :func:`device_classes` guarantees by
construction (a fleet of identical phones on one access point plus a few servers; not a fleet
where each phone has its own measured Wi-Fi rate).

**Transfers without all-pairs routing.** Pricing every transfer of a 64-device, 100-piece
instance needs 64 x 101 Dijkstra runs (~5 s here). Under the symmetry, the cheapest path from a
member ``u`` of class ``a`` to a device of class ``b`` is found on a *quotient graph*: ``u``
plus one node per class (its members other than ``u``). A cheapest path never visits two
members of one class — swapping the second for the first, a symmetry fixing ``u``, gives a
path to it that is no longer — so quotient paths lift to real paths with distinct devices and
the distances are equal. This is ``C + 1`` nodes per class and byte size, done for all sizes at
once in numpy (:func:`class_transfers`).

A transfer's *period item* is the busy time of the busiest resource on the path the
reference model picks; among equal-cost paths that pick depends on tie-breaking, so the item
here is the least, over all cheapest paths, of the largest single hop (and the energy the
least radio energy over them). Both are lower bounds on the reference figures and equal to them
when the cheapest path is unique up to symmetry and crosses no medium twice. The planner
therefore claims optimality only after the reference model confirms that the returned plan
attains the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...core.instance import Instance
from ...core.plans import Stage
from ...errors import InfeasibleError
from .._shared import best_energy_freq, infeasible_message
from ._dp_model import INF, stage_tables
from ._dp_period import _PeriodSearch
from ._dp_polish import polish_latency
from ._dp_sum import least_sum_counts, relaxed_to_go

# Relative slack when deciding that a hop lies on a cheapest path. Generous on purpose: a
# wider "tight" set can only lower the min-over-paths items, which keeps them lower bounds.
TIGHT_REL = 1e-9


def _node_key(instance: Instance, d: str) -> tuple:  # type: ignore[type-arg]
    dev = instance.device_by_name[d]
    return (
        d == instance.source,
        tuple(pc.time_s[d] for pc in instance.pieces),
        dev.mem_bytes,
        dev.power_idle_w,
        dev.power_active_w,
        dev.power_transmit_w,
        tuple(dev.dvfs_levels),
        dev.power_exponent,
    )


def _hop(instance: Instance, u: str, v: str) -> tuple[float, float, str] | None:
    lk = instance.link_by_pair.get((u, v))
    return None if lk is None else (lk.bandwidth_Bps, lk.latency_s, lk.medium or "")


def swap_is_symmetry(instance: Instance, u: str, v: str) -> bool:
    """Whether exchanging ``u`` and ``v`` maps the instance onto itself (see module docs)."""
    if u == v:
        return True
    if instance.source in (u, v) or _node_key(instance, u) != _node_key(instance, v):
        return False
    if _hop(instance, u, v) != _hop(instance, v, u):
        return False
    for w in instance.device_names:
        if w in (u, v):
            continue
        if _hop(instance, u, w) != _hop(instance, v, w) or _hop(instance, w, u) != _hop(
            instance, w, v
        ):
            return False
    return True


def device_classes(instance: Instance) -> tuple[tuple[str, ...], ...]:
    """Partition of all devices into classes of interchangeable devices, in instance order.

    The source is always alone. Pure function of the instance; exact (no tolerance)."""
    names = instance.device_names
    bucket: dict[tuple, list[list[str]]] = {}  # type: ignore[type-arg]
    order: list[list[str]] = []
    for d in names:
        out = sorted(h for w in names if w != d and (h := _hop(instance, d, w)) is not None)
        inn = sorted(h for w in names if w != d and (h := _hop(instance, w, d)) is not None)
        key = (_node_key(instance, d), tuple(out), tuple(inn))
        groups = bucket.setdefault(key, [])
        for g in groups:
            if swap_is_symmetry(instance, g[0], d):
                g.append(d)
                break
        else:
            groups.append([d])
            order.append(groups[-1])
    return tuple(tuple(g) for g in order)


class ClassTransfers:
    """Cheapest-path figures between classes, per cut: ``[k, a, b]`` = from a member of class
    ``a`` to another device of class ``b`` (for ``b == a`` another member; ``inf`` when there is
    none). ``total_s`` is the path time (latency term, exact), ``hop_s`` the least largest hop
    over cheapest paths and ``energy_j`` the least radio energy over them (lower bounds on the
    reference figures; see module docs)."""

    def __init__(self, instance: Instance, classes: Sequence[Sequence[str]]) -> None:
        C = len(classes)
        sizes = sorted({instance.cut_bytes(k) for k in range(instance.num_pieces + 1)})
        pos = {x: i for i, x in enumerate(sizes)}
        self.on_medium = np.zeros((C, C), dtype=bool)  # the direct hop a -> b crosses a medium
        X = np.array(sizes, dtype=float)
        bw = np.full((C, C), np.nan)
        lat = np.full((C, C), np.nan)
        for a, ga in enumerate(classes):
            for b, gb in enumerate(classes):
                other = [w for w in gb if w != ga[0]]
                if not other:
                    continue
                h = _hop(instance, ga[0], other[0])
                if h is not None:
                    bw[a, b], lat[a, b] = h[0], h[1]
                    self.on_medium[a, b] = bool(h[2])
        with np.errstate(invalid="ignore"):
            w = lat[None] + X[:, None, None] / bw[None]  # (sizes, C, C)
        w = np.where(np.isnan(w), INF, w)
        ptx = np.array(
            [instance.device_by_name[g[0]].power_transmit_w or 0.0 for g in classes], dtype=float
        )
        counts = [len(g) for g in classes]
        tot = np.full((len(sizes), C, C), INF)
        hop = np.full((len(sizes), C, C), INF)
        en = np.full((len(sizes), C, C), INF)
        for a in range(C):
            d, bo, em = _from_member(w, a, counts, ptx)
            tot[:, a], hop[:, a], en[:, a] = d, bo, em
        ix = [pos[instance.cut_bytes(k)] for k in range(instance.num_pieces + 1)]
        self.total_s, self.hop_s, self.energy_j = tot[ix], hop[ix], en[ix]


def _from_member(
    w: np.ndarray, a: int, counts: list[int], ptx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quotient-graph figures from one member ``u`` of class ``a`` to every class, all sizes.

    Node 0 is ``u``; node ``1 + c`` stands for the members of class ``c`` other than ``u``.
    Bellman-Ford in numpy (``C`` rounds over ``(sizes, C+1, C+1)``), then the least largest hop
    and least energy over the edges that lie on a cheapest path."""
    K, C, _ = w.shape
    N = C + 1
    present = np.array([True] + [counts[c] - (c == a) > 0 for c in range(C)])
    W = np.full((K, N, N), INF)
    W[:, 0, 1:] = w[:, a, :]
    W[:, 1:, 1:] = w
    idx = np.arange(1, N)
    W[:, idx, idx] = INF  # a cheapest path never visits two members of one class
    W[:, ~present, :] = INF
    W[:, :, ~present] = INF
    W[:, :, 0] = INF  # never back through u
    dist = np.full((K, N), INF)
    dist[:, 0] = 0.0
    for _ in range(N - 1):
        nxt = np.minimum(dist, (dist[:, :, None] + W).min(axis=1))
        if np.array_equal(nxt, dist):
            break
        dist = nxt
    fin = np.isfinite(W)
    with np.errstate(invalid="ignore"):
        tight = fin & (dist[:, :, None] + W <= dist[:, None, :] * (1 + TIGHT_REL) + 1e-15)
    sender = np.concatenate([[ptx[a]], ptx])
    bott = np.full((K, N), INF)
    bott[:, 0] = 0.0
    emin = np.full((K, N), INF)
    emin[:, 0] = 0.0
    with np.errstate(invalid="ignore"):  # inf x 0 W (no radio figure) where there is no hop
        radio = np.where(fin, W * sender[None, :, None], INF)
    for _ in range(N - 1):
        nb = np.where(tight, np.maximum(bott[:, :, None], W), INF).min(axis=1)
        ne = np.where(tight, emin[:, :, None] + radio, INF).min(axis=1)
        nb[:, 0], ne[:, 0] = 0.0, 0.0
        nb, ne = np.minimum(bott, nb), np.minimum(emin, ne)
        if np.array_equal(nb, bott) and np.array_equal(ne, emin):
            break
        bott, emin = nb, ne
    return dist[:, 1:], bott[:, 1:], emin[:, 1:]


class ClassModel:
    """The chain problem over device classes: the same interface as
    :class:`~coinfer.plan.chain._dp_model.ChainModel`, units = classes with ``counts`` members.

    ``time[c, i, j]`` / ``sc[c, i, j]`` are any member's stage time / objective cost (members are
    identical); transfer arrays come from :class:`ClassTransfers` over *all* classes (relays may
    cross devices a plan cannot compute on) restricted to the ``usable`` ones."""

    def __init__(
        self,
        instance: Instance,
        objective: str,
        classes: Sequence[Sequence[str]],
        usable: Sequence[int],
    ) -> None:
        self.instance = instance
        self.objective = objective
        self.classes = [tuple(g) for g in classes]
        self.usable = list(usable)
        self.members = [self.classes[c] for c in self.usable]
        self.n = len(self.usable)
        self.P = instance.num_pieces
        self.names = [d for g in self.members for d in g]
        # a plan has at most P stages, so members past P never matter (fewer states, same plans)
        self.counts = [min(len(g), self.P) for g in self.members]
        self.tt = ClassTransfers(instance, self.classes)
        src_cls = next(c for c, g in enumerate(self.classes) if instance.source in g)
        self.src_cls = src_cls
        reps = [g[0] for g in self.members]
        self.freqs = [
            best_energy_freq(instance.device_by_name[d]) if objective == "energy" else 1.0
            for d in reps
        ]
        self.time, self.sc = stage_tables(instance, objective, reps, self.freqs)

    def local(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(middle ``[k, c, e]``, start ``[e]`` from the source, end ``[d]`` to the source) over
        usable classes; the source's own class starts and ends at no cost (same device)."""
        ix = self.usable
        mid = arr[:, ix][:, :, ix]
        start = arr[0, self.src_cls, ix].copy()
        end = arr[self.P][:, self.src_cls][ix].copy()
        for e, c in enumerate(ix):
            if c == self.src_cls:
                start[e] = end[e] = 0.0
        return mid, start, end

    def hop_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.local(self.tt.hop_s)

    def latency_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.local(self.tt.total_s)

    def medium_masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which transfers' direct hop crosses a shared medium: (middle ``[c, e]``, start, end)."""
        ix = self.usable
        m = self.tt.on_medium
        return m[np.ix_(ix, ix)], m[self.src_cls, ix], m[ix, self.src_cls]

    def transfer_cost(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transfer cost in the objective's unit: seconds (latency) or joules (energy)."""
        return self.local(self.tt.energy_j if self.objective == "energy" else self.tt.total_s)

    def stages(self, path: list[tuple[int, int, int]]) -> tuple[Stage, ...]:
        """``(first, last, class)`` triples → Stage objects: each class hands out its members in
        order (any order is equivalent under the symmetry)."""
        nxt = [0] * self.n
        out = []
        for i, j, e in path:
            d = self.members[e][nxt[e]]
            nxt[e] += 1
            f = self.freqs[e]
            out.append(Stage(i, j, (d,), None if f == 1.0 else (f,)))
        return tuple(out)


def class_states(counts: Sequence[int]) -> int:
    """Used-count vectors of a class DP: ``prod(n_c + 1)`` (``2^D`` when every class is one device)."""
    return math.prod(c + 1 for c in counts)


def class_sum_path(model: ClassModel) -> tuple[list[tuple[int, int, int]], bool, float]:
    """Least latency/energy over classes: ``(path, proven, lower bound)``.

    Proven: the count-respecting optimum of the class arrays (:func:`least_sum_counts`), and
    the bound is its value. Past the count DP's budget: a feasible plan (the period search's,
    at its loosest threshold) improved by local moves, and the count-free relaxation's value
    as the bound — a plan that may reuse classes beyond their counts includes every real plan.
    """
    mid, start, end = model.transfer_cost()
    path, proven = least_sum_counts(model.sc, mid, start, end, model.counts)
    if path is None and proven:
        raise InfeasibleError(infeasible_message(model.instance, "dp", model.names))
    if path is not None:
        return path, True, path_sum(path, model.sc, mid, start, end)
    _H, _G, bound = relaxed_to_go(model.sc, mid, start, end, "sum")
    search = _PeriodSearch(model)
    cands = search.candidates()
    reach = search.reach(float(cands[-1])) if len(cands) else None
    if reach is None:
        raise InfeasibleError(infeasible_message(model.instance, "dp", model.names))
    start_plan = search.recover(float(cands[-1]), reach)
    return polish_latency(start_plan, model.sc, mid, start, end, model.counts), False, bound


def path_sum(
    path: list[tuple[int, int, int]],
    sc: np.ndarray,
    mid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> float:
    """A stage path's additive cost under the given arrays (same summation order as the DPs)."""
    total = float(start[path[0][2]])
    for k, (i, j, e) in enumerate(path):
        if k:
            total += float(mid[i, path[k - 1][2], e])
        total += float(sc[e, i, j])
    return total + float(end[path[-1][2]])
