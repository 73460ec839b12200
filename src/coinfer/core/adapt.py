"""When to re-plan a running pipeline: what the system believes, and the hysteresis that acts on it.

A live session measures the devices and links its current plan uses (:mod:`.online`). Two pure
pieces turn those measurements into re-planning decisions; the runtime's adapter runs them once
a second and hands the stream over when they say so.

**Belief** (:class:`Belief`). The base instance (what the session was started with, e.g. from
calibration) corrected by everything measured so far — including devices and links the current
plan no longer uses, which no telemetry can refresh. Why those measurements expire: a link that
was slow when the plan left it may have recovered, and a plan that never uses it again never
learns so. After ``forget_s`` without a fresh sample an entry reverts to its base value, so the
planner may try the link again; if it is still degraded when next measured, its memory doubles
(up to ``MAX_FORGET_S``), so a persistently bad link is not re-tried every few seconds. An
adapting session also probes the emulated links its plan leaves idle (``Session(probe_s=...)``),
which keeps their entries fresh; forgetting is exploration by optimism for what no probe reaches
(``tc``-shaped links, devices outside the plan).

**Switching rule** (:class:`AdaptPolicy`, :func:`decide`). With ``T_cur`` and ``T_new`` the
predicted periods (seconds per request) of the current plan and of the planner's best plan on
the belief, a switch pays when what the new plan gains over a horizon ``H`` exceeds what the
hand-over costs::

    H * (1/T_new - 1/T_cur)  >  C / T_cur        (requests gained > requests lost switching)

with ``C`` the hand-over cost in seconds of the current plan's throughput (the new epoch's
workers start beside the old ones on the same CPUs, and the old epoch drains what it holds).
``H`` is how long the network is expected to stay as it is now: :func:`persistence_s` takes the
median time between the recent changes the running plan's predicted period went through (a link
on a fluctuating radio changes every few seconds, a step every few tens), capped by the
policy's ``horizon_s``. Why: on a trace that moves every second, a switch for a +40 % gain pays
off only if that gain lasts longer than the hand-over's cost — and it does not; chasing it was
measured to lose throughput against a fixed plan (``benchmarks/results/adapt_run1.md``).
Hysteresis on top, so noise cannot make the stream flap: the gain must exceed ``min_gain``
(relative), win ``confirm`` consecutive checks (unless it is at least ``sure_gain``), and no
switch comes sooner than ``min_dwell_s`` after the previous one.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InputError
from .evaluate import period_s
from .instance import Instance
from .plans import Stage

# Entries not refreshed for this long revert to the base instance (see the module docstring).
DEFAULT_FORGET_S = 10.0
MAX_FORGET_S = 120.0
# A measurement this far from the base value (either way) counts as "still degraded".
DEGRADED_RATIO = 1.5


@dataclass(frozen=True)
class AdaptPolicy:
    """Hysteresis and switching cost of live re-planning (see the module docstring).

    Attributes
    ----------
    check_s : how often the belief is re-planned.
    min_gain : the new plan's predicted throughput must beat the current one's by this fraction.
        25 %: on the 2-core testbed the measured device scales wander by ~8 % from second to
        second, and re-plans predicted at +16 % were measured to lose throughput
        (``benchmarks/results/adapt.md``, first run).
    switch_cost_s : a hand-over's cost in seconds of the current plan's throughput.
    horizon_s : how long a decision is expected to pay off (the gain is counted over it).
    min_dwell_s : no switch sooner than this after the previous one (or the session's start).
    confirm : consecutive checks the better plan must win before the switch, unless its gain
        is at least ``sure_gain`` (noise does not fake a 50 % gain: the belief already needs two
        samples to believe a step, and waiting would only delay the obvious).
    forget_s : how long a measurement of something no longer measured is believed.
    settle : no switch in a check where the set of links and devices believed changed differs
        from the previous check's. Why: one event (a radio fading, a device's links stepping
        down) reaches the belief over a check or two — the plan's own links first, the probed
        idle ones half a second later — and a re-plan made on the first half of the news routes
        over links already known a moment later to be slow (measured on the step trace: the
        first re-route took two slow links, and a second hand-over followed 6 s later).
    """

    check_s: float = 0.5
    min_gain: float = 0.25
    switch_cost_s: float = 1.5
    horizon_s: float = 20.0
    min_dwell_s: float = 4.0
    confirm: int = 2
    sure_gain: float = 0.5
    forget_s: float = DEFAULT_FORGET_S
    settle: bool = True

    def __post_init__(self) -> None:
        if not (self.check_s > 0 and self.min_gain >= 0 and self.switch_cost_s >= 0):
            raise InputError("adapt policy: check_s > 0, min_gain >= 0, switch_cost_s >= 0")
        if not (self.horizon_s > 0 and self.min_dwell_s >= 0 and self.confirm >= 1):
            raise InputError("adapt policy: horizon_s > 0, min_dwell_s >= 0, confirm >= 1")
        if not self.forget_s > 0:
            raise InputError("adapt policy: forget_s must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A change of the running plan's predicted period by more than this between two checks is a
# change of conditions (for :func:`persistence_s`).
CHANGE_RATIO = 0.2
# The shortest horizon a switch is judged over (a hand-over takes ~1.5 s to pay back anyway).
MIN_HORIZON_S = 2.0


def persistence_s(change_times: Sequence[float], now_s: float, cap_s: float) -> float:
    """How long conditions are expected to last: the median gap between the last few changes
    (``change_times``, ascending), or the time since the only one, at least ``MIN_HORIZON_S``
    and at most ``cap_s`` (no changes seen: ``cap_s``)."""
    recent = list(change_times)[-6:]
    if not recent:
        return cap_s
    gaps = [b - a for a, b in itertools.pairwise(recent)]
    gaps.append(now_s - recent[-1])  # the current spell counts, as far as it has lasted
    return max(MIN_HORIZON_S, min(cap_s, statistics.median(gaps)))


@dataclass(frozen=True)
class Decision:
    """One check's outcome: switch or not, and why (``reason`` is for logs and reports)."""

    switch: bool
    reason: str
    gain: float  # predicted relative throughput gain of the candidate plan


def decide(
    policy: AdaptPolicy,
    *,
    now_s: float,
    last_switch_s: float,
    current_period_s: float,
    best_period_s: float,
    streak: int,
    settling: bool = False,
) -> Decision:
    """Apply the switching rule (module docstring) to one check. ``streak`` counts the
    consecutive checks before this one in which the candidate won; ``settling``: what is
    believed changed differs from the previous check's (see ``AdaptPolicy.settle``)."""
    if not best_period_s > 0:
        return Decision(False, "candidate has no finite period", 0.0)
    cur = current_period_s if current_period_s > 0 else float("inf")
    gain = cur / best_period_s - 1.0
    if gain < policy.min_gain:
        return Decision(False, f"gain {gain:+.0%} below {policy.min_gain:.0%}", gain)
    gained = policy.horizon_s * (1.0 / best_period_s - 1.0 / cur)
    lost = policy.switch_cost_s / cur
    if gained <= lost:
        return Decision(
            False, f"gain {gained:.1f} req does not repay the switch ({lost:.1f} req)", gain
        )
    if settling and policy.settle:
        return Decision(False, f"gain {gain:+.0%}, but the belief is still changing", gain)
    if streak + 1 < policy.confirm and gain < policy.sure_gain:
        return Decision(False, f"gain {gain:+.0%} seen {streak + 1}/{policy.confirm} times", gain)
    if now_s - last_switch_s < policy.min_dwell_s:
        return Decision(False, f"last switch {now_s - last_switch_s:.1f} s ago", gain)
    return Decision(True, f"predicted {gain:+.0%} throughput", gain)


@dataclass
class _Entry:
    value: float  # bytes/s for a link; piece-time multiplier (vs the base) for a device
    at_s: float
    forget_s: float


@dataclass
class Belief:
    """The base instance corrected by every measurement still believed (module docstring).

    ``links[(u, v)]`` holds a dedicated link's bandwidth, ``devices[d]`` a device's piece-time
    multiplier relative to ``base``; :meth:`instance` applies those not yet forgotten.
    """

    base: Instance
    forget_s: float = DEFAULT_FORGET_S
    links: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    devices: dict[str, _Entry] = field(default_factory=dict)

    def _put(self, table: dict[Any, _Entry], key: Any, value: float, base: float, t: float) -> None:
        old = table.get(key)
        degraded = value > base * DEGRADED_RATIO or value * DEGRADED_RATIO < base
        forget = self.forget_s
        if old is not None and degraded:
            # measured again after it had been forgotten, and still bad: remember it longer
            expired = t - old.at_s > old.forget_s
            forget = min(MAX_FORGET_S, old.forget_s * 2) if expired else old.forget_s
        table[key] = _Entry(value, t, forget)

    def observe(
        self,
        t_s: float,
        priced_on: Instance,
        link_Bps: Mapping[tuple[str, str], float],
        device_scale: Mapping[str, float],
    ) -> None:
        """Take an epoch's estimate at time ``t_s``: its measured links (bytes/s) and device
        scales (measured / priced on ``priced_on``, the instance that epoch was priced on)."""
        base_links = self.base.link_by_pair
        for key, bw in link_Bps.items():
            lk = base_links.get(key)
            if lk is not None and lk.medium is None and bw > 0:
                self._put(self.links, key, float(bw), lk.bandwidth_Bps, t_s)
        for d, scale in device_scale.items():
            if d not in self.base.device_by_name or not scale > 0:
                continue
            self._put(self.devices, d, scale * _multiplier(priced_on, self.base, d), 1.0, t_s)

    def instance(self, t_s: float) -> Instance:
        """The base instance with every measurement younger than its memory applied."""

        def live(e: _Entry) -> bool:
            return t_s - e.at_s <= e.forget_s

        mult = {d: e.value for d, e in self.devices.items() if live(e)}
        bws = {k: e.value for k, e in self.links.items() if live(e)}
        pieces = tuple(
            replace(pc, time_s={d: t * mult.get(d, 1.0) for d, t in pc.time_s.items()})
            for pc in self.base.pieces
        )
        links = tuple(
            replace(lk, bandwidth_Bps=bws.get((lk.src, lk.dst), lk.bandwidth_Bps))
            for lk in self.base.dedicated_links
        )
        return replace(self.base, pieces=pieces, links=links)

    def _degraded(self, t_s: float) -> list[tuple[tuple[str, ...], float]]:
        """Every believed entry beyond ``DEGRADED_RATIO`` of the base, either way, as
        ``(("link", u, v) or ("device", d), slow-down ratio)``, links then devices, sorted."""
        base_links = self.base.link_by_pair
        live = [
            (("link", u, v), base_links[(u, v)].bandwidth_Bps / e.value)
            for (u, v), e in sorted(self.links.items())
            if t_s - e.at_s <= e.forget_s
        ] + [
            (("device", d), e.value)
            for d, e in sorted(self.devices.items())
            if t_s - e.at_s <= e.forget_s
        ]
        return [(k, r) for k, r in live if r > DEGRADED_RATIO or r * DEGRADED_RATIO < 1]

    def changed(self, t_s: float) -> frozenset[tuple[str, ...]]:
        """The links ``("link", u, v)`` and devices ``("device", d)`` :meth:`changes` lists."""
        return frozenset(k for k, _ in self._degraded(t_s))

    def changes(self, t_s: float) -> list[str]:
        """What is believed to differ from the base by more than ``DEGRADED_RATIO``, e.g.
        ``["link a->b 10.0x slower", "device x 2.1x slower"]`` (a re-plan's trigger)."""
        names = {"link": lambda k: f"link {k[1]}->{k[2]}", "device": lambda k: f"device {k[1]}"}
        return [f"{names[k[0]](k)} {_ratio_text(r)}" for k, r in self._degraded(t_s)]


def running_period_s(believed: Instance, routed_on: Instance, stages: Sequence[Stage]) -> float:
    """The period of ``stages`` on the believed speeds *along the routes they run*: those the
    running epoch chose on ``routed_on`` (the instance it was priced on), not the routes the
    belief would choose now. Why: a plan whose link slowed down is only as good on the belief
    as its new routes if the runtime re-routes it, which takes a hand-over like any re-plan —
    so a re-route is a candidate like any other plan, and the running plan is priced as it runs.
    """
    pinned = replace(believed)
    sizes = {believed.input_bytes, believed.output_bytes}
    sizes |= {believed.cut_bytes(k) for k in range(1, believed.num_pieces)}
    by_pair = believed.link_by_pair
    for src in believed.device_names:
        for nbytes in sizes:
            if src not in routed_on.device_by_name:
                continue
            old = routed_on.paths_from(src, nbytes)
            pinned._path_cache[(src, float(nbytes))] = {
                dst: tuple(by_pair.get((lk.src, lk.dst), lk) for lk in path)
                for dst, path in old.items()
                if dst in believed.device_by_name
                and all(lk.src in believed.device_by_name and lk.dst in believed.device_by_name
                        for lk in path)
            }  # fmt: skip
    return period_s(pinned, stages)


def _ratio_text(slower: float) -> str:
    return f"{slower:.1f}x slower" if slower >= 1 else f"{1 / slower:.1f}x faster"


def _multiplier(inst: Instance, base: Instance, device: str) -> float:
    """How much slower ``device``'s pieces are priced in ``inst`` than in ``base`` (1 when it
    has no priced work in either)."""
    for a, b in zip(inst.pieces, base.pieces, strict=False):
        ta, tb = a.time_s.get(device, 0.0), b.time_s.get(device, 0.0)
        if ta > 0 and tb > 0:
            return ta / tb
    return 1.0


@dataclass(frozen=True)
class Replan:
    """A live re-plan, as a session report lists it (JSON via :meth:`to_dict`).

    ``t_s`` is when it was decided (session clock), ``trigger`` what the belief saw change,
    ``predicted_gain`` the relative throughput gain the belief predicted, ``epoch`` the epoch
    that took over (``-1`` if the hand-over failed; the session's hand-overs say when it ran),
    ``plan`` the new plan in full (``Plan.to_dict()``), so the simulator can replay the session's
    plan timeline (:func:`coinfer.simulate.oracle.replay_plan_timeline`).
    """

    t_s: float
    trigger: str
    old_plan: str
    new_plan: str
    old_period_s: float
    new_period_s: float
    predicted_gain: float
    epoch: int = -1
    plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = [
    "DEFAULT_FORGET_S",
    "MAX_FORGET_S",
    "AdaptPolicy",
    "Belief",
    "Decision",
    "Replan",
    "decide",
    "persistence_s",
    "running_period_s",
]
