"""The measured search's space and noise: plans equal up to renaming cores are measured once,
a measurement's own noise reaches the heteroscedastic GP, and explicit candidates bound it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_plan_percore import random_soc_instance

from coinfer.core.cores import core_signature
from coinfer.core.evaluate import objective_value
from coinfer.core.plans import Sample, Stage
from coinfer.errors import InputError
from coinfer.plan._shared import enumerate_configs
from coinfer.plan.search.bayes import (
    BayesOptions,
    _reachable,
    config_class,
    distinct_up_to_cores,
    plan_bayes,
)
from coinfer.plan.search.surrogate import MAX_NOISE_SHAPE, noise_variances
from coinfer.testing import random_adv_instance

# Renaming the cores of one type: the swaps of the SoC's two cores of type A and of type B.
SWAPS = ({"s.A0": "s.A1", "s.A1": "s.A0"}, {"s.B0": "s.B1", "s.B1": "s.B0"})


def _renamed(cfg, swap):
    return tuple(
        Stage(st.first, st.last, tuple(swap.get(d, d) for d in st.devices), st.freqs) for st in cfg
    )


def _orbits(space):
    """Classes of ``space`` under every combination of the swaps, by brute force."""
    seen, classes = set(), []
    for cfg in space:
        if cfg in seen:
            continue
        orbit = {cfg}
        for picks in itertools.product((False, True), repeat=len(SWAPS)):
            c = cfg
            for use, swap in zip(picks, SWAPS, strict=True):
                c = _renamed(c, swap) if use else c
            orbit.add(c)
        seen |= orbit
        classes.append(orbit)
    return classes


def test_core_signature_names_types_not_cores() -> None:
    inst = random_soc_instance(0)
    assert core_signature(inst, "s.A0") == core_signature(inst, "s.A1") == ("s.A",)
    assert core_signature(inst, "s.B0-1") == ("s.B", "s.B")
    assert core_signature(inst, "h") == ("h",)  # a plain device has no twin


@pytest.mark.parametrize("seed", range(6))
def test_one_plan_per_class_up_to_core_names_and_the_best_priced(seed: int) -> None:
    inst = random_soc_instance(seed, pieces=3)
    space = [c for c in enumerate_configs(inst) if _reachable(inst, c)]
    kept = distinct_up_to_cores(inst, space)
    orbits = [o & set(space) for o in _orbits(space)]
    assert len(kept) == len(orbits) < len(space)
    for orbit in orbits:
        mine = [c for c in kept if c in orbit]
        assert len(mine) == 1  # exactly one representative per class
        assert objective_value(inst, mine[0], "throughput") == min(
            objective_value(inst, c, "throughput") for c in orbit
        )
        assert len({config_class(inst, c) for c in orbit}) == 1


def test_without_core_groups_the_space_is_unchanged() -> None:
    inst = random_adv_instance(3, pieces=4, devices=3)
    space = list(enumerate_configs(inst))
    assert distinct_up_to_cores(inst, space) == space


def test_within_noise_shapes_the_heteroscedastic_noise_only() -> None:
    logs = [np.array([0.0]), np.array([0.0]), np.array([0.0, 0.1]), np.array([0.2])]
    within = [0.01, 0.04, 0.0, 100.0]  # the last: a wild estimate, clipped
    pooled = 0.005  # from the only repeated configuration: 2 x 0.05^2 over 1 degree of freedom
    het = noise_variances(logs, "heteroscedastic", within)
    # shapes: over the median of the known ones (0.04), clipped to MAX_NOISE_SHAPE
    assert het[0] == pytest.approx(pooled * 0.25)
    assert het[1] == pytest.approx(pooled * 1.0)
    assert het[3] == pytest.approx(pooled * MAX_NOISE_SHAPE)
    # a repeated configuration mixes its own variance (0.005) with the shaped pooled one
    assert het[2] == pytest.approx((1 * 0.005 + 2 * pooled) / 3 / 2)
    homo = noise_variances(logs, "homoscedastic", within)
    assert homo == pytest.approx([pooled, pooled, pooled / 2, pooled])
    assert noise_variances(logs, "heteroscedastic") == pytest.approx(
        noise_variances(logs, "heteroscedastic", [0.0] * 4)
    )


def test_search_takes_samples_logs_their_noise_and_keeps_to_its_candidates() -> None:
    inst = random_adv_instance(5, pieces=4, devices=3)
    space = list(enumerate_configs(inst))
    candidates = space[::3]
    rng = np.random.default_rng(0)

    def measure(cfg):
        v = objective_value(inst, cfg, "throughput")
        return Sample(v * (1 + 0.02 * rng.standard_normal()), 0.02)

    opts = BayesOptions(evaluator=measure, budget=8, init=3, repeats=1, candidates=candidates)
    plan = plan_bayes(inst, "throughput", opts)
    log = plan.details["search_log"]
    assert plan.details["space"] == len(candidates)
    assert all(r["rel_sem"] == 0.02 for r in log)
    allowed = {tuple(str(s) for s in c) for c in candidates}
    assert all(tuple(r["stages"]) in allowed for r in log)
    assert plan.stages in candidates and math.isfinite(plan.details["measured_mean"])
    with pytest.raises(InputError, match="candidates"):
        plan_bayes(inst, "throughput", BayesOptions(evaluator=measure, candidates=[]))


def test_the_soc_search_never_measures_two_twins() -> None:
    inst = random_soc_instance(2, pieces=3)
    opts = BayesOptions(budget=30, init=5, repeats=1, max_repeats=1, seed=1)
    plan = plan_bayes(inst, "throughput", opts)
    measured = {tuple(r["stages"]) for r in plan.details["search_log"]}
    by_name = {tuple(str(s) for s in c): c for c in enumerate_configs(inst)}
    classes = [config_class(inst, by_name[m]) for m in measured]
    assert len(classes) == len(set(classes)) == len(measured)
