"""The chain planning problem as dense numpy arrays: the state space both exact DPs search.

Split from :mod:`.dp` so the latency/energy search (:mod:`._dp_sum`) and the throughput search
(:mod:`._dp_period`) share one view of the instance without importing the planner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...core.instance import Instance
from ...core.plans import Stage
from .._shared import TransferTable, best_energy_freq

INF = math.inf


def strides(counts: list[int]) -> tuple[list[int], int]:
    """Mixed-radix place values of used-count vectors (digit ``e`` in ``0..counts[e]``) and how
    many vectors there are, ``prod(counts + 1)``; with every count 1 the numbers are the
    bit masks of device subsets (see :mod:`._dp_period`)."""
    out, size = [], 1
    for c in counts:
        out.append(size)
        size *= c + 1
    return out, size


def stage_tables(
    instance: Instance, objective: str, devices: Sequence[str], freqs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(time, cost)`` of every stage ``i..j`` (0-based, inclusive) on each of ``devices`` at
    its level in ``freqs``: compute seconds, and the objective's cost (seconds, or joules for
    energy); ``inf`` where the stage does not fit in memory or ``j < i``."""
    P = instance.num_pieces
    mem_pref = np.zeros(P + 1)
    mem_pref[1:] = np.cumsum([pc.mem_bytes for pc in instance.pieces])
    mem = mem_pref[None, 1:] - mem_pref[:-1, None]  # mem[i, j] of pieces i..j
    upper = np.triu(np.ones((P, P), dtype=bool))
    time = np.full((len(devices), P, P), INF)
    cost = np.full((len(devices), P, P), INF)
    for e, d in enumerate(devices):
        acc = [0.0]
        for pc in instance.pieces:  # same accumulation order as Instance.compute_s
            acc.append(acc[-1] + pc.time_s[d])
        pref = np.array(acc)
        t = (pref[None, 1:] - pref[:-1, None]) / freqs[e]
        ok = upper & (mem <= instance.device_by_name[d].mem_bytes)
        time[e][ok] = t[ok]
        if objective == "energy":
            cost[e][ok] = t[ok] * instance.device_by_name[d].active_power_w(freqs[e])
        else:
            cost[e][ok] = t[ok]
    return time, cost


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
        self.time, self.sc = stage_tables(instance, objective, devices, self.freqs)

    def local(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(middle ``[k, d, e]``, start ``[e]`` from the source, end ``[d]`` to the source)."""
        ix = self.inst_idx
        return arr[:, ix][:, :, ix], arr[0, self.src, ix], arr[self.P, ix, self.src]

    @property
    def counts(self) -> list[int]:
        """Members per unit: every unit of this model is one device (see :mod:`._dp_period`)."""
        return [1] * self.n

    def hop_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-transfer period items (busiest hop); the middle diagonal is ``inf`` because a
        device never feeds itself (consecutive stages on one device would be one stage)."""
        mid, start, end = self.local(self.tt.hop_s)
        mid = mid.copy()
        idx = np.arange(self.n)
        mid[:, idx, idx] = INF
        return mid, start, end

    def latency_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-transfer one-request seconds (the latency terms)."""
        return self.local(self.tt.total_s)

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
