"""Live re-planning of a streaming session: measure, believe, re-plan, hand over.

An :class:`Adapter` watches a :class:`~.session.Session` once a ``policy.check_s``: it feeds the
current epoch's measurements (its :class:`~coinfer.core.online.OnlineEstimate`) into a
:class:`~coinfer.core.adapt.Belief`, asks the caller's planner for the best plan on what it
believes over the live devices, prices that plan and the running one on the same belief, and
when :func:`~coinfer.core.adapt.decide` says the gain repays the switch, hands the stream over
(:meth:`Session.switch`: no request stops or runs twice). Each switch is a
:class:`~coinfer.core.adapt.Replan` in the session report.

Why a thread beside the session rather than inside it: the session must stay correct whatever
the policy does (it only ever sees ``switch``), and the planner may take a while at fleet size —
the stream keeps flowing meanwhile. The runtime does not plan: ``planner(instance) -> (plan,
instance)`` comes from the caller (the CLI passes ``--algo``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..core.adapt import (
    CHANGE_RATIO,
    AdaptPolicy,
    Belief,
    Decision,
    Replan,
    decide,
    persistence_s,
    running_period_s,
)
from ..core.evaluate import period_s
from ..core.instance import Instance, surviving
from ..core.plans import Plan
from .session import Session

Planner = Callable[[Instance], "tuple[Plan, Instance]"]

# An adapting session's workers probe the emulated links they leave idle this often (seconds):
# the belief then sees a link the plan left recover, and a link a new route would take degrade,
# as soon as it sees the links the plan uses change instead of only after routing traffic over
# it (Session ``probe_s``). Why the telemetry's own interval (worker.STATS_S): the estimate
# believes a step after two consecutive samples, so a probe every other interval would take
# twice as long to be believed as the stream's own links, and the first re-plan after a change
# would still route over links it has no figure for.
PROBE_S = 0.5


class Adapter:
    """Re-plans ``session`` from its telemetry (see the module docstring).

    Parameters
    ----------
    session
        A started (or about to start) session with an instance (its base belief).
    planner
        ``planner(instance) -> (plan, instance it was made for)``: the best plan on what is
        believed, over the live devices only.
    policy
        Hysteresis and switching cost (:class:`~coinfer.core.adapt.AdaptPolicy`).
    """

    def __init__(
        self,
        session: Session,
        planner: Planner,
        policy: AdaptPolicy | None = None,
        log: Callable[[str], None] | None = None,
    ):
        base = session.instance
        if base is None:
            raise ValueError("adapting a session needs the instance its plan was made for")
        self.session = session
        self.planner = planner
        self.policy = policy or AdaptPolicy()
        self.belief = Belief(base, forget_s=self.policy.forget_s)
        self.say = log or (lambda _m: None)
        self.last_switch_s = 0.0
        self.streak = 0
        self.changes: list[float] = []  # when the running plan's predicted period jumped
        self._last_T: float | None = None
        self.checks: list[dict[str, Any]] = []  # every check's numbers (bounded: see _note)
        self._seen_epoch = -1
        self._believed_changed: frozenset[tuple[str, ...]] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Adapter:
        self._thread = threading.Thread(target=self._loop, name="adapter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def __enter__(self) -> Adapter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.policy.check_s):
            try:
                self.check()
            except Exception as exc:  # a planner failing on a belief must not stop the stream
                self.say(f"adapt: check failed: {exc}")

    def check(self) -> Decision | None:
        """One look: update the belief, re-plan on it, maybe switch. ``None`` when there is
        nothing to decide yet (no telemetry, or a hand-over under way)."""
        s = self.session
        got = s.measured()
        if got is None or s.switching:
            return None
        epoch, priced_on, links, scales = got
        now = s.now()
        if epoch != self._seen_epoch:
            # a new epoch (a hand-over or a fail-over): its own start-up is the dwell's origin
            self._seen_epoch = epoch
            self.last_switch_s = max(self.last_switch_s, now)
            self.streak = 0
            self._last_T = None  # another plan's period: not a change of conditions
        self.belief.observe(now, priced_on, links, scales)
        changed = self.belief.changed(now)
        settling, self._believed_changed = changed != self._believed_changed, changed
        alive = s.alive
        believed = surviving(self.belief.instance(now), alive, s.source)
        current = s.plan
        if not set(d for st in current.stages for d in st.devices) <= set(alive):
            return None  # a fail-over is replacing this plan
        cur_T = running_period_s(believed, priced_on, current.stages)
        if self._last_T is not None and abs(cur_T - self._last_T) > CHANGE_RATIO * self._last_T:
            self.changes = [*self.changes[-20:], now]
        self._last_T = cur_T
        horizon = persistence_s(self.changes, now, self.policy.horizon_s)
        plan, made_for = self.planner(believed)
        new_T = period_s(believed, plan.stages)
        if new_T >= cur_T:
            d = Decision(False, "the current plan is the best on the belief", 0.0)
        else:
            d = decide(
                replace(self.policy, horizon_s=horizon),
                now_s=now,
                last_switch_s=self.last_switch_s,
                current_period_s=cur_T,
                best_period_s=new_T,
                streak=self.streak,
                settling=settling,
            )
        self.streak = self.streak + 1 if d.gain >= self.policy.min_gain else 0
        self._note(now, cur_T, new_T, d, horizon)
        if d.switch:
            trigger = "; ".join(self.belief.changes(now)) or "belief differs from the plan's"
            if plan.stages == current.stages:
                trigger += " (same stages, new routes)"
            rec = Replan(
                t_s=now,
                trigger=trigger,
                old_plan=" ".join(str(x) for x in current.stages),
                new_plan=" ".join(str(x) for x in plan.stages),
                old_period_s=cur_T,
                new_period_s=new_T,
                predicted_gain=d.gain,
                plan=plan.to_dict(),
            )
            self.say(f"adapt: {trigger} -> {rec.new_plan} ({d.reason})")
            s.switch(plan, made_for, reason=f"adapt: {trigger}", replan=rec)
            self.last_switch_s = now
            self.streak = 0
        return d

    def _note(self, now: float, cur_T: float, new_T: float, d: Decision, horizon: float) -> None:
        if len(self.checks) >= 100_000:
            del self.checks[:50_000]
        self.checks.append(
            {
                "t_s": now,
                "current_period_s": cur_T,
                "best_period_s": new_T,
                "gain": d.gain,
                "horizon_s": horizon,
                "switch": d.switch,
                "reason": d.reason,
            }
        )


__all__ = ["PROBE_S", "AdaptPolicy", "Adapter"]
