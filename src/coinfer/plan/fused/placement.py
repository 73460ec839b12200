"""PSOMW for fused-layer tile placement (seed S2), its cost models and a brute-force reference.

S2 searches the fused-layer (FL) strategy, the *path offloading* (which device computes each
tile) and the *path scheduling* (the order the source ships the tiles) jointly with Particle
Swarm Optimisation with Minimising Waiting. This module holds the pieces that work on a table
of per-tile costs and know nothing about convolution geometry (that is :mod:`coinfer.core.tiles`):

- :class:`TileCosts` — seconds to ship tile ``t``'s input to device ``d``, compute it there and
  return its output (built by :func:`tile_costs` from a :class:`~coinfer.core.tiles.TilePlan`);
- :func:`schedule_latency` — the latency of an assignment + shipping order under one of two
  link models (below);
- :func:`mw_order` — the *minimising waiting* transmission order;
- :func:`psomw_tiles` — the swarm over (candidate = fused depth x grid, tile -> device, order);
- :func:`brute_force` — exact enumeration for small grids, the ground truth of the tests.

Link models
-----------
``"serial"`` (the model of :func:`~.planner.assign_tiles`): every device receives, computes and
returns its tiles one after another, links to different devices do not contend — the
reference cost model's per-link view. The order of tiles does not matter; only the assignment.

``"pipelined"``: the source has **one radio** and ships input tiles one at a time in the chosen
order (a Wi-Fi station transmits one frame at a time); a device starts a tile as soon as the
tile has arrived and the device has finished its previous one (it receives the next tile while
computing — the overlap S2's "minimising waiting" is about); each device returns outputs over its
own link in the order it computed them. Tiles the source keeps never touch the radio. Here the
order matters: shipping a slow device's tiles late leaves it idle early and busy at the end.

``"links"``: what the tiled runtime (:mod:`coinfer.tiled`) does on point-to-point links — the
source ships each device's tiles over **that device's own link**, in the chosen order and one
after another on that link, while links to different devices carry tiles at the same time; as
in ``"pipelined"``, a device computes a tile as soon as it has arrived and the device is free,
receiving the next one meanwhile, and returns outputs over its own link. It is ``"pipelined"``
with one radio per destination.

Every model gives the reference latency (send + compute + return) for one tile on one device.

Shared media: when tile transfers cross a shared medium (a Wi-Fi cell the source and helpers are
on), they cannot overlap there, whatever the model says about links; both models then also bound
the latency by each medium's total busy time (:attr:`TileCosts.air_s`: the send and return hops
of every tile that cross it). Without media the bound is zero and nothing changes.

Why one module: the three link models, the minimising-waiting order, the swarm and the brute-force
reference all read the same :class:`TileCosts` table and must score a placement identically; kept
together, the swarm's fitness and the ground truth the tests compare it with cannot drift apart.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ...errors import InputError

if TYPE_CHECKING:
    from ...core.instance import Instance
    from ...core.tiles import TilePlan

LinkModel = Literal["serial", "pipelined", "links"]
LINK_MODELS = ("serial", "pipelined", "links")


@dataclass(frozen=True)
class TileCosts:
    """Seconds per tile (rows) and device (columns): ship input, compute, return output."""

    devices: tuple[str, ...]
    send_s: np.ndarray
    comp_s: np.ndarray
    back_s: np.ndarray
    # per shared medium, the seconds tile t sent to device d keeps it busy (send + return hops)
    air_s: dict[str, np.ndarray] = field(default_factory=dict)

    def air_bound(self, assign: Sequence[int]) -> float:
        """The busiest medium's total time for ``assign`` (0 without media)."""
        rows = range(len(assign))
        return max((float(a[rows, list(assign)].sum()) for a in self.air_s.values()), default=0.0)

    @property
    def num_tiles(self) -> int:
        return int(self.comp_s.shape[0])

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def total_s(self) -> np.ndarray:
        """Per tile and device, send + compute + return (the serial model's tile cost)."""
        return self.send_s + self.comp_s + self.back_s


def tile_costs(instance: Instance, plan: TilePlan, devices: Sequence[str]) -> TileCosts:
    """Cost table of ``plan``'s tiles on ``devices`` — the formula of :func:`~.planner.assign_tiles`.

    Device speed is the block's untiled FLOPs over ``instance.compute_s(0, P-1, d)``; input bytes
    scale with the tile's input area, output bytes with its output area.
    """
    P = instance.num_pieces
    src = instance.source
    in_area = plan.sizes[0][0] * plan.sizes[0][1]
    out_area = plan.sizes[-1][0] * plan.sizes[-1][1]
    T, D = len(plan.tiles), len(devices)
    send, comp, back = np.zeros((T, D)), np.zeros((T, D)), np.zeros((T, D))
    air: dict[str, np.ndarray] = {m.name: np.zeros((T, D)) for m in instance.media}
    for j, d in enumerate(devices):
        speed = plan.untiled_flops / max(instance.compute_s(0, P - 1, d), 1e-300)
        for t, tile in enumerate(plan.tiles):
            a, r = tile.regions[0], tile.regions[-1]
            nin = instance.input_bytes * (a[1] - a[0]) * (a[3] - a[2]) / in_area
            nout = instance.output_bytes * (r[1] - r[0]) * (r[3] - r[2]) / out_area
            send[t, j] = instance.transfer_s(src, d, nin)
            comp[t, j] = tile.flops / speed
            back[t, j] = instance.transfer_s(d, src, nout)
            for u, v, x in ((src, d, nin), (d, src, nout)):
                for lk in instance.path(u, v, x):
                    if lk.medium is not None:
                        air[lk.medium][t, j] += lk.transfer_s(x)
    return TileCosts(tuple(devices), send, comp, back, air)


def _check_model(model: str) -> None:
    if model not in LINK_MODELS:
        raise InputError(f"fused: link_model {model!r} is not one of {', '.join(LINK_MODELS)}")


def schedule_latency(
    costs: TileCosts,
    assign: Sequence[int],
    order: Sequence[int] | None = None,
    model: LinkModel = "serial",
) -> tuple[float, np.ndarray]:
    """Latency of shipping tiles in ``order`` to devices ``assign[t]``; also each device's finish.

    ``order`` is a permutation of the tiles (default: tile index order); ignored by ``"serial"``.
    """
    D = costs.num_devices
    air = costs.air_bound(assign)
    if model == "serial":
        fin = np.zeros(D)
        tot = costs.total_s
        for t, d in enumerate(assign):
            fin[d] += tot[t, d]
        return max(float(fin.max()), air), fin
    send, comp, back = costs.send_s, costs.comp_s, costs.back_s
    shared = model == "pipelined"
    radio = [0.0] * D  # when the radio to each device is free again (all one when shared)
    free = [0.0] * D  # when each device finishes computing its latest tile
    ret = [0.0] * D  # when each device's return link has delivered its latest output
    for t in order if order is not None else range(len(assign)):
        d = assign[t]
        s = send[t, d]
        arrive = 0.0
        if s > 0.0:  # the source's own tiles skip the radio
            r = 0 if shared else d
            radio[r] += s
            arrive = radio[r]
        start = arrive if arrive > free[d] else free[d]
        free[d] = start + comp[t, d]
        ret[d] = (free[d] if free[d] > ret[d] else ret[d]) + back[t, d]
    fin = np.asarray(ret)
    return max(float(fin.max()), air), fin


def schedule_timeline(
    costs: TileCosts,
    assign: Sequence[int],
    order: Sequence[int] | None = None,
    model: LinkModel = "links",
) -> list[dict[str, float | int]]:
    """When each tile is shipped, computed and returned under ``model`` — the bars of a
    predicted Gantt chart (shared media ignored). One dict per tile, in shipping order:
    ``tile``, ``device`` (index), ``send_start``, ``arrive``, ``start``, ``end``, ``returned``;
    the latest ``returned`` equals :func:`schedule_latency` without media."""
    _check_model(model)
    D = costs.num_devices
    seq = list(order) if order is not None and model != "serial" else list(range(len(assign)))
    radio = [0.0] * D
    free = [0.0] * D
    ret = [0.0] * D
    out: list[dict[str, float | int]] = []
    for t in seq:
        d = assign[t]
        s, c, b = costs.send_s[t, d], costs.comp_s[t, d], costs.back_s[t, d]
        if model == "serial":  # receive, compute, return, one tile after another per device
            t0 = ret[d]
            arrive = start = t0 + s
            free[d] = end = start + c
            ret[d] = end + b
        else:
            r = 0 if model == "pipelined" else d
            t0 = radio[r] if s > 0.0 else 0.0
            arrive = t0 + s
            if s > 0.0:
                radio[r] = arrive
            start = max(arrive, free[d])
            free[d] = end = start + c
            ret[d] = max(end, ret[d]) + b
        out.append(
            {
                "tile": t,
                "device": d,
                "send_start": t0,
                "arrive": arrive,
                "start": start,
                "end": end,
                "returned": ret[d],
            }
        )
    return out


def mw_order(costs: TileCosts, assign: Sequence[int]) -> tuple[int, ...]:
    """Minimising-waiting shipping order for ``assign`` (the pipelined model's repair).

    Two orders are built and the one with the lower latency kept: (a) *earliest-ready list
    scheduling* — the radio always serves the device that will be idle first (ties: the shorter
    transfer), so no device sits waiting while another still has queued work; (b) Johnson's rule
    on (ship, compute + return) — optimal when every tile goes to one device (two-machine flow
    shop), a good order when one device dominates. Local tiles (no transfer) go first.
    """
    T = len(assign)
    send, comp, back = costs.send_s, costs.comp_s, costs.back_s
    local = [t for t in range(T) if send[t, assign[t]] <= 0.0]
    remote = [t for t in range(T) if send[t, assign[t]] > 0.0]
    # (a) earliest-ready list scheduling
    free = [0.0] * costs.num_devices
    for t in local:
        free[assign[t]] += comp[t, assign[t]]
    radio = 0.0
    todo = list(remote)
    a: list[int] = list(local)
    while todo:
        t = min(todo, key=lambda x: (free[assign[x]], send[x, assign[x]], x))
        d = assign[t]
        radio += send[t, d]
        free[d] = max(radio, free[d]) + comp[t, d]
        a.append(t)
        todo.remove(t)
    # (b) Johnson's rule with machine 1 = radio, machine 2 = device compute + return
    first = sorted(
        (t for t in remote if send[t, assign[t]] < comp[t, assign[t]] + back[t, assign[t]]),
        key=lambda t: send[t, assign[t]],
    )
    rest = sorted(
        (t for t in remote if t not in set(first)),
        key=lambda t: -(comp[t, assign[t]] + back[t, assign[t]]),
    )
    b = tuple(local + first + rest)
    la = schedule_latency(costs, assign, a, "pipelined")[0]
    lb = schedule_latency(costs, assign, b, "pipelined")[0]
    return tuple(a) if la <= lb else b


def lpt_order(costs: TileCosts, assign: Sequence[int]) -> tuple[int, ...]:
    """Largest-compute-first order: the order greedy LPT placed the tiles in."""
    return tuple(sorted(range(len(assign)), key=lambda t: (-costs.comp_s[t, assign[t]], t)))


def eft_pipelined(costs: TileCosts) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Earliest-finish-time list scheduling under the pipelined model: ``(assign, order)``.

    Tiles in decreasing compute order; each goes to the device where it would be back soonest
    given the radio's and that device's current commitments (a tile kept at the source skips the
    radio), and is shipped next. The greedy of :func:`~.planner.assign_tiles` ignores that the
    radio is shared; this one does not, which is what makes it a useful seed for the swarm.
    """
    T, D = costs.num_tiles, costs.num_devices
    send, comp, back = costs.send_s, costs.comp_s, costs.back_s
    radio, free, ret = 0.0, [0.0] * D, [0.0] * D
    assign, order = [0] * T, []
    for t in sorted(range(T), key=lambda i: (-float(costs.comp_s[i].min()), i)):
        best: tuple[float, int] | None = None
        for d in range(D):
            arrive = radio + send[t, d] if send[t, d] > 0.0 else 0.0
            done = max(arrive, free[d]) + comp[t, d]
            back_at = max(done, ret[d]) + back[t, d]
            if best is None or back_at < best[0]:
                best = (back_at, d)
        assert best is not None
        d = best[1]
        if send[t, d] > 0.0:
            radio += send[t, d]
            arrive = radio
        else:
            arrive = 0.0
        free[d] = max(arrive, free[d]) + comp[t, d]
        ret[d] = max(free[d], ret[d]) + back[t, d]
        assign[t] = d
        order.append(t)
    return tuple(assign), tuple(order)


# ----- brute force -----------------------------------------------------------------------------

# Enumeration budget (assignments x orders) of brute_force: ~1 s of Python on the shared box.
BF_MAX_EVALS = 200_000


def bf_size(costs: TileCosts, model: LinkModel) -> int:
    """How many (assignment, order) pairs :func:`brute_force` enumerates."""
    n = costs.num_devices**costs.num_tiles
    return n * math.factorial(costs.num_tiles) if model != "serial" else n


def brute_force(
    costs: TileCosts, model: LinkModel = "serial", max_evals: int = BF_MAX_EVALS
) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """Exact optimum ``(latency, assignment, order)`` over every assignment (and, pipelined, order).

    Serial: all ``D**T`` assignments, vectorised. Pipelined: additionally every one of the ``T!``
    shipping orders. :class:`InputError` when that exceeds ``max_evals``.
    """
    _check_model(model)
    T, D = costs.num_tiles, costs.num_devices
    if bf_size(costs, model) > max_evals:
        raise InputError(
            f"fused brute force: {bf_size(costs, model)} cases for {T} tiles on {D} devices "
            f"exceed the budget {max_evals}"
        )
    combos = np.array(list(itertools.product(range(D), repeat=T)), dtype=np.int64)
    if model == "serial":
        tot = costs.total_s
        fin = np.zeros((len(combos), D))
        rows = np.arange(len(combos))
        for t in range(T):
            np.add.at(fin, (rows, combos[:, t]), tot[t, combos[:, t]])
        mk = fin.max(axis=1)
        for a in costs.air_s.values():  # a shared medium carries every tile's hops in turn
            busy = np.zeros(len(combos))
            for t in range(T):
                busy += a[t, combos[:, t]]
            mk = np.maximum(mk, busy)
        i = int(mk.argmin())
        return float(mk[i]), tuple(int(x) for x in combos[i]), tuple(range(T))
    best: tuple[float, tuple[int, ...], tuple[int, ...]] = (math.inf, (), ())
    perms = list(itertools.permutations(range(T)))
    for combo in combos:
        assign = tuple(int(x) for x in combo)
        for perm in perms:
            lat = schedule_latency(costs, assign, perm, model)[0]
            if lat < best[0]:
                best = (lat, assign, perm)
    return best


# ----- the swarm -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solution:
    """A decoded particle: candidate index, tile -> device index, shipping order, latency.

    ``latency_s`` includes the candidate's ``extra_s`` (the layer-wise suffix after the fused
    block), so solutions of different fused depths compare directly.
    """

    cand: int
    assign: tuple[int, ...]
    order: tuple[int, ...]
    latency_s: float


# PSO coefficients: the common constriction-like setting (inertia falling 0.9 -> 0.4, cognitive
# and social weights 1.5), velocity capped at 0.25 of the unit key range so keys keep moving
# between neighbouring devices rather than jumping across the whole range every step.
W_START, W_END, C_COG, C_SOC, V_MAX = 0.9, 0.4, 1.5, 1.5, 0.25
# Every this many iterations the global best gets the local search of _polish (memetic PSO):
# plain PSO on discretised keys stalls a few % above the optimum on 6+ tiles (measured on exp2).
POLISH_EVERY = 10


def _evaluate(
    costs: TileCosts, extra: float, assign: tuple[int, ...], order: tuple[int, ...], model: str
) -> tuple[float, tuple[int, ...]]:
    """Latency (with the suffix) after the MW repair of the order; the repaired order."""
    if model == "serial":
        return schedule_latency(costs, assign, None, "serial")[0] + extra, order
    own = schedule_latency(costs, assign, order, model)[0]
    mw = mw_order(costs, assign)
    rep = schedule_latency(costs, assign, mw, model)[0]
    return (own + extra, order) if own <= rep else (rep + extra, mw)


def _polish(
    costs: TileCosts, extra: float, sol: Solution, model: str, max_rounds: int = 100
) -> Solution:
    """Relieve the device that finishes last: move one of its tiles elsewhere, or swap one of
    its tiles with another device's, while that lowers the latency (first improvement)."""
    best = sol
    D = costs.num_devices
    for _ in range(max_rounds):
        _, fin = schedule_latency(costs, best.assign, best.order, model)  # type: ignore[arg-type]
        crit = int(np.argmax(fin))
        A = best.assign
        moves = (
            (*A[:t], d, *A[t + 1 :])
            for t in range(len(A))
            if A[t] == crit
            for d in range(D)
            if d != crit
        )
        swaps = (
            tuple(A[u] if i == t else crit if i == u else x for i, x in enumerate(A))
            for t in range(len(A))
            if A[t] == crit
            for u in range(len(A))
            if A[u] != crit
        )
        for assign in itertools.chain(moves, swaps):
            lat, order = _evaluate(costs, extra, assign, best.order, model)
            if lat < best.latency_s * (1 - 1e-12):
                best = Solution(best.cand, assign, tuple(order), lat)
                break
        else:
            break
    return best


def psomw_tiles(
    cands: Sequence[TileCosts],
    extras: Sequence[float],
    model: LinkModel,
    rng: np.random.Generator,
    *,
    particles: int = 30,
    iterations: int = 60,
    init: Sequence[Solution] = (),
    polish: bool = True,
) -> tuple[Solution, list[float]]:
    """PSOMW over candidates (fused depth x grid), tile placement and shipping order.

    A particle is a point of ``[0, 1)^(1 + 2 T_max)``: key 0 picks the candidate, keys
    ``1..T_max`` each tile's device (scaled to that candidate's memory-feasible devices, so every
    tile is always assigned to a device that holds the block — the validity repair), keys
    ``T_max+1..2 T_max`` the shipping order (random keys, ranked). The *minimising waiting*
    repair then replaces the decoded order by :func:`mw_order` when that waits less, and writes
    the repaired order back into the particle (Lamarckian), so the swarm learns from it.
    ``init`` solutions (e.g. greedy's) are encoded as the first particles; the global best is
    elitist, so the result is never worse than the best ``init``. With ``polish`` the ``init``
    solutions are first improved by the local search below (so every seeded candidate grid
    competes with a good placement, not greedy's), and the global
    best gets a local search (move or swap a tile of the device finishing last) every
    ``POLISH_EVERY`` iterations, written back into the swarm, and once more at the end.
    Returns the best and the best latency after every iteration.
    """
    _check_model(model)
    if not cands:
        raise InputError("fused PSOMW: no candidate grid")
    C = len(cands)
    Tmax = max(c.num_tiles for c in cands)
    dim = 1 + 2 * Tmax
    hi = np.nextafter(1.0, 0.0)
    n = max(particles, len(init), 1)
    x = rng.random((n, dim))
    v = rng.uniform(-V_MAX, V_MAX, (n, dim))
    if polish:  # seeded particles start from their local optimum (one per candidate grid)
        init = [_polish(cands[s.cand], extras[s.cand], s, model) for s in init]
    for i, s in enumerate(init):
        x[i] = _encode(s, C, cands[s.cand], Tmax, rng)
    cache: dict[tuple[int, tuple[int, ...], tuple[int, ...]], tuple[float, tuple[int, ...]]] = {}

    def decode(p: np.ndarray) -> Solution:
        c = min(int(p[0] * C), C - 1)
        cost = cands[c]
        T, D = cost.num_tiles, cost.num_devices
        assign = tuple(min(int(k * D), D - 1) for k in p[1 : 1 + T])
        order = tuple(int(i) for i in np.argsort(p[1 + Tmax : 1 + Tmax + T], kind="stable"))
        key = (c, assign, order)
        hit = cache.get(key)
        if hit is None:
            hit = _evaluate(cost, extras[c], assign, order, model)
            cache[key] = hit
        lat, rep = hit
        if rep != order:  # write the repaired order back into the keys
            p[1 + Tmax + np.asarray(rep)] = (np.arange(T) + 0.5) / T
        return Solution(c, assign, tuple(rep), lat)

    sols = [decode(x[i]) for i in range(n)]
    pbest, pval = x.copy(), np.array([s.latency_s for s in sols])
    for i, s in enumerate(init):  # an init solution's own latency is authoritative
        if s.latency_s < pval[i]:
            pval[i] = s.latency_s
            sols[i] = s
    g = int(pval.argmin())
    best = sols[g]
    history = [best.latency_s]
    for it in range(iterations):
        w = W_START + (W_END - W_START) * it / max(iterations - 1, 1)
        r1, r2 = rng.random((n, dim)), rng.random((n, dim))
        v = w * v + C_COG * r1 * (pbest - x) + C_SOC * r2 * (pbest[g] - x)
        np.clip(v, -V_MAX, V_MAX, out=v)
        x = np.clip(x + v, 0.0, hi)
        for i in range(n):
            s = decode(x[i])
            if s.latency_s < pval[i]:
                pval[i] = s.latency_s
                pbest[i] = x[i]
                if s.latency_s < best.latency_s:
                    best = s
        g = int(pval.argmin())
        if polish and (it + 1) % POLISH_EVERY == 0:  # memetic step, written back (Lamarckian)
            best = _polish(cands[best.cand], extras[best.cand], best, model)
            if best.latency_s < pval[g]:
                pval[g] = best.latency_s
                pbest[g] = x[g] = _encode(best, C, cands[best.cand], Tmax, rng)
        history.append(best.latency_s)
    if polish:
        best = _polish(cands[best.cand], extras[best.cand], best, model)
        history[-1] = best.latency_s
    return best, history


def _encode(
    s: Solution, C: int, cost: TileCosts, Tmax: int, rng: np.random.Generator
) -> np.ndarray:
    """Particle keys that decode to ``s`` (unused tile keys random)."""
    p = rng.random(1 + 2 * Tmax)
    p[0] = (s.cand + 0.5) / C
    T, D = cost.num_tiles, cost.num_devices
    p[1 : 1 + T] = (np.asarray(s.assign) + 0.5) / D
    p[1 + Tmax + np.asarray(s.order, dtype=np.int64)] = (np.arange(T) + 0.5) / T
    return p


__all__ = [
    "BF_MAX_EVALS",
    "LINK_MODELS",
    "LinkModel",
    "Solution",
    "TileCosts",
    "bf_size",
    "brute_force",
    "eft_pipelined",
    "lpt_order",
    "mw_order",
    "psomw_tiles",
    "schedule_latency",
    "schedule_timeline",
    "tile_costs",
]
