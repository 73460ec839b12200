"""Refinement: measure the plan the planner picked, re-price its stages, and plan again.

Why: calibration probes fixed piece ranges (a quarter of the model per device on the testbed),
and a range's factor spreads evenly over its pieces. A plan may cut inside a range, and the
profile's split of a range's time between its pieces can be far off: MobileNetV2's pieces 0-5
took 23.5 ms as a stage on the testbed's d1, priced 13.2 ms, while the whole first quarter
(0-15) was priced right (30.3 vs 32.0 ms measured) — its first layers write 1-5 MB activations,
whose cost a node-by-node profile charges partly to the pieces after them. The planner then
picked exactly that cheap-looking cut and the run delivered 58 % of its prediction.

So after calibration the planner's own choice is run for real (a short probe, every device as
busy as in the job), every stage's measured compute time becomes a constraint, and each
device's per-piece factors are refitted to match all of that device's measured ranges at once:
the probe ranges it was calibrated on keep their price, the plan's stages get theirs
(:func:`refit_pieces`, least squares over the segments the ranges' ends cut the pieces into,
pulled towards no change where the constraints leave freedom). Then the planner runs again on
the refitted prices, and this repeats until it picks a plan whose stages were all measured, or
the rounds run out (:func:`refine`). A refinement ends on a plan that was run unless the
planner's last choice is predicted clearly better than every plan that was (:func:`final_pick`):
planners move between near-equal plans, and the point is not to end on an unchecked cut. The
planner is passed in: the runtime does not plan.

The fit is pure and tested on its own; :func:`refine` is the part that starts processes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..cluster.types import Cluster, piece_factors, piece_scales_of
from ..core.evaluate import evaluate
from ..core.instance import Instance
from ..core.plans import Plan
from ..errors import InputError

# Factors a refit may give a segment, relative to its current price: wide enough for the
# 1.8x seen on MobileNetV2's first pieces, narrow enough that one bad sample cannot zero a range.
MIN_FACTOR, MAX_FACTOR = 0.2, 5.0
# Weight of a calibrated range's price against a measured stage: where they cannot both hold
# (a device run alone is faster than beside busy neighbours: tiny_cnn's whole model on one device
# took half its co-run calibrated time) the stage the plan really runs wins, within ~3 %; where
# they can (a stage cut inside a range), both hold exactly.
ANCHOR_WEIGHT = 0.25
# Weight of "no change" on each segment against one measured range (times the largest share of
# a range's time the segment carries): small, so measured ranges are matched, but present, so
# what the ranges leave free (a split no range separates) stays where it was.
RIDGE = 0.05
# A plan no round has run replaces the best one that was only if predicted this much better: the
# rounds' measurements carry 2-7 % of run-to-run noise on the testbed, and planners' choices on
# it move between plans within a few per cent of each other.
MARGIN = 0.05
# Refinement rounds by default: the first measures the calibrated choice; the second, the plan
# chosen once that is priced right (on the testbed the planner then keeps its choice).
DEFAULT_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class StageTime:
    """One device's measured median compute time for pieces ``first..last`` in a probe, next
    to what the prices it was planned with said."""

    device: str
    first: int
    last: int
    measured_s: float
    priced_s: float


@dataclass(frozen=True, slots=True)
class Round:
    """One refinement round: the plan picked, its prediction, and what its run measured."""

    plan: str
    predicted_rps: float
    measured_rps: float
    stages: tuple[StageTime, ...]


@dataclass(frozen=True, slots=True)
class Refinement:
    """Every round, and the plan it ends on (``settled``: that plan was run in a round; see
    :func:`final_pick`)."""

    model: str
    requests: int
    rounds: tuple[Round, ...]
    final_plan: str
    settled: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def segments(ranges: Sequence[tuple[int, int]], pieces: int) -> list[tuple[int, int]]:
    """The pieces cut at every end of ``ranges``: the coarsest split in which each range is a
    union of whole segments."""
    cuts = {0, pieces}
    for a, b in ranges:
        cuts.update((max(0, a), min(pieces, b + 1)))
    bounds = sorted(c for c in cuts if 0 <= c <= pieces)
    return [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]


def refit_pieces(
    priced: Sequence[float],
    measured: Sequence[tuple[int, int, float]],
    anchors: Sequence[tuple[int, int]] = (),
    ridge: float = RIDGE,
    anchor_weight: float = ANCHOR_WEIGHT,
) -> list[float]:
    """Multipliers of one device's current per-piece prices so every measured range costs its
    measured time and every anchor range keeps its current price, as nearly as least squares
    (relative errors; an anchor weighs ``anchor_weight`` of a measurement) can; piecewise
    constant between the ranges' ends, within [:data:`MIN_FACTOR`, :data:`MAX_FACTOR`], and
    pulled towards 1 by ``ridge``.

    ``priced``: the device's current time per piece; ``measured``: ``(first, last, seconds)``;
    ``anchors``: ranges whose current price is already right (the calibration's probes).
    """
    from scipy.optimize import lsq_linear

    n = len(priced)
    rows = [(a, b, t) for a, b, t in measured if 0 <= a <= b < n and t > 0]
    if not rows:
        return [1.0] * n
    seen = {(a, b) for a, b, _ in rows}  # a range measured now needs no anchor
    weights = [1.0] * len(rows)
    for a, b in anchors:
        t = sum(priced[a : b + 1]) if 0 <= a <= b < n else 0.0
        if (a, b) not in seen and t > 0:
            rows.append((a, b, t))
            weights.append(anchor_weight)
    segs = segments([(a, b) for a, b, _ in rows], n)
    cost = np.array([sum(priced[s : e + 1]) for s, e in segs])
    a_rows, y = [], []
    for (a, b, t), w in zip(rows, weights, strict=True):
        inside = np.array([1.0 if a <= s and e <= b else 0.0 for s, e in segs])
        a_rows.append(w * inside * cost / t)
        y.append(w)
    # each segment's pull towards 1 is relative to how much of a range it is, so a small
    # segment inside a measured range is still set by the measurement, not by the pull
    weight = np.max(np.array(a_rows), axis=0)
    for g in range(len(segs)):
        e = np.zeros(len(segs))
        e[g] = ridge * weight[g]
        a_rows.append(e)
        y.append(ridge * weight[g])
    sol = lsq_linear(np.array(a_rows), np.array(y), bounds=(MIN_FACTOR, MAX_FACTOR))
    out = [1.0] * n
    for (s, e), x in zip(segs, sol.x, strict=True):
        for i in range(s, e + 1):
            out[i] = float(x)
    return out


def stage_times(plan: Plan, trace: Sequence[Any], instance: Instance) -> tuple[StageTime, ...]:
    """Each (device, stage) of ``plan``: the median measured compute time in ``trace`` and the
    instance's price for it."""
    out = []
    for st in plan.stages:
        for d in st.devices:
            ts = [e.end_s - e.start_s for e in trace if e.kind == "compute" and e.resource == d]
            if ts:
                out.append(
                    StageTime(
                        d, st.first, st.last, statistics.median(ts),
                        instance.compute_s(st.first, st.last, d),
                    )
                )  # fmt: skip
    return tuple(out)


def reprice(
    cluster: Cluster,
    model: str,
    pieces: int,
    priced: Mapping[str, Sequence[float]],
    measured: Sequence[StageTime],
    anchors: Mapping[str, Sequence[tuple[int, int]]],
    anchor_weight: float = ANCHOR_WEIGHT,
    keep: float = 1.0,
) -> Cluster:
    """``cluster`` with each measured device's ``speed.pieces`` for ``model`` multiplied by
    :func:`refit_pieces` of its measurements (``priced``: current per-piece times per device),
    each multiplier to the power ``keep`` (1: all of it; below 1: shrunk towards no change, as
    a calibration's per-range factors are by the probes' noise)."""
    devices = []
    for dev in cluster.devices:
        mine = [(m.first, m.last, m.measured_s) for m in measured if m.device == dev.name]
        if not mine or dev.name not in priced:
            devices.append(dev)
            continue
        x = refit_pieces(
            priced[dev.name], mine, anchors.get(dev.name, ()), anchor_weight=anchor_weight
        )
        old = piece_factors(dev.piece_scales, model, pieces) or [1.0] * pieces
        factors = [f * g**keep for f, g in zip(old, x, strict=True)]
        other = [p for p in dev.piece_scales if not (p.model == model and p.pieces == pieces)]
        devices.append(replace(dev, piece_scales=(*other, *piece_scales_of(model, factors))))
    return replace(cluster, devices=tuple(devices))


def probe_ranges(cal: Any) -> dict[str, list[tuple[int, int]]]:
    """Per device, the piece ranges a :class:`~.calibrate.Calibration` probed, even and offset
    (the anchors whose calibrated price a refinement keeps)."""
    out = {d.device: [(r.first, r.last) for r in d.ranges] for d in cal.devices}
    for o in getattr(cal, "offsets", ()):
        out.setdefault(o.device, []).append((o.first, o.last))
    return out


def _measured_already(plan: Plan, measured: Sequence[StageTime]) -> bool:
    seen = {(m.device, m.first, m.last) for m in measured}
    return all((d, st.first, st.last) in seen for st in plan.stages for d in st.devices)


def final_pick(
    instance: Instance, chosen: Plan, ran: Sequence[Plan], margin: float = MARGIN
) -> tuple[Plan, bool]:
    """The plan a refinement ends on, and whether it has been run: ``chosen`` if it was, else
    the best plan that was (re-priced on ``instance``, whose prices now hold what its stages
    measured) unless ``chosen`` is predicted better than it by more than ``margin`` — a plan
    no round has run is trusted over a measured one only when it is clearly better."""
    if any(p.stages == chosen.stages for p in ran) or not ran:
        return chosen, bool(ran)
    priced = [replace(p, predicted=evaluate(instance, p.stages)) for p in ran]
    best = min(priced, key=lambda p: p.predicted.value(chosen.objective))
    if chosen.predicted.value(chosen.objective) < (1 - margin) * best.predicted.value(
        chosen.objective
    ):
        return chosen, False
    return best, True


def refine(
    model: str,
    cluster: Cluster,
    choose: Callable[[Instance], Plan],
    *,
    anchors: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    requests: int = 32,
    source: str | None = None,
    bind: str = "127.0.0.1:0",
    spawn: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[Refinement, Cluster, Plan]:
    """Up to ``rounds`` times: price ``model`` on ``cluster``, let ``choose`` pick a plan, stop
    if its stages were all measured, else run it for ``requests`` and refit (module docstring).
    Returns the record, the refined cluster and the plan to use (:func:`final_pick`: the
    choice if it was run, else the best run plan unless the choice is clearly better);
    ``anchors``: per device, the calibration's probe ranges (their prices are kept)."""
    from ..profile.costmodel import build_instance
    from ..schedule import schedule
    from . import run

    if rounds < 0:
        raise InputError(f"refinement rounds must be >= 0 (got {rounds})")
    measured: list[StageTime] = []
    done: list[Round] = []
    ran: list[Plan] = []
    for _ in range(rounds + 1):
        instance = build_instance(model, cluster, source=source)
        plan = choose(instance)
        if len(done) == rounds or _measured_already(plan, measured):
            final, was_run = final_pick(instance, plan, ran)
            return Refinement(model, requests, tuple(done), str(final), was_run), cluster, final
        if log:
            log(f"refine: run {' | '.join(str(s) for s in plan.stages)} ({requests} requests)")
        res = run(model, cluster, plan, requests=requests, instance=instance,
                  schedule=schedule(plan, instance, requests), bind=bind, spawn=spawn)  # fmt: skip
        times = stage_times(plan, res.trace, instance)
        ran.append(plan)
        done.append(Round(str(plan), plan.predicted.throughput_rps, res.throughput_rps, times))
        again = {(t.device, t.first, t.last) for t in times}  # a range run again: the new time
        measured = [m for m in measured if (m.device, m.first, m.last) not in again] + list(times)
        n = len(instance.pieces)
        priced = {d: [instance.compute_s(i, i, d) for i in range(n)] for d in cluster.device_names}
        # prices of earlier rounds' ranges under the current cluster are what they measured
        cluster = reprice(cluster, model, n, priced, measured, anchors or {})
    raise AssertionError("unreachable")  # the loop returns on its last pass


__all__ = [
    "DEFAULT_ROUNDS",
    "Refinement",
    "Round",
    "StageTime",
    "final_pick",
    "probe_ranges",
    "refine",
    "refit_pieces",
    "reprice",
    "segments",
    "stage_times",
]
