"""coinfer.simulate.oracle: segments, instance_at, a fixed plan vs an oracle, replayed timelines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from coinfer.core.instance import Device, Link, Medium, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.plan.chain.brute import plan_brute
from coinfer.plan.chain.dp import plan_dp
from coinfer.simulate import (
    fixed_plan_throughput,
    instance_at,
    oracle_throughput,
    replay_plan_timeline,
    segments,
    steady_throughput,
)
from coinfer.testing import random_instance


def brute(inst):
    return plan_brute(inst, "throughput")


def dp(inst):
    return plan_dp(inst, "throughput")


def random_traces(rng: np.random.Generator, inst, links: int, horizon_s: float) -> dict:
    """Traces on ``links`` random directed links: levels 0.05x-3x the link's bandwidth, a
    breakpoint every 1.5-4 s (drawn from a few levels, so equal neighbours occur)."""
    out = {}
    picks = rng.choice(len(inst.links), size=links, replace=False)
    for j in picks:
        lk = inst.links[int(j)]
        t, pts = 0.0, []
        while t < horizon_s:
            pts.append((t, lk.bandwidth_Bps * float(rng.choice([0.05, 0.3, 1.0, 3.0]))))
            t += float(rng.uniform(1.5, 4.0))
        out[(lk.src, lk.dst)] = pts
    return out


def two_device_instance(bandwidth_Bps: float = 1e6):
    """Source ``a`` (slow) and a fast ``b`` behind one link: offloading pays only on a fast link."""
    devs = [Device("a", 10**9), Device("b", 10**9)]
    links = [Link("a", "b", bandwidth_Bps, 0.001), Link("b", "a", bandwidth_Bps, 0.001)]
    times = [{"a": 0.04, "b": 0.01}, {"a": 0.04, "b": 0.01}]
    return make_instance(times, [1000, 1000], [200_000, 1000], 200_000, devs, links, "a")


# ----- segments --------------------------------------------------------------------------------


def _brute_segments(traces: dict, horizon_s: float, step: float) -> list[tuple[float, dict]]:
    """Maximal runs of equal bandwidths, found by evaluating every trace on a fine grid."""

    def at(pts, t):
        vals = [b for s, b in pts if s <= t]
        return vals[-1] if vals else pts[0][1]

    runs: list[tuple[float, dict]] = []
    for i in range(round(horizon_s / step)):
        t = i * step
        bw = {f"{u}->{v}": at(pts, t) for (u, v), pts in traces.items()}
        if not runs or runs[-1][1] != bw:
            runs.append((t, bw))
    return runs


@pytest.mark.parametrize("seed", range(6))
def test_segments_match_a_brute_force_scan(seed):
    rng = np.random.default_rng(seed)
    horizon = 12.0
    traces = {}
    for k in range(3):
        # breakpoints on a 0.25 s grid, a few levels (so some breakpoints change nothing)
        times = sorted(set(rng.choice(np.arange(0.25, 16.0, 0.25), size=8).tolist()))
        start = float(rng.choice([0.0, 0.5, 1.0]))  # before the first point, its value holds
        pts = [(start, float(rng.choice([1e6, 2e6])))]
        pts += [(float(t), float(rng.choice([1e6, 2e6, 5e6]))) for t in times if t > start]
        traces[(f"d{k}", f"d{k + 1}")] = pts
    segs = segments(traces, horizon)
    runs = _brute_segments(traces, horizon, step=0.05)
    assert [(s.start_s, dict(s.bandwidth_Bps)) for s in segs] == [
        (pytest.approx(t), bw) for t, bw in runs
    ]
    assert segs[0].start_s == 0.0 and segs[-1].end_s == horizon
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(segs))
    assert all(a.bandwidth_Bps != b.bandwidth_Bps for a, b in itertools.pairwise(segs))


def test_segments_accept_cluster_traces_and_no_traces():
    from coinfer.cluster.types import BandwidthTrace

    tr = BandwidthTrace((0.0, 2.0, 5.0), (1e6, 3e6, 3e6))
    segs = segments({"a->b": tr, ("b", "a"): [(0.0, 7e6)]}, 10.0)
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 2.0), (2.0, 10.0)]
    assert segs[1].bandwidth_Bps == {"a->b": 3e6, "b->a": 7e6}
    assert [(s.start_s, s.end_s, dict(s.bandwidth_Bps)) for s in segments({}, 3.0)] == [
        (0.0, 3.0, {})
    ]


@pytest.mark.parametrize(
    ("traces", "horizon", "match"),
    [
        ({("a", "b"): [(0.0, 1e6)]}, 0.0, "horizon"),
        ({("a", "b"): [(1.0, 1e6), (0.5, 2e6)]}, 5.0, "increasing"),
        ({("a", "b"): [(0.0, 0.0)]}, 5.0, "bandwidths > 0"),
        ({("a", "b"): []}, 5.0, "a', 'b'"),
    ],
)
def test_segments_bad_input_is_one_named_line(traces, horizon, match):
    with pytest.raises(InputError, match=match):
        segments(traces, horizon)


# ----- instance_at ------------------------------------------------------------------------------


def test_instance_at_sets_only_the_traced_links_and_media():
    devs = [Device(n, 10**9) for n in "abc"]
    links = [Link("a", "b", 1e6, 0.001), Link("b", "a", 1e6, 0.001)]
    inst = make_instance(
        [{"a": 0.01, "b": 0.01, "c": 0.01}],
        [1],
        [1000],
        1000,
        devs,
        links,
        "a",
        media=[Medium("air", ("a", "b", "c"), 2e6, 0.002)],
    )
    traces = {"a->b": [(0.0, 5e6), (3.0, 9e6)], "air": [(0.0, 2e6), (1.0, 4e6)]}
    at = instance_at(inst, traces, 3.5)
    assert at.link_by_pair[("a", "b")].bandwidth_Bps == 9e6
    assert at.link_by_pair[("b", "a")].bandwidth_Bps == 1e6  # untraced direction unchanged
    assert at.medium_by_name["air"].bandwidth_Bps == 4e6
    assert at.link_by_pair[("a", "c")].bandwidth_Bps == 4e6  # the medium's hops follow it
    assert at.link_by_pair[("a", "b")].latency_s == 0.001
    assert inst.link_by_pair[("a", "b")].bandwidth_Bps == 1e6  # the input is not mutated
    assert instance_at(inst, traces, 0.5).link_by_pair[("a", "b")].bandwidth_Bps == 5e6
    with pytest.raises(InputError, match=r"'c->a'.*no such link"):
        instance_at(inst, {"c->a": [(0.0, 1e6)]}, 0.0)  # c->a is a hop of the medium only


# ----- fixed plan vs oracle -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_constant_trace_oracle_equals_the_fixed_optimal_plan(seed):
    inst = random_instance(seed, 4, 3)
    lk = inst.links[seed % len(inst.links)]
    traces = {(lk.src, lk.dst): [(0.0, lk.bandwidth_Bps * 0.5)]}
    horizon = 30.0
    res = oracle_throughput(inst, traces, horizon, brute)
    assert len(res.segments) == 1 and res.switches == 0
    best = brute(instance_at(inst, traces, 0.0))
    assert res.segments[0].plan == " | ".join(str(s) for s in best.stages)
    steady = steady_throughput(instance_at(inst, traces, 0.0), best)
    assert res.mean_throughput_rps == pytest.approx(steady, rel=1e-12)
    # the same plan run through the whole horizon: equal but for the pipeline fill
    fixed = fixed_plan_throughput(instance_at(inst, traces, 0.0), best, traces, horizon)
    assert fixed == pytest.approx(res.mean_throughput_rps, rel=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_oracle_beats_every_fixed_plan_on_random_small_instances(seed):
    rng = np.random.default_rng(100 + seed)
    inst = random_instance(rng, 4, 3)
    horizon = 12.0
    traces = random_traces(rng, inst, links=2, horizon_s=horizon)
    oracle = oracle_throughput(inst, traces, horizon, brute)
    candidates = {" | ".join(map(str, brute(inst).stages)): brute(inst)}  # planned on nominal
    for seg in segments(traces, horizon):
        p = brute(instance_at(inst, traces, seg.start_s))
        candidates[" | ".join(map(str, p.stages))] = p
    for d in inst.device_names:  # every single-device plan
        p = brute(inst)
        candidates[d] = type(p)("single", "throughput", (Stage(0, 3, (d,)),), p.predicted)
    for name, p in candidates.items():
        fixed = fixed_plan_throughput(inst, p, traces, horizon)
        # 2 %: the simulator's steady state may differ that much from the reference model the
        # planner optimises (contention on relay paths); a real win of a fixed plan is larger
        assert fixed <= oracle.mean_throughput_rps * 1.02, (name, fixed, oracle.mean_throughput_rps)


def test_oracle_gains_where_the_best_plan_changes_and_pays_its_switches():
    # the 200 kB input takes 200 ms over 1 MB/s, more than computing all on ``a`` (80 ms);
    # over 100 MB/s, running on ``b`` (20 ms) wins
    inst = two_device_instance(1e6)
    traces = {("a", "b"): [(0.0, 1e6), (5.0, 100e6), (15.0, 1e6)]}
    horizon = 20.0
    fixed = fixed_plan_throughput(inst, dp(inst), traces, horizon)
    oracle = oracle_throughput(inst, traces, horizon, dp)
    assert [s.switched for s in oracle.segments] == [False, True, True]
    assert oracle.mean_throughput_rps > 1.3 * fixed
    paused = oracle_throughput(inst, traces, horizon, dp, switch_pause_s=1.0)
    lost = sum(s.throughput_rps for s in paused.segments if s.switched) * 1.0
    assert paused.mean_throughput_rps == pytest.approx(oracle.mean_throughput_rps - lost / horizon)
    assert paused.to_dict()["switches"] == 2 and len(paused.to_dict()["segments"]) == 3


@pytest.mark.parametrize("pause", [0.0, 0.3, 1.0, 4.0])
def test_switch_aware_oracle_is_the_best_sequence_of_the_planners_plans(pause):
    """Against every sequence of candidate plans (brute force): the switch-aware oracle serves
    the most, never less than the planner's oracle, and skips switches that do not repay."""
    inst = two_device_instance(1e6)
    traces = {("a", "b"): [(0.0, 1e6), (5.0, 100e6), (5.4, 1e6), (10.0, 100e6), (16.0, 1e6)]}
    horizon = 20.0
    aware = oracle_throughput(inst, traces, horizon, dp, pause, choose="switch_aware")
    planner = oracle_throughput(inst, traces, horizon, dp, pause)
    segs = segments(traces, horizon)
    by_text = {str(p): p for p in (dp(instance_at(inst, traces, s.start_s)) for s in segs)}
    plans = list(by_text)
    assert len(plans) == 2
    rate = {
        (i, t): steady_throughput(instance_at(inst, traces, s.start_s), by_text[t])
        for i, s in enumerate(segs)
        for t in plans
    }
    best = 0.0
    for seq in itertools.product(plans, repeat=len(segs)):
        # a change at a segment's start pauses [start, start + pause); windows may overlap
        windows = [
            (s.start_s, s.start_s + pause) for i, s in enumerate(segs) if i and seq[i] != seq[i - 1]
        ]
        merged: list[list[float]] = []
        for a, b in windows:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        served = 0.0
        for i, (s, t) in enumerate(zip(segs, seq, strict=True)):
            lost = sum(max(0.0, min(s.end_s, b) - max(s.start_s, a)) for a, b in merged)
            served += rate[(i, t)] * (s.duration_s - lost)
        best = max(best, served)
    assert aware.mean_throughput_rps == pytest.approx(best / horizon, rel=1e-12)
    assert aware.mean_throughput_rps >= planner.mean_throughput_rps - 1e-12
    if pause >= 1.0:  # 0.4 s of a faster plan cannot repay a second of pause
        assert aware.segments[1].plan == aware.segments[0].plan
        assert aware.switches < planner.switches
    # a pause longer than the segment it starts in carries into the next one
    assert sum(r.pause_s for r in planner.segments) == pytest.approx(min(pause, 0.4) + 3 * pause)


def test_a_pause_longer_than_its_segment_spills_into_the_next():
    inst = two_device_instance(1e6)
    # 100 -> 90 MB/s at 5.3 s changes the bandwidths but not the plan: no second switch
    traces = {("a", "b"): [(0.0, 1e6), (5.0, 100e6), (5.3, 90e6)]}
    res = oracle_throughput(inst, traces, 10.0, dp, switch_pause_s=1.0)
    assert [r.switched for r in res.segments] == [False, True, False]
    assert [r.pause_s for r in res.segments] == pytest.approx([0.0, 0.3, 0.7])
    served = sum(r.throughput_rps * (r.end_s - r.start_s - r.pause_s) for r in res.segments)
    assert res.mean_throughput_rps == pytest.approx(served / 10.0)


def test_oracle_rejects_a_trace_on_a_missing_link():
    inst = two_device_instance()
    with pytest.raises(InputError, match=r"\('a', 'zz'\).*no such link"):
        oracle_throughput(inst, {("a", "zz"): [(0.0, 1e6)]}, 5.0, dp)
    with pytest.raises(InputError, match="switch pause"):
        oracle_throughput(inst, {}, 5.0, dp, switch_pause_s=-1)
    with pytest.raises(InputError, match="choose"):
        oracle_throughput(inst, {}, 5.0, dp, choose="greedy")


# ----- replayed timelines -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_replayed_timeline_of_one_plan_equals_fixed_plan_throughput(seed):
    rng = np.random.default_rng(200 + seed)
    inst = random_instance(rng, 4, 3)
    horizon = 10.0
    traces = random_traces(rng, inst, links=2, horizon_s=horizon)
    p = dp(inst)
    fixed = fixed_plan_throughput(inst, p, traces, horizon)
    # restating the plan in use is not a switch, so the pause never applies
    rep = replay_plan_timeline(inst, traces, [(0.0, p), (4.0, p)], horizon, switch_pause_s=2.0)
    assert rep.mean_throughput_rps == fixed
    assert len(rep.intervals) == 1
    assert sum(n * rep.bin_s for n in rep.throughput_rps) == pytest.approx(rep.completed)


def test_replayed_switches_follow_the_trace_and_pay_the_pause():
    inst = two_device_instance(1e6)
    traces = {("a", "b"): [(0.0, 1e6), (5.0, 100e6), (15.0, 1e6)]}
    horizon = 20.0
    slow = dp(inst)
    fast = dp(instance_at(inst, traces, 6.0))
    assert slow.stages != fast.stages
    timeline = [(0.0, slow), (5.0, fast), (15.0, slow)]
    rep = replay_plan_timeline(inst, traces, timeline, horizon)
    fixed = fixed_plan_throughput(inst, slow, traces, horizon)
    oracle = oracle_throughput(inst, traces, horizon, dp)
    assert fixed < rep.mean_throughput_rps <= oracle.mean_throughput_rps * 1.001
    assert rep.mean_throughput_rps > 0.97 * oracle.mean_throughput_rps  # only refills lost
    # per-second throughput shows the fast window
    mid = np.mean(rep.throughput_rps[6:14])
    assert mid > 1.5 * np.mean(rep.throughput_rps[1:4])
    paused = replay_plan_timeline(inst, traces, timeline, horizon, switch_pause_s=1.0)
    assert paused.mean_throughput_rps < rep.mean_throughput_rps
    assert [iv["pause_s"] for iv in paused.intervals] == [0.0, 1.0, 1.0]
    assert paused.throughput_rps[5] == 0.0  # nothing completes during the pause
    assert math.isclose(paused.to_dict()["mean_throughput_rps"], paused.mean_throughput_rps)


@pytest.mark.parametrize(
    ("timeline", "match"),
    [("empty", "empty"), ("late", "must start at 0"), ("backwards", "non-decreasing")],
)
def test_replay_bad_timeline_is_one_named_line(timeline, match):
    inst = two_device_instance()
    p = dp(inst)
    tl = {"empty": [], "late": [(1.0, p)], "backwards": [(0.0, p), (3.0, p), (2.0, p)]}[timeline]
    with pytest.raises(InputError, match=match):
        replay_plan_timeline(inst, {}, tl, 5.0)


def test_replay_routes_each_plan_on_the_network_it_was_planned_for():
    """``route_on="switch"``: a plan made while a->b is slow sends a->b traffic through c."""
    devs = [Device(n, 10**9) for n in "abc"]
    links = [Link(u, v, 10e6, 0.001) for u in "abc" for v in "abc" if u != v]
    inst = make_instance([{"a": 1.0, "b": 0.01, "c": 1.0}], [1], [1000], 100_000, devs, links, "a")
    traces = {("a", "b"): [(0.0, 0.1e6)]}  # nominal 10 MB/s, really 0.1 MB/s all along
    p = dp(instance_at(inst, traces, 0.0))
    assert p.stages[0].devices == ("b",)
    as_priced = replay_plan_timeline(inst, traces, [(0.0, p)], 10.0, route_on="switch")
    nominal = replay_plan_timeline(inst, traces, [(0.0, p)], 10.0)
    assert nominal.mean_throughput_rps == fixed_plan_throughput(inst, p, traces, 10.0)
    assert nominal.mean_throughput_rps < 1.5  # 1 s per input over the slow direct link
    assert as_priced.mean_throughput_rps > 10 * nominal.mean_throughput_rps
    with pytest.raises(InputError, match="route_on"):
        replay_plan_timeline(inst, traces, [(0.0, p)], 10.0, route_on="best")


def test_replay_routed_at_switches_takes_a_reroute_to_the_same_stages():
    """A live controller re-plans to the *same stages* to route around a link that fell: with
    ``route_on="switch"`` that entry is a switch onto the routes of its time."""
    devs = [Device(n, 10**9) for n in "abc"]
    links = [Link(u, v, 10e6, 0.001) for u in "abc" for v in "abc" if u != v]
    inst = make_instance([{"a": 1.0, "b": 0.01, "c": 1.0}], [1], [1000], 100_000, devs, links, "a")
    traces = {("a", "b"): [(0.0, 10e6), (5.0, 0.1e6)]}  # a->b falls 100x at 5 s
    p = dp(inst)
    assert p.stages[0].devices == ("b",)
    stay = replay_plan_timeline(inst, traces, [(0.0, p)], 20.0, route_on="switch")
    rerouted = replay_plan_timeline(inst, traces, [(0.0, p), (6.0, p)], 20.0, route_on="switch")
    assert [iv["start_s"] for iv in rerouted.intervals] == [0.0, 6.0]
    # after 6 s the inputs go a->c->b at 10 MB/s instead of crawling over a->b
    assert rerouted.mean_throughput_rps > 2 * stay.mean_throughput_rps
    same = replay_plan_timeline(inst, traces, [(0.0, p), (6.0, p)], 20.0)  # routed on inst
    assert len(same.intervals) == 1 and same.mean_throughput_rps == stay_on_instance(
        inst, p, traces
    )


def stay_on_instance(inst, p, traces):
    return fixed_plan_throughput(inst, p, traces, 20.0)
