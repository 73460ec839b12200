"""Particle-swarm planners: PSOMW (S2) and evolutionary placement + exact DP partitioning (S4).

Two swarms over the one-device-per-stage plan space, both minimising the reference objective
(latency, period or energy) evaluated exactly by :mod:`coinfer.core.evaluate`:

- **PSOMW** (S2, "PSO with minimising waiting"). A particle is a real vector of up to
  ``K = min(P, D) - 1`` cut positions followed by ``K + 1`` device keys. Decoding floors the
  values; a particle that decodes to an invalid plan is *repaired* to a nearby valid one
  instead of being discarded: cuts out of order are sorted (non-monotone cuts), duplicate cuts
  drop an empty stage, a stage whose device is already taken (device reuse) or too small
  (memory overflow) moves to the free device on which it *waits least* — the one that
  finishes it soonest counting the transfer in, S2's minimising-waiting rule — and if no free
  device can hold the stage its cut slides towards the neighbour. The repaired plan is written
  back into the particle (Lamarckian repair), so the swarm learns valid regions.
- **S4** (evolutionary device placement + exact partitioning). A particle is a vector of device
  keys whose ``argsort`` is a device order; for that order the fixed-order DP of
  :func:`~coinfer.plan._shared.order_dp` (``O(P^2 D^2)``) picks, exactly, which devices of
  the order to use and where to cut. The swarm only searches orders.

``variant="hybrid"`` (default) runs both swarms and polishes the best plan with a
first-improvement local search (move a cut, swap/replace/merge/split stages). Offloading
paths over multi-hop links are not searched: for a fixed placement the cheapest
store-and-forward path (what the cost model uses) is already optimal for every objective that
sums or maxes per-transfer times, so the swarm searches cuts and devices only.

All are heuristics (no optimality proof); on random instances with <= 12 pieces and <= 4
devices the hybrid lands within 1 % of brute force on average (tests/benchmark).
Complexity per run: ``O(S * I * (P + eval))`` for PSOMW with swarm ``S`` and ``I`` iterations,
``O(S * I * P^2 D^2)`` for S4 (orders are cached, so at most ``D!`` DPs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...core.evaluate import memory_bound_check, objective_value
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage, check_objective
from ...errors import InfeasibleError, InputError
from .._shared import Config, finish, infeasible_message, order_dp

# Clerc & Kennedy's constriction coefficients (IEEE TEC 2002): inertia 0.729 and equal
# cognitive/social weights 1.49445 guarantee convergence without a velocity explosion.
INERTIA = 0.729
COGNITIVE = 1.49445
SOCIAL = 1.49445
# Velocities are clamped to this fraction of each coordinate's range (standard Vmax rule).
VMAX_FRACTION = 0.3


@dataclass(frozen=True, slots=True)
class PSOOptions:
    """Options of :func:`plan_pso`.

    ``particles`` and ``iterations`` size each swarm; ``variant`` picks PSOMW, S4 or both
    (``hybrid``) followed by local search (``polish``).
    """

    particles: int = 20
    iterations: int = 40
    seed: int = 0
    variant: Literal["psomw", "s4", "hybrid"] = "hybrid"
    polish: bool = True


class _Fitness:
    """Cached exact objective of a config (``inf`` when it does not fit in memory)."""

    def __init__(self, instance: Instance, objective: Objective) -> None:
        self.instance = instance
        self.objective = objective
        self.cache: dict[Config, float] = {}
        self.best: tuple[float, Config | None] = (math.inf, None)

    def __call__(self, cfg: Config) -> float:
        v = self.cache.get(cfg)
        if v is None:
            inst = self.instance
            fits = all(
                inst.mem_bytes(s.first, s.last) <= inst.device_by_name[s.devices[0]].mem_bytes
                for s in cfg
            )
            v = objective_value(inst, cfg, self.objective) if fits else math.inf
            self.cache[cfg] = v
            if v < self.best[0]:
                self.best = (v, cfg)
        return v


# ----- PSOMW: decode + minimising-waiting repair -----------------------------------------------


def _waiting_s(instance: Instance, prev_dev: str, first: int, last: int, dev: str) -> float:
    """How long stage ``first..last`` on ``dev`` keeps the request waiting: transfer in + compute."""
    return instance.transfer_s(prev_dev, dev, instance.cut_bytes(first)) + instance.compute_s(
        first, last, dev
    )


def repair(instance: Instance, cuts: list[int], devs: list[int]) -> Config | None:
    """Map a decoded particle (cut positions, device indices per stage) to the nearest valid plan.

    ``cuts`` are 0-based "cut after piece" positions in any order and possibly repeated; devices
    may repeat or overflow. Returns ``None`` only if no valid plan is reachable by these moves.
    """
    P = instance.num_pieces
    names = instance.device_names
    # sorting fixes non-monotone cuts; the set drops repeated cuts (empty stages)
    bounds = sorted({c for c in cuts if 0 <= c < P - 1})
    ranges = [(a + 1, b) for a, b in zip([-1, *bounds], [*bounds, P - 1], strict=True)]
    wanted = [names[devs[min(i, len(devs) - 1)] % len(names)] for i in range(len(ranges))]
    mem = {d.name: d.mem_bytes for d in instance.devices}
    stages: list[Stage] = []
    used: set[str] = set()
    prev = instance.source
    i = 0
    while i < len(ranges):
        first, last = ranges[i]
        d = wanted[i]
        need = instance.mem_bytes(first, last)
        if d in used or need > mem[d]:
            free = [x for x in names if x not in used and mem[x] >= need]
            if free:
                d = min(free, key=lambda x: _waiting_s(instance, prev, first, last, x))
            elif last > first and i + 1 < len(ranges):
                # slide the cut left: give the last piece to the next stage and retry
                ranges[i] = (first, last - 1)
                ranges[i + 1] = (last, ranges[i + 1][1])
                continue
            else:
                return None
        stages.append(Stage(first, last, (d,)))
        used.add(d)
        prev = d
        i += 1
    return tuple(stages)


def _encode(cfg: Config, K: int, P: int, names: tuple[str, ...]) -> np.ndarray:
    """Write a plan back into a PSOMW position (centres of the decoded cells)."""
    cuts = [s.last + 0.5 for s in cfg[:-1]] + [P - 0.5] * (K - (len(cfg) - 1))
    devs = [names.index(s.devices[0]) + 0.5 for s in cfg]
    devs += [devs[-1]] * (K + 1 - len(devs))
    return np.array(cuts + devs, dtype=float)


def _swarm(
    rng: np.random.Generator,
    dim: int,
    high: np.ndarray,
    particles: int,
    iterations: int,
    score: Callable[[np.ndarray], tuple[float, np.ndarray | None]],
    seeds: list[np.ndarray] | None = None,
) -> None:
    """Generic global-best PSO on the box ``[0, high)``; ``score`` may return a repaired position."""
    pos = rng.uniform(0.0, high, size=(particles, dim))
    for i, s in enumerate(seeds or []):
        if i < particles:
            pos[i] = s
    vmax = VMAX_FRACTION * high
    vel = rng.uniform(-vmax, vmax, size=(particles, dim))
    pbest = pos.copy()
    pval = np.full(particles, math.inf)
    gbest, gval = pos[0].copy(), math.inf
    for _ in range(iterations + 1):
        for i in range(particles):
            v, fixed = score(pos[i])
            if fixed is not None:
                pos[i] = fixed
            if v < pval[i]:
                pval[i], pbest[i] = v, pos[i].copy()
            if v < gval:
                gval, gbest = v, pos[i].copy()
        r1 = rng.random((particles, dim))
        r2 = rng.random((particles, dim))
        vel = INERTIA * vel + COGNITIVE * r1 * (pbest - pos) + SOCIAL * r2 * (gbest - pos)
        vel = np.clip(vel, -vmax, vmax)
        pos = np.clip(pos + vel, 0.0, np.nextafter(high, 0.0))


def psomw_chain(
    instance: Instance,
    fit: _Fitness,
    rng: np.random.Generator,
    opts: PSOOptions,
    seeds: list[Config],
) -> None:
    """Run the PSOMW swarm; results land in ``fit.best``."""
    P, names = instance.num_pieces, instance.device_names
    K = max(0, min(P, len(names)) - 1)
    high = np.array([float(P)] * K + [float(len(names))] * (K + 1))

    def score(x: np.ndarray) -> tuple[float, np.ndarray | None]:
        cuts = [int(c) for c in x[:K]]
        devs = [int(d) for d in x[K:]]
        cfg = repair(instance, cuts, devs)
        if cfg is None:
            return math.inf, None
        return fit(cfg), _encode(cfg, K, P, names)

    seed_pos = [_encode(c, K, P, names) for c in seeds]
    _swarm(rng, 2 * K + 1, high, opts.particles, opts.iterations, score, seed_pos)


def s4(instance: Instance, fit: _Fitness, rng: np.random.Generator, opts: PSOOptions) -> None:
    """Run the S4 swarm over device orders with the exact fixed-order DP inside."""
    names = instance.device_names
    D = len(names)
    memo: dict[tuple[str, ...], float] = {}

    def score(x: np.ndarray) -> tuple[float, np.ndarray | None]:
        order = tuple(names[i] for i in np.argsort(x, kind="stable"))
        v = memo.get(order)
        if v is None:
            res = order_dp(instance, order, fit.objective)
            v = math.inf if res is None else fit(res[1])
            memo[order] = v
        return v, None

    _swarm(rng, D, np.ones(D), opts.particles, opts.iterations, score)


# ----- local search polish ---------------------------------------------------------------------


def _neighbours(instance: Instance, cfg: Config) -> list[Config]:
    """Plans one move away: shift a cut, replace/swap devices, merge two stages, split one."""
    names = instance.device_names
    out: list[Config] = []
    st = list(cfg)
    used = {s.devices[0] for s in st}
    free = [d for d in names if d not in used]
    for k in range(len(st) - 1):  # shift the cut between k and k+1
        a, b = st[k], st[k + 1]
        for delta in (-1, 1):
            cut = a.last + delta
            if a.first <= cut < b.last:
                out.append(
                    (
                        *st[:k],
                        Stage(a.first, cut, a.devices),
                        Stage(cut + 1, b.last, b.devices),
                        *st[k + 2 :],
                    )
                )
    for k, s in enumerate(st):
        for d in free:  # replace a stage's device by a free one
            out.append((*st[:k], Stage(s.first, s.last, (d,)), *st[k + 1 :]))
        for k2 in range(k + 1, len(st)):  # swap two stages' devices
            s2 = st[k2]
            new = list(st)
            new[k], new[k2] = (
                Stage(s.first, s.last, s2.devices),
                Stage(s2.first, s2.last, s.devices),
            )
            out.append(tuple(new))
        if k + 1 < len(st):  # merge with the next stage on either device
            nxt = st[k + 1]
            for d in (s.devices, nxt.devices):
                out.append((*st[:k], Stage(s.first, nxt.last, d), *st[k + 2 :]))
        for cut in range(s.first, s.last):  # split, the new half on a free device
            for d in free:
                out.append(
                    (
                        *st[:k],
                        Stage(s.first, cut, s.devices),
                        Stage(cut + 1, s.last, (d,)),
                        *st[k + 1 :],
                    )
                )
                out.append(
                    (
                        *st[:k],
                        Stage(s.first, cut, (d,)),
                        Stage(cut + 1, s.last, s.devices),
                        *st[k + 1 :],
                    )
                )
    return out


def local_search(instance: Instance, fit: _Fitness, cfg: Config, max_rounds: int = 200) -> Config:
    """First-improvement hill climbing from ``cfg`` under the exact objective."""
    best_v = fit(cfg)
    for _ in range(max_rounds):
        for nb in _neighbours(instance, cfg):
            v = fit(nb)
            if v < best_v * (1 - 1e-12):
                cfg, best_v = nb, v
                break
        else:
            return cfg
    return cfg


def plan_pso(
    instance: Instance, objective: Objective = "throughput", options: PSOOptions | None = None
) -> Plan:
    """Particle-swarm planner (S2 PSOMW + S4 placement with exact DP). Heuristic.

    Complexity: ``O(S * I)`` exact evaluations for PSOMW (swarm ``S``, ``I`` iterations) plus
    at most ``min(S * I, D!)`` fixed-order DPs of ``O(P^2 D^2)`` for S4, plus the local search.

    Parameters
    ----------
    instance : the planning instance.
    objective : ``"latency"``, ``"throughput"`` (minimise the period) or ``"energy"``.
    options : :class:`PSOOptions` (seeded: same seed, same plan).

    Returns
    -------
    Plan with one device per stage; ``details`` records the variant, the number of distinct
    plans evaluated and which search found the winner.
    """
    started = time.perf_counter()
    objective = check_objective(objective)
    opts = options or PSOOptions()
    if opts.particles < 1 or opts.iterations < 0:
        raise InputError(
            f"PSOOptions: particles={opts.particles} must be >= 1 and iterations={opts.iterations} >= 0"
        )
    if opts.variant not in ("psomw", "s4", "hybrid"):
        raise InputError(f"PSOOptions.variant={opts.variant!r}; choose psomw, s4 or hybrid")
    memory_bound_check(instance)
    rng = np.random.default_rng(opts.seed)
    fit = _Fitness(instance, objective)
    found: dict[str, float] = {}
    if opts.variant in ("s4", "hybrid"):
        s4(instance, fit, rng, opts)
        found["s4"] = fit.best[0]
    if opts.variant in ("psomw", "hybrid"):
        seeds = [fit.best[1]] if fit.best[1] is not None else []
        psomw_chain(instance, fit, rng, opts, seeds)
        found["psomw"] = fit.best[0]
    if fit.best[1] is None:
        raise InfeasibleError(infeasible_message(instance, "pso"))
    best = fit.best[1]
    if opts.polish:
        best = local_search(instance, fit, best)
        found["polish"] = fit(best)
    details = {"variant": opts.variant, "evaluated": len(fit.cache), "best_after": found}
    return finish(
        instance, "pso", objective, best, started=started, seed=opts.seed, details=details
    )
