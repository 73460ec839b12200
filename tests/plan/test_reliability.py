"""Reliability-aware planning: the expected-goodput model on hand-computed cases, and the
planner against exhaustive enumeration of replicated plans on small random instances."""

from __future__ import annotations

import dataclasses as dc
import math

import numpy as np
import pytest
from plan_space import all_plans

from coinfer.core.instance import Device, Instance, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.plan import plan
from coinfer.plan.reliability import (
    dependencies,
    dp_replan,
    expected_goodput,
    failure_rates_per_h,
    plan_reliable,
)
from coinfer.testing import random_instance


def _with_rates(inst: Instance, devices: dict[str, float], links: dict | None = None) -> Instance:
    devs = tuple(dc.replace(d, failure_rate_per_h=devices.get(d.name, 0.0)) for d in inst.devices)
    return dc.replace(inst, devices=devs, link_failure_per_h=links or {})


def _line(times: dict[str, float], *, mem: int = 10**9) -> Instance:
    """One piece, devices named by ``times``, fully linked, source the first; tiny transfers so
    compute dominates."""
    names = list(times)
    devs = [Device(n, mem) for n in names]
    links = [Link(u, v, 1e9, 0.0) for u in names for v in names if u != v]
    return make_instance([times], [10], [1], 1, devs, links, names[0])


# ----- the model on cases worked by hand -------------------------------------------------------


def test_single_device_closed_form() -> None:
    """One device, rate 3.6/h = 0.001/s, repair 100 s, recovery 1 s: it fails 0.001/1.1 times
    a second and each failure loses the whole 100 s (nothing survives): G = X (1 - 0.1/1.1)."""
    inst = _with_rates(_line({"a": 0.01}), {"a": 3.6})
    g = expected_goodput(inst, (Stage(0, 0, ("a",)),), recovery_s=1.0, repair_s=100.0)
    assert g.throughput_rps == pytest.approx(100.0)
    assert g.goodput_rps == pytest.approx(100.0 * (1 - 0.1 / 1.1))
    (risk,) = g.risks
    assert risk.component == "a" and risk.critical and risk.degraded_rps == 0.0
    assert risk.loss_per_failure == pytest.approx(100.0 * 100.0)


def test_critical_failure_costs_recovery_then_the_survivor_plan() -> None:
    """Plan on b (fast), source a: b fails -> 1 s of nothing, then the re-plan on a alone at
    50 req/s until the repair 60 s after: loss = 100*1 + (100 - 50)*59 requests."""
    inst = _with_rates(_line({"a": 0.02, "b": 0.01}), {"b": 7.2})
    g = expected_goodput(inst, (Stage(0, 0, ("b",)),), recovery_s=1.0, repair_s=60.0)
    lam = 7.2 / 3600
    loss = 100.0 * 1 + 50.0 * 59
    assert g.risks[0].loss_per_failure == pytest.approx(loss, rel=1e-6)
    assert g.goodput_rps == pytest.approx(100.0 * (1 - lam / (1 + 60 * lam) * loss / 100.0))


def test_a_replica_survives_without_a_pause() -> None:
    """b and c replicate the stage (50 + 50 req/s); c failing leaves b alone at 50 for the
    repair time, with no recovery pause."""
    inst = _with_rates(_line({"a": 1.0, "b": 0.02, "c": 0.02}), {"c": 3.6})
    stages = (Stage(0, 0, ("b", "c")),)
    g = expected_goodput(inst, stages, recovery_s=5.0, repair_s=100.0)
    (risk,) = g.risks
    assert not risk.critical and risk.degraded_rps == pytest.approx(50.0, rel=1e-6)
    assert risk.loss_per_failure == pytest.approx(50.0 * 100.0, rel=1e-6)


def test_unused_parts_cost_nothing_and_link_pairs_fail_both_ways() -> None:
    inst = _with_rates(_line({"a": 0.02, "b": 0.01, "c": 0.5}), {"c": 100.0},
                       {("a", "b"): 1.0, ("b", "a"): 4.0, ("a", "c"): 9.0})  # fmt: skip
    assert failure_rates_per_h(inst) == {"c": 100.0, ("a", "b"): 4.0, ("a", "c"): 9.0}
    stages = (Stage(0, 0, ("b",)),)
    critical, redundant = dependencies(inst, stages)
    assert critical == {"a", "b", ("a", "b")} and redundant == {}
    g = expected_goodput(inst, stages)
    assert [r.component for r in g.risks] == ["a<->b"] and g.risks[0].rate_per_h == 4.0


def test_relays_are_critical() -> None:
    """a reaches c only through b: b relays, so b's failure stops a plan computing on c."""
    devs = [Device(n, 10**9) for n in "abc"]
    links = [Link(u, v, 1e6, 0.001) for u, v in ("ab", "ba", "bc", "cb")]
    inst = make_instance([{"a": 1.0, "b": 1.0, "c": 0.01}], [1], [1], 1, devs, links, "a")
    critical, _ = dependencies(inst, (Stage(0, 0, ("c",)),))
    assert {"a", "b", "c", ("a", "b"), ("b", "c")} <= critical


def test_no_rates_means_goodput_is_throughput_and_the_fastest_plain_plan() -> None:
    inst = random_instance(4, 5, 3)
    got = plan(inst, "reliable")
    fastest = min((plan(inst, a) for a in ("dp", "pico")), key=lambda p: p.predicted.period_s)
    assert got.predicted.period_s == pytest.approx(fastest.predicted.period_s)
    assert plan(inst, "reliable", pico_candidate=False).stages == plan(inst, "dp").stages
    g = expected_goodput(inst, got.stages)
    assert g.goodput_rps == g.throughput_rps and g.risks == ()


# ----- the planner ---------------------------------------------------------------------------


def test_avoids_a_device_that_fails_too_often() -> None:
    """b is twice as fast as a but fails after 30 s up on average (120/h) and a recovery takes
    60 s (as long as the repair): a cycle of 30 s up + 60 s down gives b's plan 100 x 30 / 90
    = 33 req/s, below a's 50 (a never fails); the plain plan uses b. (Replicas off: sharing
    the stage between a and b would be better still.)"""
    inst = _with_rates(_line({"a": 0.02, "b": 0.01}), {"b": 120.0})
    plain = plan(inst, "dp")
    assert plain.stages[0].devices == ("b",)
    got = plan(inst, "reliable", recovery_s=60.0, repair_s=60.0, max_replicas=0,
               pico_candidate=False)  # fmt: skip
    assert got.devices == ("a",) and got.details["candidate"] == "avoid b"
    assert got.details["expected_goodput_rps"] > got.details["plain_goodput_rps"]
    with_replicas = plan(inst, "reliable", recovery_s=60.0, repair_s=60.0)
    assert set(with_replicas.devices) == {"a", "b"}


def test_replicates_a_flaky_stage_on_a_spare() -> None:
    """dp puts everything on b; c is slow (so dp leaves it idle) but never fails: a replica on
    c turns b's failures from a pause + re-plan into a slower stretch."""
    inst = _with_rates(_line({"a": 1.0, "b": 0.01, "c": 0.05}), {"b": 6.0})
    got = plan(inst, "reliable", recovery_s=10.0, repair_s=120.0, pico_candidate=False)
    (stage,) = got.stages
    assert {"b", "c"} <= set(stage.devices)
    assert "replica" in got.details["candidate"]


def test_only_throughput_and_bad_options() -> None:
    inst = random_instance(1, 3, 2)
    with pytest.raises(InputError, match="objective throughput"):
        plan_reliable(inst, "latency")
    with pytest.raises(InputError, match="repair_s"):
        plan(inst, "reliable", repair_s=-1.0)


def _cached_replan():
    cache: dict = {}

    def replan(inst: Instance):
        key = (
            inst.device_names,
            inst.source,
            tuple((lk.src, lk.dst) for lk in inst.dedicated_links),
        )
        if key not in cache:
            cache[key] = dp_replan(inst)
        return cache[key]

    return replan


def _random_flaky(seed: int) -> tuple[Instance, float, float]:
    rng = np.random.default_rng(seed)
    p, d = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    inst = random_instance(seed, p, d, sparse_links=seed % 3 == 0)
    dev_rates = {x: float(rng.choice([0.0, 0.5, 5.0, 30.0])) for x in inst.device_names}
    link_rates = {(lk.src, lk.dst): float(rng.choice([0.0, 0.0, 2.0, 20.0]))
                  for lk in inst.dedicated_links}  # fmt: skip
    inst = _with_rates(inst, dev_rates, {k: v for k, v in link_rates.items() if v})
    return inst, float(rng.choice([1.27, 30.0])), float(rng.choice([60.0, 600.0]))


def test_against_exhaustive_enumeration() -> None:
    """Every replicated plan of small random instances scored by the same model: the planner
    is never above the optimum, never below the plain plans, and on most instances optimal."""
    n, optimal = 24, 0
    for seed in range(n):
        inst, rec, rep = _random_flaky(seed)
        replan = _cached_replan()
        best = max(
            expected_goodput(inst, st, recovery_s=rec, repair_s=rep, replan=replan).goodput_rps
            for st in all_plans(inst, replicas=True)
        )
        got = plan(inst, "reliable", recovery_s=rec, repair_s=rep)
        g = expected_goodput(inst, got.stages, recovery_s=rec, repair_s=rep).goodput_rps
        if "expected_goodput_rps" in got.details:
            assert math.isclose(got.details["expected_goodput_rps"], g, rel_tol=1e-9)
        for other in ("dp", "pico"):
            base = plan(inst, other).stages
            assert g >= expected_goodput(inst, base, recovery_s=rec, repair_s=rep).goodput_rps * (
                1 - 1e-9
            )
        assert g <= best * (1 + 1e-9), f"seed {seed}: beat the enumeration"
        assert g >= 0.95 * best, f"seed {seed}: {g} vs optimum {best}"
        optimal += g >= best * (1 - 1e-9)
    assert optimal >= 0.8 * n, f"optimal on only {optimal} of {n}"
