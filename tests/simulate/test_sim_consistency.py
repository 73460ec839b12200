"""Simulator vs the reference cost model, contention, traces, arrivals, energy, errors."""

from __future__ import annotations

import itertools
import math

import pytest
from sched_helpers import full_mesh, plan_of, random_chain_instance, random_plan, tiny_instance

from coinfer.core.evaluate import evaluate
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.schedule import schedule
from coinfer.simulate import SimResult, hop_time, simulate, steady_period


@pytest.mark.parametrize("seed", range(15))
def test_simple_case_matches_reference(seed):
    """One device per stage, direct links: period within 1 %, single-request latency exact."""
    inst = random_chain_instance(seed, pieces=6, devices=4, direct=True)
    plan = random_plan(inst, seed)
    ref = evaluate(inst, plan.stages)
    one = simulate(schedule(plan, inst, 1), inst)
    assert math.isclose(one.latency_s[0], ref.latency_s, rel_tol=1e-9)
    many = simulate(schedule(plan, inst, 120), inst)
    assert many.period_s == pytest.approx(ref.period_s, rel=0.01)
    assert many.energy_j == pytest.approx(ref.energy_j, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_replicas_throughput_close_to_reference(seed):
    """Weighted round-robin over replicas: period within 3 % of the reference (see docs/simulator.md)."""
    inst = random_chain_instance(seed, pieces=6, devices=5, direct=True)
    plan = random_plan(inst, seed, replicas=True)
    ref = evaluate(inst, plan.stages)
    res = simulate(schedule(plan, inst, 200), inst)
    assert res.period_s == pytest.approx(ref.period_s, rel=0.03)
    assert res.period_s >= ref.period_s * (1 - 0.03)


def test_multihop_latency_matches_reference():
    inst = random_chain_instance(4, pieces=5, devices=5, direct=False)
    plan = random_plan(inst, 11)
    ref = evaluate(inst, plan.stages)
    one = simulate(schedule(plan, inst, 1), inst)
    assert math.isclose(one.latency_s[0], ref.latency_s, rel_tol=1e-9)


def test_shared_link_contention_is_additive():
    """Two transfers crossing b->c per request: the link's busy time is their sum, as in evaluate."""
    devs = [Device(n, 10**9) for n in "abcd"]
    # a-b-c-d line plus d->a; stages a | c | d: a->c rides a->b, b->c ; c->d direct; d->a back.
    links = [
        Link("a", "b", 1e6, 0.0),
        Link("b", "c", 1e6, 0.0),
        Link("c", "d", 1e6, 0.0),
        Link("d", "a", 1e6, 0.0),
    ]
    inst = make_instance(
        [{n: 0.001 for n in "abcd"}] * 3, [1] * 3, [50_000, 1000, 10], 100, devs, links, "a"
    )
    plan = plan_of(inst, [Stage(0, 0, ("a",)), Stage(1, 1, ("c",)), Stage(2, 2, ("d",))])
    ref = evaluate(inst, plan.stages)
    assert ref.period_s == pytest.approx(0.05)
    res = simulate(schedule(plan, inst, 60), inst)
    assert res.period_s == pytest.approx(0.05, rel=1e-6)
    assert res.link_utilisation["a->b"] > 0.9


def test_microbatch_scales_linearly():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    one = simulate(schedule(plan, inst, 1, microbatch=1), inst)
    four = simulate(schedule(plan, inst, 1, microbatch=4), inst)
    lat_links = 0.001 * 2  # two transfers, each one 1 ms latency, not scaled by the micro-batch
    assert four.latency_s[0] - lat_links == pytest.approx(
        4 * (one.latency_s[0] - lat_links), rel=1e-9
    )


def test_bandwidth_trace_integrates_bytes():
    lk = Link("a", "b", 1000.0, 0.5)
    trace = [(0.0, 1000.0), (1.0, 500.0), (3.0, 2000.0)]
    # start 0: latency to 0.5, 500 B by 1.0, 1000 B over [1, 3), 500 B more at 2000 B/s -> 3.25
    assert hop_time(lk, 2000, 0.0, trace) == pytest.approx(3.25)
    assert hop_time(lk, 2000, 0.0, None) == pytest.approx(2.5)
    assert hop_time(lk, 100, 10.0, trace) == pytest.approx(0.5 + 100 / 2000)


def test_trace_slows_the_simulation():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    sched = schedule(plan, inst, 20)
    base = simulate(sched, inst)
    slow = simulate(sched, inst, traces={"a->b": [(0.0, 2e4)]})
    assert slow.period_s > base.period_s * 1.5
    with pytest.raises(InputError, match="no such link"):
        simulate(sched, inst, traces={"a->z": [(0.0, 1.0)]})


def test_poisson_and_trace_arrivals():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    sched = schedule(plan, inst, 200)
    ref = evaluate(inst, plan.stages)
    low = simulate(sched, inst, arrivals="poisson", rate=0.2 / ref.period_s, seed=1)
    again = simulate(sched, inst, arrivals="poisson", rate=0.2 / ref.period_s, seed=1)
    assert low == again
    assert low.throughput_rps == pytest.approx(0.2 / ref.period_s, rel=0.3)
    assert low.p50_s < 1.5 * ref.latency_s  # light load: little queueing
    times = [0.5 * i for i in range(200)]
    tr = simulate(sched, inst, arrivals=times)
    assert tr.arrival_s == tuple(times)
    assert max(tr.latency_s) == pytest.approx(ref.latency_s)
    with pytest.raises(InputError, match="rate"):
        simulate(sched, inst, arrivals="poisson")
    with pytest.raises(InputError, match="arrival trace has 3 times"):
        simulate(sched, inst, arrivals=[0.0, 1.0, 2.0])
    with pytest.raises(InputError, match="arrivals must be"):
        simulate(sched, inst, arrivals="bursty")


def test_noise_is_seeded_and_unbiased():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    sched = schedule(plan, inst, 200)
    a = simulate(sched, inst, noise=0.1, seed=3)
    b = simulate(sched, inst, noise=0.1, seed=3)
    c = simulate(sched, inst, noise=0.1, seed=4)
    assert a == b and a != c
    base = simulate(sched, inst)
    assert a.mean_latency_s == pytest.approx(base.mean_latency_s, rel=0.15)


def test_result_summary_and_trace_events():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    res = simulate(schedule(plan, inst, 10), inst)
    assert isinstance(res, SimResult)
    d = res.to_dict()
    assert d["requests"] == 10 and len(d["events"]) == len(res.events)
    computes = [e for e in res.events if e.kind == "compute"]
    assert len(computes) == 20
    for dev in ("a", "b"):  # a device never runs two things at once
        evs = sorted((e for e in computes if e.resource == dev), key=lambda e: e.start_s)
        assert all(x.end_s <= y.start_s + 1e-12 for x, y in itertools.pairwise(evs))
    assert 0 < res.utilisation["b"] <= 1.0
    assert res.max_queue["b"] >= 1


def test_errors_name_the_problem():
    inst = tiny_instance()
    other = make_instance([{"x": 0.1}] * 4, [1] * 4, [1] * 4, 1, [Device("x", 10)], [], "x")
    sched = schedule(plan_of(inst, [Stage(0, 3, ("b",))]), inst, 2)
    with pytest.raises(InputError, match="device 'a'"):
        simulate(sched, other)
    with pytest.raises(InputError, match="noise"):
        simulate(sched, inst, noise=-1)
    isolated = make_instance(
        [{"a": 0.1, "b": 0.1}], [1], [1], 1, [Device("a", 10), Device("b", 10)], [], "a"
    )
    with pytest.raises(InputError, match="no path"):
        simulate(schedule(plan_of(isolated, [Stage(0, 0, ("b",))]), isolated, 1), isolated)


def test_steady_period_definition():
    assert steady_period([1.0, 2.0, 3.0]) == 1.0
    c = [0.0] * 2 + [float(i) for i in range(10)] + [100.0] * 2  # fill/drain outliers trimmed
    assert steady_period(c) == pytest.approx(1.0, rel=0.2)
    assert math.isinf(steady_period([]))


def test_full_mesh_helper_unused_guard():
    assert len(full_mesh("ab")) == 2


def test_steady_period_counts_tied_bursts():
    """Four replicas finishing together every second: 4 requests/s, not more."""
    c = [float(t) for t in range(1, 16) for _ in range(4)]  # 60 completions in bursts of 4
    assert steady_period(c) == pytest.approx(0.25, rel=0.02)


def test_identical_replicas_match_reference():
    """One stage on four identical replicas (PICO-style data parallelism): bursts of 4."""
    names = ["a", "b", "c", "d"]
    devs = [Device(n, 10**9) for n in names]
    inst = make_instance(
        [{n: 0.1 for n in names}] * 2, [1] * 2, [10, 10], 10, devs, full_mesh(names, 1e6, 0.0), "a"
    )
    plan = plan_of(inst, [Stage(0, 1, tuple(names))])
    ref = evaluate(inst, plan.stages)
    res = simulate(schedule(plan, inst, 60), inst)
    # completions come in bursts of 4: the rank regression errs by ~1 % at 60 requests
    assert res.period_s == pytest.approx(ref.period_s, rel=0.02)


@pytest.mark.parametrize("seed", range(6))
def test_busy_time_per_resource_matches_reference(seed):
    """Per request, every device's and every link's busy seconds equal evaluate.busy_times."""
    from coinfer.core.evaluate import busy_times

    inst = random_chain_instance(seed, pieces=6, devices=5, direct=seed % 2 == 0)
    plan = random_plan(inst, seed)
    dev_ref, link_ref = busy_times(inst, plan.stages)
    res = simulate(schedule(plan, inst, 10), inst)
    busy: dict[str, float] = {}
    for e in res.events:
        busy[e.resource] = busy.get(e.resource, 0.0) + e.duration_s
    for d, t in dev_ref.items():
        assert busy.get(d, 0.0) / 10 == pytest.approx(t, rel=1e-9)
    for (u, v), t in link_ref.items():
        assert busy.get(f"{u}->{v}", 0.0) / 10 == pytest.approx(t, rel=1e-9)


def test_dvfs_levels_slow_compute_and_change_energy():
    devs = [
        Device(
            "a",
            10**9,
            power_idle_w=1.0,
            power_active_w=5.0,
            power_transmit_w=0.5,
            dvfs_levels=(0.5, 1.0),
        ),
        Device(
            "b",
            10**9,
            power_idle_w=1.0,
            power_active_w=5.0,
            power_transmit_w=0.5,
            dvfs_levels=(0.5, 1.0),
        ),
    ]
    inst = make_instance(
        [{"a": 0.01, "b": 0.01}] * 2, [1] * 2, [100, 100], 100, devs, full_mesh("ab"), "a"
    )
    fast = plan_of(inst, [Stage(0, 0, ("a",)), Stage(1, 1, ("b",))])
    slow = plan_of(inst, [Stage(0, 0, ("a",), (0.5,)), Stage(1, 1, ("b",), (0.5,))])
    r_fast, r_slow = (simulate(schedule(p, inst, 1), inst) for p in (fast, slow))
    assert r_slow.latency_s[0] - r_fast.latency_s[0] == pytest.approx(0.02)  # two computes, each 2x
    assert r_slow.energy_j == pytest.approx(evaluate(inst, slow.stages).energy_j, rel=1e-9)
    assert r_slow.energy_j < r_fast.energy_j  # cubic power curve: half speed costs less energy
