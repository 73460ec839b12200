"""CIC (S5): compress the min-cut offline so that online split decisions are a tiny argmin.

Under the DADS model of :mod:`coinfer.plan.graph.mincut` with a symmetric channel (latency ``L``,
bandwidth ``B``; ``lam = 1 / B`` seconds per byte), every device/server split ``S`` costs

    cost_S(lam) = (compute_S + n_S * L) + bytes_S * lam

— a straight line in ``lam`` whose intercept and slope do not depend on the bandwidth. The
min-cut value ``f(lam) = min_S cost_S(lam)`` is therefore the lower envelope of these lines: a
concave, piecewise-linear function with a handful of breakpoints. Only the splits that form
the envelope can ever be optimal, for *any* bandwidth. :func:`compress` finds exactly those
splits offline by parametric min-cut (Eisner–Severance style bisection on the envelope):
solve the min-cut at ``lam = 0`` and note the all-device split (optimal as ``lam -> inf``,
it moves no bytes); where two envelope lines cross, solve one more min-cut; a new line below
both splits the interval in two, otherwise the interval is final. The number of min-cuts
is ``2 * (candidates) - 1`` at most.

The result, a :class:`SplittingModel`, is the "compressed splitting model": a few candidates
(device node sets plus three numbers each) that a weak device evaluates in microseconds with
:meth:`SplittingModel.decide`, and whose answer has the *same* cut value as a fresh min-cut
at that bandwidth (the tests check this on random DAGs and bandwidths). The envelope is exact
for the latency ``L`` given to :func:`compress`; ``decide`` also accepts another latency and
then returns the best candidate, which is exact only if the envelope is unchanged (it prices
every candidate exactly, so the value reported is always that candidate's true cost).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Hashable
from dataclasses import dataclass

import networkx as nx

from ...errors import InputError
from .mincut import CutResult, _check_dag, cut_cost, dads_cut

# Relative tolerance when deciding that a new min-cut lies strictly below the envelope: float
# max-flow values carry ~1e-12 relative noise; 1e-9 keeps spurious duplicate lines out.
ENVELOPE_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class Candidate:
    """One split on the envelope: the device node set and its cost coefficients."""

    device_nodes: frozenset[Hashable]
    compute_s: float
    transfers: int
    bytes_moved: float

    def cost_s(self, bandwidth_Bps: float, latency_s: float) -> float:
        """Latency of this split on a channel of ``bandwidth_Bps`` and ``latency_s``."""
        return self.compute_s + self.transfers * latency_s + self.bytes_moved / bandwidth_Bps


@dataclass(frozen=True, slots=True)
class SplittingModel:
    """The compressed splitting model: candidates sorted by decreasing bytes moved."""

    device: str
    server: str
    latency_s: float
    candidates: tuple[Candidate, ...]
    breakpoints_Bps: tuple[float, ...]
    nodes: int
    mincut_calls: int
    compress_time_s: float

    def decide(
        self, bandwidth_Bps: float, latency_s: float | None = None
    ) -> tuple[Candidate, float]:
        """Best candidate and its latency at ``bandwidth_Bps`` (``O(candidates)``)."""
        if not bandwidth_Bps > 0:
            raise InputError(f"CIC decide: bandwidth {bandwidth_Bps!r} must be > 0")
        lat = self.latency_s if latency_s is None else latency_s
        best, best_v = self.candidates[0], math.inf
        for c in self.candidates:
            v = c.compute_s + c.transfers * lat + c.bytes_moved / bandwidth_Bps
            if v < best_v:
                best, best_v = c, v
        return best, best_v

    def __str__(self) -> str:
        return (
            f"SplittingModel({self.device}->{self.server}: {self.nodes} nodes -> "
            f"{len(self.candidates)} candidates, {self.mincut_calls} min-cuts, "
            f"{self.compress_time_s * 1e3:.1f} ms offline)"
        )


def _line(c: CutResult, latency_s: float) -> tuple[float, float]:
    return c.compute_s + c.transfers * latency_s, c.bytes_moved


def compress(
    dag: nx.DiGraph, device: str, server: str, latency_s: float, *, input_bytes: float | None = None
) -> SplittingModel:
    """Offline: the envelope splits of ``dag`` for every bandwidth (see module docstring).

    Parameters
    ----------
    dag : nodes with ``time_s`` (for ``device`` and ``server``) and ``out_bytes``.
    device, server : the two locations.
    latency_s : the channel's per-transfer latency ``L`` (both directions).
    input_bytes : the model input size (default ``dag.graph["input_bytes"]`` or 0).
    """
    started = time.perf_counter()
    if not latency_s >= 0:
        raise InputError(f"CIC compress: latency {latency_s!r} must be >= 0")
    _check_dag(dag, (device, server))
    ib = float(dag.graph.get("input_bytes", 0) if input_bytes is None else input_bytes)
    calls = 0

    def solve(lam: float) -> CutResult:
        nonlocal calls
        calls += 1

        def fn(x: float) -> float:
            return latency_s + x * lam

        return dads_cut(dag, device, server, fn, fn, ib)

    # lam = 0 (infinite bandwidth) and the all-device split (no bytes: optimal as lam -> inf).
    left = solve(0.0)

    def zero(x: float) -> float:
        return 0.0

    right = cut_cost(dag, frozenset(dag.nodes), device, server, zero, zero, ib)
    lines: dict[frozenset[Hashable], CutResult] = {
        left.device_nodes: left,
        right.device_nodes: right,
    }
    stack = [(left, right)]
    while stack:
        lo, hi = stack.pop()
        (a1, w1), (a2, w2) = _line(lo, latency_s), _line(hi, latency_s)
        if w1 <= w2:
            continue
        lam = (a2 - a1) / (w1 - w2)
        if lam <= 0.0:
            continue
        mid = solve(lam)
        a3, w3 = _line(mid, latency_s)
        env = min(a1 + w1 * lam, a2 + w2 * lam)
        if a3 + w3 * lam >= env - ENVELOPE_RTOL * abs(env):
            continue
        lines[mid.device_nodes] = mid
        stack.append((lo, mid))
        stack.append((mid, hi))
    # Keep only lines that are on the envelope somewhere (a tie at lam = 0 can leave a dominated one).
    cands = sorted(
        (
            Candidate(c.device_nodes, c.compute_s, c.transfers, c.bytes_moved)
            for c in lines.values()
        ),
        key=lambda c: (-c.bytes_moved, c.compute_s),
    )
    kept: list[Candidate] = []
    for c in cands:
        if kept and c.bytes_moved == kept[-1].bytes_moved:
            continue  # same slope, sorted by intercept: the first one dominates
        kept.append(c)
    breaks = []
    for c1, c2 in itertools.pairwise(kept):
        a1 = c1.compute_s + c1.transfers * latency_s
        a2 = c2.compute_s + c2.transfers * latency_s
        lam = (a2 - a1) / (c1.bytes_moved - c2.bytes_moved)
        breaks.append(math.inf if lam <= 0 else 1.0 / lam)
    return SplittingModel(
        device=device,
        server=server,
        latency_s=latency_s,
        candidates=tuple(kept),
        breakpoints_Bps=tuple(breaks),
        nodes=dag.number_of_nodes(),
        mincut_calls=calls,
        compress_time_s=time.perf_counter() - started,
    )
