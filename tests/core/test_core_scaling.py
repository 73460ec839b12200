"""Quart's scaling policy, pure: the key stage, the greedy scale-out, and the hysteresis."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import period_s
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.core.scaling import (
    LoadSample,
    ScalerState,
    ScalingPolicy,
    applied,
    capacity_rps,
    decide,
    grow,
    key_stage,
    measured_instance,
    stage_periods,
    with_replica,
)
from coinfer.errors import InputError

DEVICES = "abcde"


def _instance(seed: int = 0, pieces: int = 4, mem: int = 1 << 30, bw: float = 1e9):
    rng = random.Random(seed)
    speed = {d: rng.uniform(0.5, 2.0) for d in DEVICES}
    times = [{d: rng.uniform(0.005, 0.03) / speed[d] for d in DEVICES} for _ in range(pieces)]
    devices = [Device(d, mem) for d in DEVICES]
    links = [Link(u, v, bw, 0.0001) for u in DEVICES for v in DEVICES if u != v]
    return make_instance(times, [1000] * pieces, [1000] * pieces, 1000, devices, links, "a")


def test_key_stage_is_the_longest_stage_period():
    for seed in range(20):
        inst = _instance(seed)
        stages = (Stage(0, 1, ("a",)), Stage(2, 2, ("b", "c")), Stage(3, 3, ("d",)))
        periods = stage_periods(inst, stages)
        assert periods[1] == pytest.approx(1 / sum(1 / inst.compute_s(2, 2, d) for d in ("b", "c")))
        assert periods[key_stage(inst, stages)] == max(periods)


def test_grow_replicates_the_key_stage_on_the_best_idle_device():
    """One round of the greedy choice equals trying every idle device by brute force."""
    pol = ScalingPolicy(headroom=0.0, max_replicas_per_decision=1)
    for seed in range(30):
        inst = _instance(seed)
        stages = (Stage(0, 1, ("a",)), Stage(2, 3, ("b",)))
        k = key_stage(inst, stages)
        grown, added = grow(inst, stages, ["c", "d", "e"], 1e9, pol)
        brute = max(capacity_rps(inst, with_replica(stages, k, d)) for d in "cde")
        if brute < 1.1 * capacity_rps(inst, stages):
            assert added == []
            continue
        assert added[0][0] == k
        assert capacity_rps(inst, grown) == pytest.approx(brute)


def test_grow_stops_at_headroom_and_respects_memory():
    inst = _instance(3)
    stages = (Stage(0, 3, ("a",)),)
    cap = capacity_rps(inst, stages)
    # demand just above the capacity: one replica covers 1.2x of it, so no second one
    _, added = grow(inst, stages, ["b", "c", "d", "e"], cap * 1.05, ScalingPolicy())
    assert 1 <= len(added) <= 2
    grown = stages
    for k, d in added:
        grown = with_replica(grown, k, d)
    if len(added) == 2:
        assert capacity_rps(inst, with_replica(stages, *added[0])) < 1.2 * cap * 1.05
    # no device has memory for the whole model: nothing to add
    tight = _instance(3, mem=2500)
    assert grow(tight, stages, ["b", "c"], 1e9, ScalingPolicy()) == (stages, [])


def _sample(inst, t, demand, backlog=0):
    return LoadSample(t, demand, backlog, inst)


def test_scale_out_needs_confirmation_and_then_scale_in_after_the_hold():
    inst = _instance(1)
    pol = ScalingPolicy()
    base = (Stage(0, 3, ("a",)),)
    cap = capacity_rps(inst, base)
    state = ScalerState()
    idle = ["b", "c", "d", "e"]
    assert decide(pol, state, _sample(inst, 0.0, 2 * cap), base, idle) is None  # 1st check
    act = decide(pol, state, _sample(inst, 0.5, 2 * cap), base, idle)
    assert act is not None and act.kind == "scale_out"
    assert act.new_capacity_rps > cap and act.added and act.key_stage == 0
    applied(state, act, 0.5)
    cur = act.stages
    # within the cooldown nothing happens, even under load
    assert decide(pol, state, _sample(inst, 1.0, 10 * cap), cur, []) is None
    # load in the hysteresis band: nothing, however long
    for t in range(3, 40):
        mid = 0.7 * capacity_rps(inst, cur)
        assert decide(pol, state, _sample(inst, float(t), mid), cur, []) is None
    # load gone: scale-in only after in_hold_s, newest replica first
    steps = []
    t = 40.0
    while len(cur[0].devices) > 1 and t < 200:
        a = decide(pol, state, _sample(inst, t, 0.0), cur, [])
        if a is not None:
            assert a.kind == "scale_in"
            assert a.removed == (act.added[len(act.added) - 1 - len(steps)],)
            steps.append(t)
            applied(state, a, t)
            cur = a.stages
        t += 0.5
    assert cur == base
    assert steps[0] - 40.0 >= pol.in_hold_s
    assert all(b - a >= pol.in_hold_s for a, b in itertools.pairwise(steps))
    assert decide(pol, state, _sample(inst, t + 100, 0.0), cur, []) is None  # base stays


def test_a_queued_burst_scales_out_even_when_demand_looks_low():
    inst = _instance(2)
    base = (Stage(0, 3, ("a",)),)
    cap = capacity_rps(inst, base)
    state = ScalerState()
    pol = ScalingPolicy(confirm=1)
    act = decide(pol, state, _sample(inst, 0.0, 0.5 * cap, backlog=int(cap * 2)), base, ["b"])
    assert act is not None and "backlog" in act.reason


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 50),
    loads=st.lists(st.floats(0.0, 4.0), min_size=5, max_size=120),
)
def test_never_removes_a_device_of_the_base_plan(seed, loads):
    """Whatever the load does, scale-ins only remove replicas scaling added, and the stages
    always cover the same pieces with the base devices."""
    inst = _instance(seed)
    base = (Stage(0, 1, ("a",)), Stage(2, 3, ("b",)))
    cap = capacity_rps(inst, base)
    pol = ScalingPolicy()
    state = ScalerState()
    cur = base
    for i, x in enumerate(loads):
        t = 0.5 * i
        idle = [d for d in DEVICES if d not in {d for s in cur for d in s.devices}]
        a = decide(pol, state, _sample(inst, t, x * cap), cur, idle)
        if a is not None:
            applied(state, a, t)
            cur = a.stages
        assert [(s.first, s.last) for s in cur] == [(0, 1), (2, 3)]
        assert "a" in cur[0].devices and "b" in cur[1].devices
        assert len(state.added) == sum(len(s.devices) for s in cur) - 2
        assert period_s(inst, cur) <= period_s(inst, base) + 1e-12


def test_measured_instance_scales_each_device_and_idle_ones_by_the_median():
    inst = _instance(4)
    stages = (Stage(0, 1, ("a",)), Stage(2, 3, ("b", "c")))
    mb = 4
    ms = {
        "a": 2.0 * inst.compute_s(0, 1, "a") * mb * 1e3,
        "b": 3.0 * inst.compute_s(2, 3, "b") * mb * 1e3,
        "c": 5.0 * inst.compute_s(2, 3, "c") * mb * 1e3,
    }
    m = measured_instance(inst, ms, stages, mb)
    assert m.compute_s(0, 1, "a") == pytest.approx(2.0 * inst.compute_s(0, 1, "a"))
    assert m.compute_s(2, 3, "c") == pytest.approx(5.0 * inst.compute_s(2, 3, "c"))
    assert m.compute_s(0, 3, "e") == pytest.approx(3.0 * inst.compute_s(0, 3, "e"))
    assert measured_instance(inst, {}, stages, mb) is inst


def test_policy_rejects_nonsense():
    with pytest.raises(InputError, match="in_load < out_load"):
        ScalingPolicy(in_load=0.9, out_load=0.5)
    with pytest.raises(InputError, match="check interval"):
        ScalingPolicy(check_s=0)
    with pytest.raises(InputError, match="confirm"):
        ScalingPolicy(confirm=0)
