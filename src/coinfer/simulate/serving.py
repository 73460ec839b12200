"""A served pipeline in simulated time: open-loop arrivals, the server's batching and queue, and
Quart's scaling policy — the same decisions (:func:`coinfer.core.scaling.decide`) on simulated
signals, so a load test can be replayed and its goodput compared with the real server's.

What is modelled, after the real server (:mod:`coinfer.serve`):

- each arrival is one sample; the queue holds ``queue_samples`` samples waiting for a
  micro-batch, beyond which an arrival is refused (429);
- the batcher sends a micro-batch of ``microbatch`` samples when that many wait, or when the
  oldest has waited ``batch_wait_s`` (padded), while fewer than ``feed_ahead x window``
  micro-batches are inside the session; at most ``window`` (the plan's schedule window) are in
  the pipeline itself, the rest wait at the source;
- a micro-batch visits one replica of every stage, chosen by smooth weighted round-robin with
  the cost model's replica weights (what the session's schedule does), holding each device for
  ``t[first..last][d] x microbatch`` (FIFO per device) and every link of the cheapest path for
  ``L + bytes / B`` (FIFO per link, store-and-forward) — the simulator's conventions;
- a request's latency runs from its arrival to its micro-batch's output back at the source,
  plus ``overhead_s`` (HTTP handling);
- scaling: every ``policy.check_s`` the policy sees the offered demand of the last
  ``demand_window_s``, the backlog and the instance; a decision takes effect ``handover_s``
  later (the measured decision-to-serving time of the runtime's hand-over), after which new
  micro-batches use the new stages while those in flight finish on the old ones; no decision
  is taken while a switch is pending, within ``settle_s`` after it or after the first request
  (the real scaler waits for an epoch's devices to have computed that long).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from ..core.evaluate import replica_weights
from ..core.instance import Instance
from ..core.plans import Plan, Stage
from ..core.scaling import (
    DEMAND_WINDOW_S,
    SETTLE_S,
    LoadSample,
    ScalerState,
    ScalingPolicy,
    applied,
    decide,
)
from ..errors import InputError
from ..schedule.scheduler import default_window, smooth_weighted_round_robin
from .sim import hop_time

# Micro-batches in one cycle of replica choices (the session's schedule cycle).
CYCLE = 60


@dataclass(frozen=True)
class ServeSimConfig:
    """The server's sizes and the runtime's measured delays (see the module docstring)."""

    microbatch: int = 4
    queue_samples: int = 64
    batch_wait_s: float = 0.005
    feed_ahead: int = 2
    slo_s: float | None = None
    handover_s: float = 1.0
    settle_s: float = SETTLE_S
    demand_window_s: float = DEMAND_WINDOW_S
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if self.microbatch < 1 or self.queue_samples < self.microbatch:
            raise InputError(
                f"serving simulation needs microbatch >= 1 and a queue of at least one "
                f"micro-batch, got {self.microbatch} and {self.queue_samples}"
            )
        if min(self.batch_wait_s, self.handover_s, self.settle_s, self.overhead_s) < 0:
            raise InputError("serving simulation delays must be >= 0")


@dataclass(frozen=True)
class ServeSimResult:
    """Per request: arrival, completion (NaN when refused); the scaling events."""

    arrival_s: tuple[float, ...]
    completion_s: tuple[float, ...]
    slo_s: float | None
    events: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def latencies_s(self) -> list[float]:
        return [
            c - a
            for a, c in zip(self.arrival_s, self.completion_s, strict=True)
            if not math.isnan(c)
        ]

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_s) if self.latencies_s else np.array([math.nan])
        span = max(self.arrival_s) - min(self.arrival_s) if self.arrival_s else 0.0
        good = int(np.sum(lat <= self.slo_s)) if self.slo_s is not None and self.latencies_s else 0
        return {
            "sent": len(self.arrival_s),
            "completed": len(self.latencies_s),
            "rejected": len(self.arrival_s) - len(self.latencies_s),
            "mean_s": float(np.mean(lat)),
            "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99)),
            "goodput": good,
            "goodput_rps": good / span if span > 0 else math.nan,
            "scale_outs": sum(1 for e in self.events if e["kind"] == "scale_out"),
            "scale_ins": sum(1 for e in self.events if e["kind"] == "scale_in"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "arrival_s": list(self.arrival_s),
            "completion_s": [None if math.isnan(c) else c for c in self.completion_s],
            "events": [dict(e) for e in self.events],
        }


class _Stages:
    """One plan's stages with their replica choice and window: replicas take micro-batches in
    the order the session's schedule gives them (smooth weighted round-robin over the cost
    model's replica weights, repeating every :data:`CYCLE`)."""

    def __init__(self, env: simpy.Environment, instance: Instance, stages: Sequence[Stage]):
        self.stages = tuple(stages)
        self.picks = [
            smooth_weighted_round_robin(replica_weights(instance, st), CYCLE) for st in self.stages
        ]
        self.count = [0] * len(self.stages)
        self.window = simpy.Resource(env, capacity=max(1, default_window(instance, stages, 10**6)))

    def pick(self, k: int) -> str:
        i = self.picks[k][self.count[k] % CYCLE]
        self.count[k] += 1
        return self.stages[k].devices[i]


def simulate_serving(
    instance: Instance,
    plan: Plan | Sequence[Stage],
    arrivals: Sequence[float],
    config: ServeSimConfig | None = None,
    policy: ScalingPolicy | None = None,
) -> ServeSimResult:
    """Serve ``arrivals`` (seconds, one sample each) with ``plan`` on ``instance``; with a
    ``policy``, scale as the real server would (see the module docstring)."""
    cfg = config or ServeSimConfig()
    times = [float(t) for t in arrivals]
    if any(not math.isfinite(t) or t < 0 for t in times) or times != sorted(times):
        raise InputError("arrival times must be finite, >= 0 and non-decreasing")
    stages0 = tuple(plan.stages if isinstance(plan, Plan) else plan)
    mb = cfg.microbatch
    env = simpy.Environment()
    devices = {d: simpy.Resource(env, capacity=1) for d in instance.device_names}
    links = {lk.resource: simpy.Resource(env, capacity=1) for lk in instance.links}
    current = [_Stages(env, instance, stages0)]
    waiting: deque[int] = deque()  # request indices queued for a micro-batch
    offered: deque[float] = deque()
    completion = [math.nan] * len(times)
    inflight = [0]
    kick = [env.event()]
    events: list[dict[str, Any]] = []
    switching = [False]
    # the real scaler judges a plan only once its devices have computed for settle_s: at the
    # start that is settle_s after the first request
    settled_at = [(times[0] if times else 0.0) + cfg.settle_s]

    def nudge() -> None:
        if not kick[0].triggered:
            kick[0].succeed()

    def carry(u: str, v: str, nbytes: float):
        if u == v:
            return
        for lk in instance.path(u, v, nbytes):
            with links[lk.resource].request() as req:
                yield req
                yield env.timeout(hop_time(lk, nbytes, env.now))

    def pipeline(batch: list[int], plan_now: _Stages):
        with plan_now.window.request() as slot:
            yield slot
            here = instance.source
            for k, st in enumerate(plan_now.stages):
                dev = plan_now.pick(k)
                yield from carry(here, dev, instance.cut_bytes(st.first) * mb)
                with devices[dev].request() as req:
                    yield req
                    yield env.timeout(instance.compute_s(st.first, st.last, dev) * mb)
                here = dev
            yield from carry(here, instance.source, instance.output_bytes * mb)
        for r in batch:
            completion[r] = env.now + cfg.overhead_s
        inflight[0] -= 1
        nudge()

    def batcher():
        while True:
            cap = cfg.feed_ahead * current[0].window.capacity
            if waiting and inflight[0] < cap:
                oldest = times[waiting[0]]
                # (a tolerance: a timeout to ``oldest + wait`` may land a rounding short of it)
                if len(waiting) >= mb or env.now - oldest >= cfg.batch_wait_s - 1e-9:
                    batch = [waiting.popleft() for _ in range(min(mb, len(waiting)))]
                    inflight[0] += 1
                    env.process(pipeline(batch, current[0]))
                    continue
                wake = env.timeout(oldest + cfg.batch_wait_s - env.now)
                yield env.any_of([kick[0], wake])
            else:
                yield kick[0]
            if kick[0].triggered:
                kick[0] = env.event()

    def source():
        for r, t in enumerate(times):
            if t > env.now:
                yield env.timeout(t - env.now)
            offered.append(t)
            if len(waiting) + 1 <= cfg.queue_samples:
                waiting.append(r)
                nudge()

    def switch_after(action: Any, decided: float):
        yield env.timeout(cfg.handover_s)
        current[0] = _Stages(env, instance, action.stages)
        switching[0] = False
        settled_at[0] = env.now + cfg.settle_s
        events[-1]["serving_s"] = env.now
        nudge()

    def scaler(pol: ScalingPolicy):
        state = ScalerState()
        while True:
            yield env.timeout(pol.check_s)
            if switching[0] or env.now < settled_at[0]:
                continue
            while offered and offered[0] < env.now - cfg.demand_window_s:
                offered.popleft()
            sample = LoadSample(
                env.now,
                len(offered) / cfg.demand_window_s,
                len(waiting) + inflight[0] * mb,
                instance,
            )
            stages = current[0].stages
            used = {d for st in stages for d in st.devices}
            idle = [d for d in instance.device_names if d not in used]
            action = decide(pol, state, sample, stages, idle)
            if action is None:
                continue
            applied(state, action, env.now)
            switching[0] = True
            changes = action.added or action.removed
            events.append(
                {
                    "t_s": env.now,
                    "kind": action.kind,
                    "replicas": [[k, d] for k, d in changes],
                    "reason": action.reason,
                    "plan": " | ".join(str(st) for st in action.stages),
                    "serving_s": None,
                }
            )
            env.process(switch_after(action, env.now))

    env.process(source())
    env.process(batcher())
    end = (times[-1] if times else 0.0) + 600.0
    if policy is not None:
        env.process(scaler(policy))
    # run until every admitted request is done (the scaler's clock ticks forever)
    while env.peek() < end and (
        env.now < (times[-1] if times else 0.0) or waiting or inflight[0] > 0
    ):
        env.step()
    return ServeSimResult(tuple(times), tuple(completion), cfg.slo_s, tuple(events))


__all__ = ["ServeSimConfig", "ServeSimResult", "simulate_serving"]
