"""Quart's scaling loop beside a served session: measure, decide (:mod:`coinfer.core.scaling`),
hand the stream over to the plan with the key stage replicated (or the replica removed).

Each check (every ``policy.check_s``) reads:

- the demand: samples offered to the batcher (taken or refused with 429) over the last
  :data:`DEMAND_WINDOW_S` — completions cannot show a demand above capacity;
- the backlog: samples waiting in the batcher plus those inside the pipeline;
- each device's compute time per micro-batch, from the current epoch's telemetry of the last
  :data:`MEASURE_WINDOW_S` (a device idle lately keeps its last measurement of the same pieces);
  the priced instance scaled by it is what the policy prices with.

A decision becomes a :meth:`Session.switch` to the new stages: the new epoch's workers start
beside the running ones (forked from the session's warm zygote, which holds the model's
weights: the replica gets them from the parameter cache, not from disk or the wire), then take
the requests not yet fed while the old epoch finishes its own — nothing stops, nothing is lost,
nothing is re-run. Every event is a JSON-ready dict in :attr:`Scaler.events` (decided, and the
moment the new epoch took over requests), also exported in ``/metrics`` and on the dashboard.

A fail-over (a device lost) replaces the plan by the planner's plan over the survivors; the
scaler then starts again from that plan (its replicas are forgotten: the planner chose anew).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from typing import Any

from ..core.evaluate import evaluate
from ..core.plans import Plan
from ..core.scaling import (
    DEMAND_WINDOW_S,
    SETTLE_S,
    LoadSample,
    ScaleAction,
    ScalerState,
    ScalingPolicy,
    applied,
    decide,
    failed,
    measured_instance,
)

# Compute times per device: the records of the last this many seconds (4 per device).
MEASURE_WINDOW_S = 2.0


class Scaler:
    """Scale ``service``'s key stage out and in (see the module docstring).

    ``instance`` is the priced instance the plan was made for (per sample). Event times are on
    the session's clock (``session.now()``), so they line up with its report and telemetry.
    """

    def __init__(
        self,
        service: Any,
        instance: Any,
        policy: ScalingPolicy | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.service = service
        self.instance = instance
        self.policy = policy or ScalingPolicy()
        self.say = log or (lambda _m: None)
        self.state = ScalerState()
        self.events: list[dict[str, Any]] = []
        self.checks = 0
        self.error: str | None = None
        self._alive = set(service.session.alive)
        self._known: dict[tuple[str, int, int], float] = {}  # (device, first, last) -> ms
        self._serial = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scaler", daemon=True)

    def start(self) -> Scaler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.policy.check_s):
            try:
                self.check()
            except Exception as exc:  # keep serving; the error shows in /metrics and the log
                if self.error is None:
                    self.say(f"scaling check failed: {type(exc).__name__}: {exc}")
                self.error = f"{type(exc).__name__}: {exc}"

    # -- one check -----------------------------------------------------------------------
    def check(self) -> ScaleAction | None:
        """Measure, decide, act; the action taken (``None``: nothing to do)."""
        svc = self.service
        s = svc.session
        batcher = svc.batcher
        self._update_events(s)
        if svc.closing or batcher is None or s.switching:
            return None
        now = s.now()
        plan = s.plan
        alive = set(s.alive)
        if alive != self._alive:  # a fail-over or an admission: the planner's plan is the base
            self._alive = alive
            self.state = ScalerState()
        stage_ms = self._stage_ms(s, now)
        if stage_ms is None:
            return None
        self.checks += 1
        mb = svc.options.microbatch
        inst = measured_instance(self.instance, stage_ms, plan.stages, mb)
        sample = LoadSample(
            now,
            batcher.offered_rate(DEMAND_WINDOW_S),
            batcher.queued_samples + batcher.inflight * mb,
            inst,
        )
        used = set(plan.devices)
        idle = [d for d in s.alive if d not in used]
        action = decide(self.policy, self.state, sample, plan.stages, idle)
        if action is None:
            return None
        self._act(action, plan, inst, now)
        return action

    def _stage_ms(self, s: Any, now: float) -> dict[str, float] | None:
        """Each device's mean compute ms per micro-batch in the current epoch's recent
        telemetry; ``None`` until every device of the plan has settled."""
        epoch = s.epoch
        recs = [r for r in s.telemetry[-400:] if r.get("epoch") == epoch]
        by_dev: dict[str, list[float]] = {}
        first: dict[str, float] = {}
        for r in recs:
            if r.get("computes", 0) > 0 and r.get("compute_ms") is not None:
                first.setdefault(r["device"], r["t_s"])
                if r["t_s"] >= now - MEASURE_WINDOW_S:
                    by_dev.setdefault(r["device"], []).append(float(r["compute_ms"]))
        devices = [d for st in s.plan.stages for d in st.devices]
        if any(d not in first or now - first[d] < SETTLE_S for d in devices):
            return None
        span = {d: (st.first, st.last) for st in s.plan.stages for d in st.devices}
        for d, v in by_dev.items():
            if d in span:
                self._known[(d, *span[d])] = statistics.fmean(v)
        # a device idle lately keeps its last measurement of the same pieces
        known = {d: self._known.get((d, *span[d])) for d in devices}
        return {d: ms for d, ms in known.items() if ms is not None}

    def _act(self, action: ScaleAction, plan: Plan, inst: Any, now: float) -> None:
        self._serial += 1
        reason = f"{action.kind.replace('_', '-')} #{self._serial}"
        new = Plan(
            algo=plan.algo if plan.algo.endswith("+scaled") else f"{plan.algo}+scaled",
            objective=plan.objective,
            stages=action.stages,
            predicted=evaluate(inst, action.stages),
            details={"scaling": reason},
        )
        changes = action.added or action.removed
        self.events.append(
            {
                "id": self._serial,
                "t_s": round(now, 3),
                "kind": action.kind,
                "stage": changes[0][0],
                "device": ",".join(d for _, d in changes),
                "replicas": [[k, d] for k, d in changes],
                "reason": action.reason,
                "key_stage": action.key_stage,
                "demand_sps": round(action.demand_rps, 2),
                "capacity_sps": round(action.capacity_rps, 2),
                "new_capacity_sps": round(action.new_capacity_rps, 2),
                "plan": " | ".join(str(st) for st in action.stages),
                "serving_s": None,
                "error": None,
            }
        )
        self.say(
            f"{reason}: {action.reason}; stage {changes[0][0]} "
            f"{'+' if action.added else '-'}{','.join(d for _, d in changes)} "
            f"-> {new.predicted.throughput_rps:.1f} samples/s predicted"
        )
        self.service.session.switch(new, inst, reason=reason)
        applied(self.state, action, now)

    def _update_events(self, s: Any) -> None:
        """Fill in when each of our hand-overs took over (or why it failed)."""
        open_ = {e["id"]: e for e in self.events if e["serving_s"] is None and not e["error"]}
        if not open_:
            return
        for h in s.handovers:
            if not h.reason.startswith(("scale-out #", "scale-in #")):
                continue
            serial = int(h.reason.rsplit("#", 1)[1])
            ev = open_.get(serial)
            if ev is None:
                continue
            if h.error is not None:
                ev["error"] = h.error
                failed(self.state, s.now())
                self._undo(ev)
            elif h.switched_s is not None:
                ev["serving_s"] = round(h.switched_s, 3)
                ev["decision_to_serving_s"] = round(h.switched_s - ev["t_s"], 3)

    def _undo(self, ev: dict[str, Any]) -> None:
        """A failed hand-over: the replicas it added are not running."""
        if ev["kind"] == "scale_out":
            for k, d in ev["replicas"]:
                if (k, d) in self.state.added:
                    self.state.added.remove((k, d))
        else:
            self.state.added.extend((k, d) for k, d in ev["replicas"])

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for the dashboard and ``/v1/plan``."""
        return {
            "policy": self.policy.to_dict(),
            "checks": self.checks,
            "replicas_added": [[k, d] for k, d in self.state.added],
            "events": [dict(e) for e in self.events],
            "error": self.error,
        }


__all__ = ["MEASURE_WINDOW_S", "Scaler"]
