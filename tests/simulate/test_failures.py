"""The failure simulator: seeded traces, the fail-over policy on hand-made traces, and its
agreement with the closed-form expected goodput of coinfer.plan.reliability."""

from __future__ import annotations

import dataclasses as dc
import statistics

import pytest

from coinfer.core.instance import Device, Instance, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import CoinferError, InputError
from coinfer.plan import plan
from coinfer.plan.reliability import expected_goodput
from coinfer.simulate.failures import (
    FailureEvent,
    failure_trace,
    goodput_over_seeds,
    simulate_failures,
    simulated_throughput,
)
from coinfer.testing import random_instance


def _with_rates(inst: Instance, devices: dict[str, float], links: dict | None = None) -> Instance:
    devs = tuple(dc.replace(d, failure_rate_per_h=devices.get(d.name, 0.0)) for d in inst.devices)
    return dc.replace(inst, devices=devs, link_failure_per_h=links or {})


def _line(times: dict[str, float]) -> Instance:
    names = list(times)
    devs = [Device(n, 10**9) for n in names]
    links = [Link(u, v, 1e9, 0.0) for u in names for v in names if u != v]
    return make_instance([times], [10], [1], 1, devs, links, names[0])


def _dp(inst: Instance):
    try:
        return plan(inst, "dp").stages
    except CoinferError:
        return None


def test_trace_is_seeded_and_alternates_fail_repair() -> None:
    inst = _with_rates(_line({"a": 0.02, "b": 0.01}), {"b": 60.0}, {("a", "b"): 10.0})
    t1 = failure_trace(inst, 7200.0, 30.0, seed=5)
    assert t1 == failure_trace(inst, 7200.0, 30.0, seed=5)
    assert t1 != failure_trace(inst, 7200.0, 30.0, seed=6)
    for part in ("b", ("a", "b")):
        mine = [e for e in t1 if e.part == part]
        assert mine and [e.kind for e in mine] == ["fail", "repair"] * (len(mine) // 2) + (
            ["fail"] if len(mine) % 2 else []
        )
        assert all(
            r.time_s - f.time_s == pytest.approx(30.0)
            for f, r in zip(mine[::2], mine[1::2], strict=False)
        )
    # about 60/h x 2 h of b (a little fewer: no failure while being repaired)
    assert 80 <= sum(e.kind == "fail" and e.part == "b" for e in t1) <= 150
    with pytest.raises(InputError, match="horizon_s"):
        failure_trace(inst, 0.0, 30.0, seed=0)


def test_no_rates_no_failures() -> None:
    inst = random_instance(2, 5, 3)
    stages = plan(inst, "dp").stages
    run = simulate_failures(inst, stages, replan=_dp, horizon_s=1000.0, repair_s=60.0, seed=1)
    assert run.failures == 0 and run.interruptions == 0
    assert run.goodput_rps == pytest.approx(plan(inst, "dp").predicted.throughput_rps)


def test_critical_failure_pauses_then_replans_then_hands_back() -> None:
    """Plan on b (100/s), source a (50/s alone): b down 10..110 s, recovery 2 s, 200 s in all:
    100 x 10 + 0 x 2 + 50 x 98 + 100 x 90 requests."""
    inst = _with_rates(_line({"a": 0.02, "b": 0.01}), {"b": 1.0})
    events = [FailureEvent(10.0, "fail", "b"), FailureEvent(110.0, "repair", "b")]
    run = simulate_failures(inst, (Stage(0, 0, ("b",)),), replan=_dp, horizon_s=200.0,
                            repair_s=100.0, recovery_s=2.0, events=events)  # fmt: skip
    assert run.completed == pytest.approx(100 * 10 + 50 * 98 + 100 * 90)
    assert run.interruptions == 1 and run.paused_s == pytest.approx(2.0)
    assert run.degraded_s == pytest.approx(98.0)
    assert [s[3] for s in run.segments] == ["plan", "recovering", "replan", "plan"]


def test_a_lost_replica_means_no_pause_and_rejoins() -> None:
    inst = _with_rates(_line({"a": 1.0, "b": 0.02, "c": 0.02}), {"c": 1.0})
    events = [FailureEvent(10.0, "fail", "c"), FailureEvent(60.0, "repair", "c")]
    run = simulate_failures(inst, (Stage(0, 0, ("b", "c")),), replan=_dp, horizon_s=100.0,
                            repair_s=50.0, recovery_s=2.0, events=events)  # fmt: skip
    assert run.interruptions == 0 and run.paused_s == 0.0
    assert run.completed == pytest.approx(100 * 10 + 50 * 50 + 100 * 40, rel=1e-9)


def test_unused_part_and_overlapping_failures() -> None:
    """c is idle: its failure changes nothing. b fails, then the source a during b's repair:
    a second recovery, a re-plan on c alone, and back to the plan only when both are back."""
    inst = _with_rates(_line({"a": 0.02, "b": 0.01, "c": 0.04}), {"a": 1, "b": 1, "c": 1})
    plan_b = (Stage(0, 0, ("b",)),)
    idle = simulate_failures(inst, plan_b, replan=_dp, horizon_s=100.0, repair_s=50.0,
                             events=[FailureEvent(5.0, "fail", "c")])  # fmt: skip
    assert idle.completed == pytest.approx(100 * 100) and idle.interruptions == 0
    events = [
        FailureEvent(10.0, "fail", "b"),
        FailureEvent(20.0, "fail", "a"),
        FailureEvent(60.0, "repair", "b"),
        FailureEvent(70.0, "repair", "a"),
    ]
    run = simulate_failures(inst, plan_b, replan=_dp, horizon_s=100.0, repair_s=50.0,
                            recovery_s=1.0, events=events)  # fmt: skip
    assert run.interruptions == 2
    # 0-10 plan (100/s), 10-11 pause, 11-20 on a (50/s), 20-21 pause, 21-60 on c (25/s), then
    # b is back: a re-plan over b and c (b alone, 100/s; a hand-over, no pause), and from 70 s
    # the plan again
    assert run.completed == pytest.approx(100 * 10 + 50 * 9 + 25 * 39 + 100 * 40, rel=1e-9)
    assert [s[3] for s in run.segments] == [
        "plan", "recovering", "replan", "recovering", "replan", "replan", "plan"
    ]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_the_expected_goodput_model(seed: int) -> None:
    """Rare failures (a few per hour, repair 60 s): the mean over seeds of the replayed goodput
    is within 1.5 % of the closed form for the dp plan and the reliability-aware plan."""
    inst = random_instance(seed, 7, 4)
    inst = _with_rates(inst, {"d1": 4.0, "d2": 1.0, "d3": 6.0},
                       {(lk.src, lk.dst): 1.0 for lk in inst.dedicated_links[:2]})  # fmt: skip
    plans = {"dp": plan(inst, "dp").stages,
             "reliable": plan(inst, "reliable", repair_s=60.0).stages}  # fmt: skip
    runs = goodput_over_seeds(inst, plans, range(16), replan=_dp, horizon_s=6 * 3600.0,
                              repair_s=60.0)  # fmt: skip
    for name, stages in plans.items():
        model = expected_goodput(inst, stages, repair_s=60.0).goodput_rps
        sim = statistics.mean(r.goodput_rps for r in runs[name])
        assert sim == pytest.approx(model, rel=0.015), name


def test_simulated_throughput_prices_with_the_discrete_event_simulator() -> None:
    inst = random_instance(3, 4, 2)
    stages = plan(inst, "dp").stages
    measure = simulated_throughput(60)
    x = measure(inst, stages)
    assert x == pytest.approx(plan(inst, "dp").predicted.throughput_rps, rel=0.15)
    run = simulate_failures(inst, stages, replan=_dp, horizon_s=50.0, repair_s=5.0,
                            throughput=measure)  # fmt: skip
    assert run.goodput_rps == pytest.approx(x)
