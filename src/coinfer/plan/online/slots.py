"""A slotted simulator for online split control, its random inputs and two baselines.

Time runs in slots of ``system.slot_s`` seconds. At the start of slot ``t`` a policy sees the
backlog ``Q(t)`` (tasks that arrived in earlier slots and are not served yet), the latency
virtual queue ``Z(t)`` and the slot's uplink bandwidth, and returns a
:class:`~coinfer.plan.online.cutedge.Decision`; ``A(t)`` tasks arrive during the slot and wait
for the next one. The queues follow :func:`~coinfer.plan.online.cutedge.next_queues` whatever
the policy, so ``Z`` measures every policy's latency-constraint debt the same way.

Inputs (pure functions of a seed):

- :func:`poisson_arrivals`: ``A(t) ~ Poisson(rate * slot_s)``, independent per slot;
- :func:`trace_bandwidth`: a piecewise-constant trace sampled at each slot's midpoint, repeated
  when the run is longer than the trace (a walk trace of one minute drives a long run);
- :func:`markov_bandwidth`: a birth–death Markov chain over bandwidth levels (stay with
  probability ``stay``, else move to a neighbouring level).

Baselines (same :class:`Decision` records, ``objective`` 0):

- :class:`FixedSplit`: one split for the whole run, at f_max and the full bandwidth — the split
  with the lowest energy per task among those that meet ``L_max`` and keep up with the mean
  arrival rate at the mean bandwidth (else the lowest-latency split): the best static choice a
  Neurosurgeon-style planner would make offline;
- :class:`Greedy`: per slot, the option with the lowest energy per task that serves the whole
  backlog within the slot and meets ``L_max`` (relaxing ``L_max`` first, then "whole backlog" —
  serving as much as possible — when nothing qualifies). It keeps no queue state.

Latency per task is measured, not estimated: tasks leave first in, first out; a task that
arrived in slot ``a`` and is served in slot ``t`` waits ``(t - a) * slot_s`` (both taken at the
slot's middle) and then takes the slot's service latency.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ...errors import InputError
from .cutedge import Decision, SplitSystem, decision_for, next_queues


class Policy(Protocol):
    name: str

    def decide(
        self, slot: int, backlog: float, virtual: float, bandwidth_Bps: float
    ) -> Decision: ...


def poisson_arrivals(rate_per_s: float, slot_s: float, slots: int, seed: int) -> np.ndarray:
    """Tasks arriving in each of ``slots`` slots, Poisson with mean ``rate_per_s * slot_s``."""
    if not (rate_per_s >= 0) or slots < 0:
        raise InputError(f"arrival rate must be >= 0 and slots >= 0 (got {rate_per_s}, {slots})")
    return np.random.default_rng(seed).poisson(rate_per_s * slot_s, size=slots).astype(float)


def trace_bandwidth(
    times_s: Sequence[float], bandwidth_Bps: Sequence[float], slot_s: float, slots: int
) -> np.ndarray:
    """Bandwidth of each slot from a piecewise-constant trace (value ``i`` holds from
    ``times_s[i]``), sampled at the slot's midpoint, the trace repeating every
    ``times_s[-1] - times_s[0] + (last step)`` seconds (its last sample lasts as long as the
    median step)."""
    t = np.asarray(times_s, dtype=float)
    b = np.asarray(bandwidth_Bps, dtype=float)
    if t.size == 0 or t.size != b.size or np.any(b <= 0):
        raise InputError("a trace needs matching, non-empty times and positive bandwidths")
    last_step = float(np.median(np.diff(t))) if t.size > 1 else slot_s
    span = t[-1] - t[0] + last_step
    mids = t[0] + np.mod((np.arange(slots) + 0.5) * slot_s, span)
    idx = np.searchsorted(t, mids, side="right") - 1
    return b[np.clip(idx, 0, t.size - 1)]


def markov_bandwidth(
    levels_Bps: Sequence[float], stay: float, slots: int, seed: int, start: int | None = None
) -> np.ndarray:
    """A birth–death Markov chain over ``levels_Bps``: each slot keep the level with probability
    ``stay``, else step to a neighbour (up or down with equal chance; at an end, inwards)."""
    lv = np.asarray(levels_Bps, dtype=float)
    if lv.size == 0 or np.any(lv <= 0) or not (0 <= stay <= 1):
        raise InputError("markov_bandwidth needs positive levels and 0 <= stay <= 1")
    rng = np.random.default_rng(seed)
    i = lv.size // 2 if start is None else int(start)
    out = np.empty(slots)
    moves = rng.random(slots)
    ups = rng.random(slots) < 0.5
    for n in range(slots):
        out[n] = lv[i]
        if lv.size > 1 and moves[n] >= stay:
            step = 1 if ups[n] else -1
            if not 0 <= i + step < lv.size:
                step = -step
            i += step
    return out


@dataclass(frozen=True)
class FixedSplit:
    """One split for the whole run at f_max and full rate (see the module docstring)."""

    system: SplitSystem
    split: int
    name: str = "fixed"

    @classmethod
    def best_static(
        cls,
        system: SplitSystem,
        mean_bandwidth_Bps: float,
        arrivals_per_slot: float,
        latency_max_s: float,
    ) -> FixedSplit:
        opts = system.options(mean_bandwidth_Bps)
        top, full = len(system.levels) - 1, len(system.rate_fractions) - 1
        lat = opts.latency_s[:, top, full].copy()
        lat[-1] = opts.latency_s[-1, top, 0]
        cap = opts.capacity_tasks[:, top, full].copy()
        cap[-1] = opts.capacity_tasks[-1, top, 0]
        en = opts.energy_j[:, top, full].copy()
        en[-1] = opts.energy_j[-1, top, 0]
        ok = (lat <= latency_max_s) & (cap >= arrivals_per_slot)
        k = int(np.argmin(np.where(ok, en, np.inf))) if ok.any() else int(np.argmin(lat))
        return cls(system, k)

    def decide(self, slot: int, backlog: float, virtual: float, bandwidth_Bps: float) -> Decision:
        opts = self.system.options(bandwidth_Bps)
        local = self.split == self.system.num_splits - 1
        index = (self.split, len(self.system.levels) - 1,
                 0 if local else len(self.system.rate_fractions) - 1)  # fmt: skip
        served = min(backlog, float(opts.capacity_tasks[index]))
        return decision_for(self.name, self.system, opts, index,
                            slot=slot, backlog=backlog, virtual=virtual, served=served)  # fmt: skip


@dataclass(frozen=True)
class Greedy:
    """Per slot: cheapest option per task that clears the backlog within ``L_max`` (module
    docstring)."""

    system: SplitSystem
    latency_max_s: float
    name: str = "greedy"

    def decide(self, slot: int, backlog: float, virtual: float, bandwidth_Bps: float) -> Decision:
        opts = self.system.options(bandwidth_Bps)
        if backlog <= 0.0:
            return decision_for(self.name, self.system, opts, None,
                                slot=slot, backlog=backlog, virtual=virtual, served=0.0)  # fmt: skip
        clears = opts.valid & (opts.capacity_tasks >= backlog)
        fast = opts.latency_s <= self.latency_max_s
        for ok in (clears & fast, clears):
            if ok.any():
                flat = int(np.argmin(np.where(ok, opts.energy_j, np.inf)))
                break
        else:  # nothing clears the backlog: serve as much as possible, then the cheapest
            cap = np.where(opts.valid, opts.capacity_tasks, -np.inf)
            most = cap >= cap.max() * (1 - 1e-12)
            flat = int(np.argmin(np.where(most, opts.energy_j, np.inf)))
        index = tuple(int(i) for i in np.unravel_index(flat, opts.energy_j.shape))
        served = min(backlog, float(opts.capacity_tasks[index]))
        return decision_for(self.name, self.system, opts, index,  # type: ignore[arg-type]
                            slot=slot, backlog=backlog, virtual=virtual, served=served)  # fmt: skip


@dataclass
class SlotRun:
    """Per-slot series of one run (numpy arrays of length ``slots``) and per-task latencies."""

    policy: str
    slot_s: float
    latency_max_s: float
    arrivals: np.ndarray
    bandwidth_Bps: np.ndarray
    served: np.ndarray
    energy_j: np.ndarray
    service_latency_s: np.ndarray
    backlog: np.ndarray  # Q(t) at the start of each slot
    virtual: np.ndarray  # Z(t) at the start of each slot
    split: np.ndarray  # -1 when idle
    freq: np.ndarray  # nan when idle
    rate_Bps: np.ndarray  # nan when idle
    task_latency_s: np.ndarray  # one entry per served fraction of a cohort (see weights)
    task_weight: np.ndarray
    final_backlog: float
    decisions: list[Decision] = field(default_factory=list, repr=False)

    @property
    def slots(self) -> int:
        return int(self.arrivals.size)

    def summary(self, warmup: int = 0) -> dict[str, Any]:
        """Time averages after ``warmup`` slots: power (J/s), energy per task, throughput,
        mean/p95 end-to-end latency, mean service latency and queue statistics."""
        sl = slice(warmup, None)
        horizon = (self.slots - warmup) * self.slot_s
        served = float(self.served[sl].sum())
        energy = float(self.energy_j[sl].sum())
        svc = (
            float((self.served[sl] * self.service_latency_s[sl]).sum() / served)
            if served > 0 else math.nan
        )  # fmt: skip
        lat, w = self.task_latency_s, self.task_weight
        return {
            "policy": self.policy,
            "power_w": energy / horizon,
            "energy_per_task_j": energy / served if served > 0 else math.nan,
            "throughput_rps": served / horizon,
            "arrival_rps": float(self.arrivals[sl].sum()) / horizon,
            "latency_mean_s": float((lat * w).sum() / w.sum()) if w.sum() > 0 else math.nan,
            "latency_p95_s": weighted_quantile(lat, w, 0.95),
            "service_latency_s": svc,
            "backlog_mean": float(self.backlog[sl].mean()),
            "backlog_max": float(self.backlog[sl].max()),
            "virtual_mean": float(self.virtual[sl].mean()),
            "virtual_max": float(self.virtual[sl].max()),
            "final_backlog": self.final_backlog,
            "idle_frac": float((self.split[sl] < 0).mean()),
        }


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``values`` where each counts ``weights`` times (nan if empty)."""
    if values.size == 0 or weights.sum() <= 0:
        return math.nan
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, q * cum[-1]))
    return float(values[order][min(i, values.size - 1)])


def run_slots(
    policy: Policy,
    bandwidth_Bps: Sequence[float] | np.ndarray,
    arrivals: Sequence[float] | np.ndarray,
    *,
    slot_s: float,
    latency_max_s: float,
    keep_decisions: bool = False,
) -> SlotRun:
    """Run ``policy`` over the given per-slot bandwidths and arrivals (equal lengths)."""
    bw = np.asarray(bandwidth_Bps, dtype=float)
    arr = np.asarray(arrivals, dtype=float)
    if bw.shape != arr.shape or bw.ndim != 1:
        raise InputError(
            f"bandwidth and arrivals need one value per slot ({bw.shape} vs {arr.shape})"
        )
    n = bw.size
    served, energy, svc = np.zeros(n), np.zeros(n), np.zeros(n)
    backlog, virtual = np.zeros(n), np.zeros(n)
    split, freq, rate = np.full(n, -1), np.full(n, np.nan), np.full(n, np.nan)
    cohorts: deque[list[float]] = deque()  # [arrival slot, tasks left], oldest first
    lat: list[float] = []
    wts: list[float] = []
    decisions: list[Decision] = []
    q = z = 0.0
    for t in range(n):
        backlog[t], virtual[t] = q, z
        d = policy.decide(t, q, z, float(bw[t]))
        if d.served > q * (1 + 1e-9) + 1e-12:
            raise InputError(f"{policy.name}: slot {t} serves {d.served} > backlog {q}")
        served[t], energy[t], svc[t] = d.served, d.energy_j, d.latency_s
        if d.split is not None:
            split[t], freq[t], rate[t] = d.split, d.freq, d.rate_Bps
        left = d.served
        while left > 1e-12 and cohorts:
            a, m = cohorts[0]
            take = min(m, left)
            lat.append((t - a) * slot_s + d.latency_s)
            wts.append(take)
            left -= take
            if m - take <= 1e-12:
                cohorts.popleft()
            else:
                cohorts[0][1] = m - take
        q, z = next_queues(q, z, d.served, d.latency_s, float(arr[t]), latency_max_s)
        if arr[t] > 0:
            cohorts.append([float(t), float(arr[t])])
        if keep_decisions:
            decisions.append(d)
    return SlotRun(
        policy.name, slot_s, latency_max_s, arr, bw, served, energy, svc, backlog, virtual,
        split, freq, rate, np.asarray(lat), np.asarray(wts), q, decisions,
    )  # fmt: skip


__all__ = [
    "FixedSplit",
    "Greedy",
    "Policy",
    "SlotRun",
    "markov_bandwidth",
    "poisson_arrivals",
    "run_slots",
    "trace_bandwidth",
    "weighted_quantile",
]
