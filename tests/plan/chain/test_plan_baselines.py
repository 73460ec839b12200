"""Baselines (single, even, memory) and split2: their definitions, pinned."""

from __future__ import annotations

import math

import pytest
from cost_oracle import oracle_fits, oracle_latency_s, oracle_period_s
from hand_instances import three_devices
from hypothesis import given
from hypothesis import strategies as st

from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InfeasibleError
from coinfer.plan.chain.baselines import largest_remainder, plan_even, plan_memory, plan_single
from coinfer.plan.chain.split2 import Split2Options, plan_split2
from coinfer.testing import random_instance


@given(total=st.integers(1, 200), weights=st.lists(st.integers(1, 10**12), min_size=1, max_size=20))
def test_largest_remainder_properties(total: int, weights: list[int]) -> None:
    if total < len(weights):
        return
    sizes = largest_remainder(total, weights)
    assert sum(sizes) == total
    assert all(s >= 1 for s in sizes)
    for i in range(len(weights)):  # monotone: more weight, never fewer items
        for j in range(len(weights)):
            if weights[i] > weights[j]:
                assert sizes[i] >= sizes[j]
    quota = [total * w / sum(weights) for w in weights]
    if min(quota) >= 1:  # no share had to be raised to one: each is within one of its quota
        assert all(abs(s - q) < 1 for s, q in zip(sizes, quota, strict=True))


def test_largest_remainder_example() -> None:
    # 10 pieces over 8/4/4 GB: quotas 5, 2.5, 2.5 -> remainders tie, earlier entry wins
    assert largest_remainder(10, [8, 4, 4]) == [5, 3, 2]
    # a tiny device still gets one piece (taken from the largest share)
    assert largest_remainder(4, [100, 100, 1]) == [2, 1, 1]


def test_even_counts_differ_by_at_most_one_in_cluster_order() -> None:
    inst = random_instance(2, 11, 4)
    got = plan_even(inst, "throughput")
    sizes = [s.last - s.first + 1 for s in got.stages]
    assert sizes == [3, 3, 3, 2]
    assert [s.devices[0] for s in got.stages] == list(inst.device_names)


def test_memory_split_follows_memory() -> None:
    devs = [Device("a", 8_000), Device("b", 2_000), Device("c", 6_000)]
    links = [Link(u, v, 1e6, 0.0) for u in "abc" for v in "abc" if u != v]
    inst = make_instance(
        [{"a": 1.0, "b": 1.0, "c": 1.0}] * 8, [100] * 8, [1] * 8, 1, devs, links, "a"
    )
    got = plan_memory(inst, "latency")
    assert [(s.devices[0], s.last - s.first + 1) for s in got.stages] == [
        ("a", 4),
        ("b", 1),
        ("c", 3),
    ]


def test_memory_baseline_reports_overflow() -> None:
    devs = [Device("a", 1_000), Device("b", 999)]  # 2 pieces each by memory; b's pair is 1000 bytes
    links = [Link("a", "b", 1e6, 0.0), Link("b", "a", 1e6, 0.0)]
    inst = make_instance(
        [{"a": 1.0, "b": 1.0}] * 4, [100, 100, 100, 900], [1] * 4, 1, devs, links, "a"
    )
    with pytest.raises(
        InfeasibleError, match=r"memory: device 'b' needs 1000 bytes .* \(1 bytes short\)"
    ):
        plan_memory(inst, "latency")


def test_single_picks_the_best_device() -> None:
    inst = three_devices()  # the table in its docstring
    lat = plan_single(inst, "latency")
    assert lat.stages == (Stage(0, 1, ("mid",)),)
    assert lat.predicted.latency_s == pytest.approx(0.0401, rel=1e-12)
    thr = plan_single(inst, "throughput")
    assert thr.stages == (Stage(0, 1, ("fast",)),)
    assert thr.predicted.period_s == pytest.approx(0.0251, rel=1e-12)


def test_single_infeasible_names_largest_device() -> None:
    inst = random_instance(3, 6, 3, tight_memory=True)
    with pytest.raises(InfeasibleError, match="bytes short"):
        plan_single(inst, "latency")


def test_split2_on_a_hand_checked_instance() -> None:
    # keeping piece 0 on the slow source costs 0.05 s more compute and saves 90 kB of input
    # (9 ms): never worth it here, so split2 agrees with the single-device table
    inst = three_devices()
    assert plan_split2(inst, "latency").predicted.latency_s == pytest.approx(0.0401, rel=1e-12)
    assert plan_split2(inst, "throughput").predicted.period_s == pytest.approx(0.0251, rel=1e-12)


def test_split2_is_the_best_source_server_split() -> None:
    """Against an independent enumeration of its space, scored by the cost oracle."""
    inst = random_instance(12, 7, 4, sparse_links=True)
    src, P = inst.source, inst.num_pieces
    cands = [(Stage(0, P - 1, (src,)),)]
    for s in inst.device_names:
        if s != src:
            cands.append((Stage(0, P - 1, (s,)),))
            cands += [(Stage(0, c, (src,)), Stage(c + 1, P - 1, (s,))) for c in range(P - 1)]
    fits = [c for c in cands if oracle_fits(inst, c)]
    for objective, score in (("latency", oracle_latency_s), ("throughput", oracle_period_s)):
        got = plan_split2(inst, objective)
        best = min(score(inst, c) for c in fits)
        assert math.isclose(got.predicted.value(objective), best, rel_tol=1e-9)
        assert len(got.stages) <= 2 and got.stages[0].devices[0] in (src, got.details["server"])


def test_split2_fixed_server() -> None:
    inst = random_instance(12, 7, 4)
    got = plan_split2(inst, "latency", Split2Options(server="d2"))
    assert set(got.devices) <= {"d0", "d2"}
