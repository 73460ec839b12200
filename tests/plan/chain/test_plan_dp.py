"""dp is exact: equal to brute force on hundreds of seeded random instances, every code path."""

from __future__ import annotations

import math

import numpy as np
import pytest

import coinfer.plan.chain._dp_period as period_mod
import coinfer.plan.chain._dp_sum as sum_mod
from coinfer.core.evaluate import evaluate, validate_stages
from coinfer.core.instance import Device, Link, make_instance
from coinfer.errors import InfeasibleError
from coinfer.plan.chain.brute import BruteOptions, plan_brute
from coinfer.plan.chain.dp import DPOptions, plan_dp, select_devices
from coinfer.testing import random_instance


def _both(inst, objective):
    try:
        ref = plan_brute(inst, objective, BruteOptions(max_plans=5_000_000))
    except InfeasibleError:
        ref = None
    try:
        got = plan_dp(inst, objective)
    except InfeasibleError:
        got = None
    return ref, got


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("tight", [False, True])
def test_dp_equals_brute(objective: str, tight: bool, monkeypatch) -> None:
    """~100 instances per (objective, memory) cell, dense and sparse links, up to 12 x 4."""
    calls = {"bnb": 0}
    real_bnb = period_mod._bnb_period

    def counting_bnb(*args):
        calls["bnb"] += 1
        return real_bnb(*args)

    monkeypatch.setattr(period_mod, "_bnb_period", counting_bnb)
    rng = np.random.default_rng(100 + tight + 2 * (objective == "latency"))
    feasible = infeasible = 0
    for k in range(100):
        pieces = int(rng.integers(1, 13)) if k % 4 == 0 else int(rng.integers(1, 9))
        inst = random_instance(
            rng, pieces, int(rng.integers(1, 5)), tight_memory=tight, sparse_links=k % 2 == 1
        )
        ref, got = _both(inst, objective)
        assert (ref is None) == (got is None), f"feasibility differs on {inst}"
        if ref is None:
            infeasible += 1
            continue
        feasible += 1
        validate_stages(inst, got.stages)
        assert got.details["exact"] is True
        a, b = got.predicted.value(objective), ref.predicted.value(objective)
        assert math.isclose(a, b, rel_tol=1e-9), f"dp {a} != brute {b} on {inst}: {got} vs {ref}"
    assert feasible >= (40 if tight else 90)
    if tight:
        assert infeasible > 0  # the tight cell really exercises the memory limit
    if objective == "throughput":
        assert calls["bnb"] > 0  # shared-link branch and bound was exercised (sparse instances)


def test_dp_energy_with_dvfs_equals_brute() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(40):
        inst = random_instance(rng, int(rng.integers(1, 7)), int(rng.integers(1, 4)), power=True,
                               sparse_links=bool(rng.random() < 0.5))  # fmt: skip
        ref, got = _both(inst, "energy")
        assert (ref is None) == (got is None)
        if ref is None:
            continue
        checked += 1
        assert math.isclose(got.predicted.energy_j, ref.predicted.energy_j, rel_tol=1e-9)
    assert checked > 30


def _reuse_tempting() -> object:
    """Device a is fast on pieces 0 and 2, b on piece 1: the relaxation wants a -> b -> a."""
    devs = [Device("a", 10**9), Device("b", 10**9), Device("c", 10**9)]
    links = [Link(u, v, 1e9, 1e-4) for u in "abc" for v in "abc" if u != v]
    times = [
        {"a": 0.001, "b": 0.05, "c": 0.02},
        {"a": 0.05, "b": 0.001, "c": 0.02},
        {"a": 0.001, "b": 0.05, "c": 0.02},
    ]
    return make_instance(times, [1, 1, 1], [1000, 1000, 10], 1000, devs, links, "a", name="reuse")


def test_latency_branches_when_relaxation_reuses_a_device(monkeypatch) -> None:
    calls = {"n": 0}
    real = sum_mod.relaxed_to_go

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(sum_mod, "relaxed_to_go", counting)
    inst = _reuse_tempting()
    got = plan_dp(inst, "latency")
    ref = plan_brute(inst, "latency")
    assert calls["n"] > 1  # the relaxed path reused 'a', so the search branched
    assert got.details["exact"] is True
    assert math.isclose(got.predicted.latency_s, ref.predicted.latency_s, rel_tol=1e-12)
    assert len({d for s in got.stages for d in s.devices}) == len(got.stages)


def test_reuse_search_past_its_budget_still_plans() -> None:
    inst = _reuse_tempting()
    got = plan_dp(inst, "latency", DPOptions(reuse_branch_limit=0))
    assert got.details["exact"] is False
    validate_stages(inst, got.stages)


def test_throughput_prefers_low_latency_among_optimal() -> None:
    inst = random_instance(3, 8, 3)
    got = plan_dp(inst, "throughput")
    assert got.details["least_latency_among_optimal"] is True
    ref = plan_brute(inst, "throughput")
    assert math.isclose(got.predicted.period_s, ref.predicted.period_s, rel_tol=1e-12)
    # no other period-optimal plan has lower latency
    from coinfer.plan.chain.brute import _candidates

    for stages in _candidates(inst, inst.device_names, False, False):
        m = evaluate(inst, stages)
        if math.isclose(m.period_s, got.predicted.period_s, rel_tol=1e-12):
            assert m.latency_s >= got.predicted.latency_s * (1 - 1e-12)


def test_beyond_exact_reach_uses_source_and_fastest() -> None:
    inst = random_instance(9, 10, 7)
    names, complete = select_devices(inst, "throughput", 4)
    assert not complete and len(names) == 4 and inst.source in names
    got = plan_dp(inst, "throughput", DPOptions(max_exact_devices=4))
    assert got.details["exact"] is False
    assert set(got.devices) <= set(names)
    full = plan_dp(inst, "throughput")
    assert full.details["exact"] is True
    assert got.predicted.period_s >= full.predicted.period_s * (1 - 1e-12)


def test_infeasible_names_device_and_bytes_short() -> None:
    devs = [Device("a", 100), Device("b", 150)]
    links = [Link("a", "b", 1e6, 0.0), Link("b", "a", 1e6, 0.0)]
    inst = make_instance([{"a": 1.0, "b": 1.0}] * 3, [90, 90, 90], [1, 1, 1], 1, devs, links, "a")
    for objective in ("latency", "throughput"):
        with pytest.raises(InfeasibleError, match=r"'a'.*\d+ bytes short"):
            plan_dp(inst, objective)


def test_unreachable_source_is_infeasible() -> None:
    """No link back to the source: no plan can return the output, whatever the memory."""
    devs = [Device("a", 10**6), Device("b", 10**6)]
    inst = make_instance([{"a": 1.0, "b": 0.1}], [1], [1], 1, devs, [Link("a", "b", 1e6, 0.0)], "a")
    got = plan_dp(inst, "latency")  # the source can still do everything itself
    assert got.devices == ("a",)


def test_unreachable_return_path_is_explained() -> None:
    """Only 'b' can hold the model but it has no link back to the source: say so, not 'memory'."""
    devs = [Device("a", 10), Device("b", 10**6)]
    inst = make_instance(
        [{"a": 1.0, "b": 0.1}], [500], [1], 1, devs, [Link("a", "b", 1e6, 0.0)], "a"
    )
    for objective in ("latency", "throughput"):
        with pytest.raises(
            InfeasibleError, match=r"reaches the source 'a': no route for 'b' -> 'a'"
        ):
            plan_dp(inst, objective)


def test_energy_plan_uses_dvfs_levels() -> None:
    from pathlib import Path

    from coinfer.core.instance import load_instance

    inst = load_instance(
        Path(__file__).resolve().parents[3] / "examples" / "instances" / "battery_relay.json"
    )
    got = plan_dp(inst, "energy")
    ref = plan_brute(inst, "energy")
    assert math.isclose(got.predicted.energy_j, ref.predicted.energy_j, rel_tol=1e-9)
    assert any(s.freqs is not None and min(s.freqs) < 1.0 for s in got.stages)


def test_infeasible_message_is_not_fooled_by_the_greedy_witness() -> None:
    """Memory fits (100-byte device takes piece 0, 120-byte device the rest) but no route back."""
    from coinfer.plan._shared import infeasible_message, memory_feasible

    devs = [Device("a", 120), Device("b", 100), Device("s", 1)]
    inst = make_instance([{"a": 1.0, "b": 1.0, "s": 1.0}] * 3, [100, 60, 60], [1] * 3, 1, devs,
                         [Link("s", "a", 1e6, 0.0), Link("s", "b", 1e6, 0.0), Link("b", "a", 1e6, 0.0)], "s")  # fmt: skip
    assert memory_feasible(inst, ["a", "b"])
    assert not memory_feasible(inst, ["a"])
    assert "reaches the source 's'" in infeasible_message(inst, "x")
