"""Live re-planning's pure side: the switching rule, and what the running system believes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.adapt import MAX_FORGET_S, AdaptPolicy, Belief, Replan, decide
from coinfer.core.instance import Device, Link, make_instance
from coinfer.errors import InputError


def _instance():
    times = [{"a": 0.010, "b": 0.020, "c": 0.020}] * 3
    devices = [Device(d, 1 << 30) for d in "abc"]
    links = [Link(u, v, 10e6, 0.001) for u in "abc" for v in "abc" if u != v]
    return make_instance(times, [0] * 3, [100_000] * 3, 100_000, devices, links, "a")


@settings(max_examples=300, deadline=None)
@given(
    cur=st.floats(0.001, 1.0),
    best=st.floats(0.001, 1.0),
    now=st.floats(0, 100),
    last=st.floats(0, 100),
    streak=st.integers(0, 4),
    cost=st.floats(0, 5),
    horizon=st.floats(0.5, 60),
    settling=st.booleans(),
    settle=st.booleans(),
)
def test_switch_exactly_when_every_condition_holds(
    cur, best, now, last, streak, cost, horizon, settling, settle
):
    """The rule is the conjunction the docs state: enough relative gain, gained requests over
    the horizon beat the requests a hand-over loses, a settled belief, confirmed, and not too
    soon."""
    pol = AdaptPolicy(switch_cost_s=cost, horizon_s=horizon, settle=settle)
    d = decide(pol, now_s=now, last_switch_s=last, current_period_s=cur, best_period_s=best,
               streak=streak, settling=settling)  # fmt: skip
    gain = cur / best - 1
    expected = (
        gain >= pol.min_gain
        and horizon * (1 / best - 1 / cur) > cost / cur
        and not (settling and settle)
        and (streak + 1 >= pol.confirm or gain >= pol.sure_gain)
        and now - last >= pol.min_dwell_s
    )
    assert d.switch == expected
    assert d.gain == pytest.approx(gain)


def test_policy_rejects_nonsense():
    with pytest.raises(InputError, match="confirm"):
        AdaptPolicy(confirm=0)
    with pytest.raises(InputError, match="forget_s"):
        AdaptPolicy(forget_s=0)


def test_belief_applies_measurements_then_forgets_them():
    inst = _instance()
    b = Belief(inst, forget_s=5.0)
    b.observe(1.0, inst, {("a", "b"): 1e6}, {"b": 2.0})
    now = b.instance(2.0)
    assert now.link_by_pair[("a", "b")].bandwidth_Bps == 1e6
    assert now.compute_s(0, 0, "b") == pytest.approx(0.040)
    assert now.compute_s(0, 0, "c") == pytest.approx(0.020)  # never measured
    assert b.changes(2.0) == ["link a->b 10.0x slower", "device b 2.0x slower"]
    assert b.changed(2.0) == {("link", "a", "b"), ("device", "b")}
    # 5 s without a fresh sample: believed as the base again (the plan may try it again)
    later = b.instance(6.5)
    assert later.link_by_pair[("a", "b")].bandwidth_Bps == 10e6
    assert later.compute_s(0, 0, "b") == pytest.approx(0.020)
    assert b.changes(6.5) == []
    assert b.changed(6.5) == frozenset()


def test_a_link_still_bad_when_tried_again_is_remembered_longer():
    inst = _instance()
    b = Belief(inst, forget_s=5.0)
    t = 0.0
    forgets = []
    for _ in range(8):
        b.observe(t, inst, {("a", "b"): 1e6}, {})
        forgets.append(b.links[("a", "b")].forget_s)
        t += forgets[-1] + 0.5  # measured again only after it was forgotten
    assert forgets[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(forgets) == MAX_FORGET_S
    b.observe(t, inst, {("a", "b"): 10e6}, {})  # recovered: memory back to the default
    assert b.links[("a", "b")].forget_s == 5.0


def test_device_scale_is_relative_to_the_instance_the_epoch_was_priced_on():
    """An epoch priced on a belief where b was already 2x slow measures b at 1.5x of that:
    b is 3x slower than the base."""
    inst = _instance()
    b = Belief(inst)
    b.observe(0.0, inst, {}, {"b": 2.0})
    priced = b.instance(0.0)
    b.observe(1.0, priced, {}, {"b": 1.5})
    assert b.instance(1.0).compute_s(0, 0, "b") == pytest.approx(0.060)


def test_replan_records_serialise():
    r = Replan(3.5, "link a->b 10.0x slower", "[0-1]->a [2]->b", "[0-2]->a", 0.1, 0.05, 1.0, 2)
    assert json.loads(json.dumps(r.to_dict()))["new_plan"] == "[0-2]->a"


def test_the_running_plan_is_priced_along_the_routes_it_runs():
    """a->b slows 4000x: the belief would relay a->c->b, but the running epoch still sends
    directly — it is priced so, and the same stages re-routed are a real improvement."""
    from coinfer.core.adapt import running_period_s
    from coinfer.core.evaluate import period_s
    from coinfer.core.plans import Stage

    inst = _instance()
    stages = (Stage(0, 0, ("a",)), Stage(1, 2, ("b",)))
    b = Belief(inst)
    b.observe(1.0, inst, {("a", "b"): 2500.0}, {})
    believed = b.instance(1.0)
    rerouted = period_s(believed, stages)
    running = running_period_s(believed, inst, stages)
    assert running == pytest.approx(0.001 + 100_000 / 2500.0)  # the direct, slow hop
    assert rerouted < 0.05 < running  # via c: two 10 ms hops, b's 40 ms of compute
    assert running_period_s(inst, inst, stages) == pytest.approx(period_s(inst, stages))


def test_conditions_that_change_often_shorten_the_horizon():
    from coinfer.core.adapt import MIN_HORIZON_S, persistence_s

    assert persistence_s([], 50.0, 20.0) == 20.0  # nothing changed: the policy's horizon
    assert persistence_s([10.0], 14.0, 20.0) == pytest.approx(4.0)  # one spell, 4 s so far
    # a radio that moves every ~1.5 s: a switch must repay itself within that
    assert persistence_s([10.0, 11.5, 13.0, 14.4, 16.0], 16.5, 20.0) == MIN_HORIZON_S
    assert persistence_s([10.0, 13.0, 16.0, 19.0], 22.0, 20.0) == pytest.approx(3.0)
    assert persistence_s([10.0, 40.0], 90.0, 20.0) == 20.0  # capped
    # the same +40 % gain is worth a 1.5 s hand-over over 20 s, not over 2 s
    pol = AdaptPolicy(switch_cost_s=1.5)
    kw = dict(now_s=50.0, last_switch_s=0.0, current_period_s=0.14, best_period_s=0.1, streak=1)
    assert decide(pol, **kw).switch
    from dataclasses import replace

    assert not decide(replace(pol, horizon_s=2.0), **kw).switch
