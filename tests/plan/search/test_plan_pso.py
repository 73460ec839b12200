"""PSO planners: within 1 % of brute force on average, valid repairs, exact fixed-order DP."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import check_plan, validate_stages
from coinfer.errors import InputError
from coinfer.plan._shared import exhaustive_best, order_dp
from coinfer.plan.chain.brute import plan_brute
from coinfer.plan.search.pso import PSOOptions, plan_pso, repair
from coinfer.testing import random_adv_instance


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_hybrid_within_one_percent_of_brute_on_average(objective: str) -> None:
    gaps = []
    for seed in range(10):
        pieces, devices = 6 + seed % 7, 2 + seed % 3
        inst = random_adv_instance(
            500 + seed, pieces, devices, tight_memory=seed % 2 == 0, sparse_links=seed % 3 == 0
        )
        p = plan_pso(inst, objective, PSOOptions(seed=seed))
        check_plan(inst, p)
        best = plan_brute(inst, objective).predicted.value(objective)
        gaps.append(p.predicted.value(objective) / best - 1.0)
    assert min(gaps) >= -1e-9  # never better than the exhaustive optimum
    assert float(np.mean(gaps)) <= 0.01


def test_energy_objective_plans_and_is_never_better_than_exhaustive() -> None:
    inst = random_adv_instance(3, 6, 3, power=True)
    p = plan_pso(inst, "energy", PSOOptions(seed=1))
    check_plan(inst, p)
    best, _ = exhaustive_best(inst, "energy")
    assert p.predicted.energy_j is not None
    assert best <= p.predicted.energy_j * (1 + 1e-9)


def test_same_seed_same_plan_and_seed_recorded() -> None:
    inst = random_adv_instance(8, 9, 4)
    a = plan_pso(inst, "throughput", PSOOptions(seed=5, variant="psomw", polish=False))
    b = plan_pso(inst, "throughput", PSOOptions(seed=5, variant="psomw", polish=False))
    assert a.stages == b.stages and a.seed == 5
    assert a.details["variant"] == "psomw"


@pytest.mark.parametrize("variant", ["psomw", "s4"])
def test_each_variant_gives_valid_plan(variant: str) -> None:
    inst = random_adv_instance(12, 8, 4, tight_memory=True)
    p = plan_pso(inst, "latency", PSOOptions(seed=2, variant=variant, polish=False))  # type: ignore[arg-type]
    check_plan(inst, p)
    assert set(p.details["best_after"]) == {variant}


def test_fixed_order_dp_is_exact_over_all_orders() -> None:
    for seed in range(8):
        inst = random_adv_instance(40 + seed, 7, 3, tight_memory=seed % 2 == 0, power=True)
        for objective in ("latency", "energy"):  # both are sums over stages: the DP is exact
            results = [
                order_dp(inst, o, objective) for o in itertools.permutations(inst.device_names)
            ]
            best = min(r[0] for r in results if r is not None)
            assert math.isclose(best, exhaustive_best(inst, objective)[0], rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 20),
    cuts=st.lists(st.integers(-2, 12), max_size=4),
    devs=st.lists(st.integers(0, 3), min_size=1, max_size=5),
)
def test_repair_returns_valid_plan_or_none(seed: int, cuts: list[int], devs: list[int]) -> None:
    inst = random_adv_instance(seed, 8, 4, tight_memory=True)
    cfg = repair(inst, cuts, devs)
    if cfg is not None:
        validate_stages(inst, cfg)  # covers pieces in order, no device twice, fits in memory
        inner = sorted({c for c in cuts if 0 <= c < 7})
        assert len(cfg) <= len(inner) + 1  # repair never adds cuts


def test_repair_fixes_unordered_cuts_and_reused_devices() -> None:
    inst = random_adv_instance(1, 6, 3)
    cfg = repair(inst, [4, 1], [0, 0, 0])
    assert cfg is not None
    assert [(s.first, s.last) for s in cfg] == [(0, 1), (2, 4), (5, 5)]
    assert len({s.devices[0] for s in cfg}) == 3


def test_bad_options_raise() -> None:
    inst = random_adv_instance(1, 3, 2)
    with pytest.raises(InputError, match="particles"):
        plan_pso(inst, "latency", PSOOptions(particles=0))
    with pytest.raises(InputError, match="variant"):
        plan_pso(inst, "latency", PSOOptions(variant="ga"))  # type: ignore[arg-type]
