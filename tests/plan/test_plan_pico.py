"""pico: exact against brute force with replicas on tiny instances, never worse than dp."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.errors import InfeasibleError
from coinfer.plan.brute import BruteOptions, plan_brute
from coinfer.plan.dp import plan_dp
from coinfer.plan.evaluate import validate_stages
from coinfer.plan.instance import Device, Link, make_instance
from coinfer.plan.pico import PicoOptions, plan_pico
from coinfer.plan.random_instances import random_instance


def test_pico_equals_brute_with_replicas() -> None:
    rng = np.random.default_rng(21)
    replicated = checked = 0
    for k in range(120):
        inst = random_instance(rng, int(rng.integers(1, 7)), int(rng.integers(1, 5)),
                               tight_memory=k % 3 == 0, sparse_links=k % 2 == 1)  # fmt: skip
        try:
            ref = plan_brute(inst, "throughput", BruteOptions(replicas=True, max_plans=5_000_000))
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                plan_pico(inst, "throughput")
            continue
        got = plan_pico(inst, "throughput")
        checked += 1
        assert got.details["exact"] is True and got.details["method"] == "branch-and-bound"
        assert math.isclose(got.predicted.period_s, ref.predicted.period_s, rel_tol=1e-9), (
            f"{inst}: {got} vs {ref}"
        )
        replicated += got.details["replicated_stages"] > 0
    assert checked > 80
    assert replicated > 10  # replication really happens on these instances


@pytest.mark.parametrize("greedy", [False, True])
def test_pico_never_worse_than_dp(greedy: bool) -> None:
    rng = np.random.default_rng(5 + greedy)
    opts = PicoOptions(exact_limit=0) if greedy else None
    improved = 0
    for k in range(40):
        inst = random_instance(
            rng, int(rng.integers(2, 13)), int(rng.integers(2, 6)), tight_memory=k % 4 == 0
        )
        try:
            base = plan_dp(inst, "throughput")
        except InfeasibleError:
            continue
        got = plan_pico(inst, "throughput", opts)
        validate_stages(inst, got.stages)
        assert got.predicted.period_s <= base.predicted.period_s * (1 + 1e-12)
        improved += got.predicted.period_s < base.predicted.period_s * (1 - 1e-9)
        if greedy:
            assert got.details["method"] == "greedy" and got.details["exact"] is False
    assert improved > 5


@pytest.mark.parametrize("objective", ["latency", "energy"])
def test_pico_latency_and_energy_are_dp(objective: str) -> None:
    """Replicas cannot lower one request's latency or its expected energy: pico returns dp's optimum."""
    for seed in range(6):
        inst = random_instance(seed, 5, 3, power=True)
        a, b = plan_pico(inst, objective), plan_dp(inst, objective)
        assert a.stages == b.stages
        ref = plan_brute(inst, objective, BruteOptions(replicas=True, max_plans=5_000_000))
        assert math.isclose(
            a.predicted.value(objective), ref.predicted.value(objective), rel_tol=1e-9
        )


def test_identical_devices_share_the_bottleneck() -> None:
    """Two equal workers behind a fast switch and one heavy piece: replicate it, double throughput."""
    devs = [Device("src", 10**9), Device("w1", 10**9), Device("w2", 10**9)]
    links = [
        Link(u, v, 1e12, 0.0) for u in ("src", "w1", "w2") for v in ("src", "w1", "w2") if u != v
    ]
    times = [{"src": 10.0, "w1": 1.0, "w2": 1.0}]
    inst = make_instance(times, [1], [1], 1, devs, links, "src")
    got = plan_pico(inst, "throughput")
    # all three take turns (the slow source too): period = 1 / (1/1 + 1/1 + 1/10)
    assert set(got.stages[0].devices) == {"src", "w1", "w2"}
    assert math.isclose(got.predicted.period_s, 1 / 2.1, rel_tol=1e-6)
    assert math.isclose(plan_dp(inst, "throughput").predicted.period_s, 1.0, rel_tol=1e-6)
