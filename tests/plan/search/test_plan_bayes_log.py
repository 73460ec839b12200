"""The measured-search side of ``bayes``: the expected-improvement stopping rule, the two noise
models and the search log — with fake evaluators, in-process."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

from coinfer.core.evaluate import objective_value
from coinfer.errors import InputError
from coinfer.plan._shared import enumerate_configs
from coinfer.plan.search.bayes import BayesOptions, encode, plan_bayes
from coinfer.plan.search.surrogate import (
    DEFAULT_LOG_VAR,
    MIN_LOG_VAR,
    fit_gp,
    noise_variances,
)
from coinfer.testing import random_adv_instance


def _model_is_right(inst, objective="throughput"):
    """An evaluator that measures exactly what the cost model predicts (and counts calls)."""
    calls = []

    def measure(cfg):
        v = objective_value(inst, cfg, objective)
        calls.append((cfg, v))
        return v

    return measure, calls


def test_ei_stop_ends_the_search_once_nothing_is_expected_to_improve() -> None:
    """With the model as prior and measurements that agree with it, the GP is sure the model's
    best is best: EI collapses and the search stops well before the budget, at the optimum.
    Without the rule the same search spends the whole budget."""
    inst = random_adv_instance(11, 6, 3)
    best = min(objective_value(inst, c, "throughput") for c in enumerate_configs(inst))
    ev, calls = _model_is_right(inst)
    p = plan_bayes(inst, "throughput", BayesOptions(evaluator=ev, budget=30, ei_stop=0.01, seed=0))
    assert p.details["stopped"] == "ei"
    assert p.details["evaluations"] == len(calls) < 30
    assert p.details["max_ei"] < 0.01
    assert math.isclose(objective_value(inst, p.stages, "throughput"), best)
    ev2, calls2 = _model_is_right(inst)
    q = plan_bayes(inst, "throughput", BayesOptions(evaluator=ev2, budget=30, seed=0))
    assert q.details["stopped"] == "budget" and len(calls2) == 30


def test_ei_stop_is_checked_only_after_the_initial_design() -> None:
    inst = random_adv_instance(12, 5, 3)
    ev, calls = _model_is_right(inst)
    opts = BayesOptions(evaluator=ev, budget=20, init=4, repeats=1, ei_stop=1e9, seed=1)
    p = plan_bayes(inst, "throughput", opts)
    assert len(calls) == 4 and p.details["stopped"] == "ei"  # the design, then the rule


def test_search_log_has_one_true_row_per_measurement() -> None:
    inst = random_adv_instance(5, 6, 3)
    rng = np.random.default_rng(0)
    returned = []

    def noisy(cfg):
        v = objective_value(inst, cfg, "latency") * (1 + 0.05 * rng.standard_normal())
        returned.append(([str(s) for s in cfg], v))
        return v

    opts = BayesOptions(evaluator=noisy, budget=14, init=3, repeats=2, seed=3)
    p = plan_bayes(inst, "latency", opts)
    log = p.details["search_log"]
    json.dumps(log)  # JSON-ready as it is
    assert len(log) == p.details["evaluations"] == len(returned) == 14
    assert [r["index"] for r in log] == list(range(1, 15))
    assert [r["phase"] for r in log] == ["init"] * 6 + ["acquire"] * 8
    seen: dict[tuple[str, ...], list[float]] = {}
    for row, (stages, v) in zip(log, returned, strict=True):
        assert row["stages"] == stages and row["measured"] == v
        vals = seen.setdefault(tuple(stages), [])
        vals.append(v)
        assert row["config_n"] == len(vals)
        assert math.isclose(row["config_mean"], float(np.mean(vals)))
        assert math.isclose(
            row["config_std"], float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        )
        cfg_model = row["model"]
        assert cfg_model > 0
        if row["phase"] == "init":
            assert row["gp_mean"] is row["gp_std_log"] is row["ei"] is None
        else:
            assert row["gp_mean"] > 0 and row["gp_std_log"] >= 0 and row["ei"] >= 0
        assert tuple(row["incumbent"]) in seen  # the answer is always a measured config
    times = [r["elapsed_s"] for r in log]
    assert times == sorted(times)
    assert log[-1]["incumbent"] == [str(s) for s in p.stages]  # the last row names the answer
    assert math.isclose(log[-1]["incumbent_mean"], p.details["measured_mean"])
    assert p.details["noise_model"] == "heteroscedastic" and p.details["prior"] == "model"


def test_noise_models_differ_only_in_per_configuration_variance() -> None:
    quiet = np.log([1.00, 1.01, 0.99, 1.00])
    loud = np.log([0.7, 1.4, 0.9, 1.1])
    single = np.log([1.0])
    het = noise_variances([quiet, loud, single], "heteroscedastic")
    hom = noise_variances([quiet, loud, single], "homoscedastic")
    # homoscedastic: one pooled variance for all, divided by each configuration's count
    pooled = (3 * quiet.var(ddof=1) + 3 * loud.var(ddof=1)) / 6
    assert np.allclose(hom, [pooled / 4, pooled / 4, pooled])
    # heteroscedastic: the loud configuration's mean is trusted less than the quiet one's
    assert het[1] > 3 * het[0]
    assert het[0] < hom[0] == hom[1] < het[1]
    # no repeats anywhere: both fall back to the default guess
    assert np.allclose(noise_variances([single], "homoscedastic"), [DEFAULT_LOG_VAR])
    assert noise_variances([np.log([2.0, 2.0])], "heteroscedastic")[0] == MIN_LOG_VAR / 2


def test_a_heteroscedastic_gp_is_less_sure_where_measurements_scatter() -> None:
    """Two configurations, same mean, one measured noisily: the heteroscedastic posterior is
    wider at the noisy one; the homoscedastic one treats them alike."""
    inst = random_adv_instance(3, 4, 3)
    space = list(enumerate_configs(inst))
    # two plans with no piece on the same device: the kernel barely links them
    cfgs = max(
        ((a, b) for a in space[:20] for b in space),
        key=lambda ab: float(np.linalg.norm(encode(inst, ab[0]) - encode(inst, ab[1]))),
    )
    X = np.array([encode(inst, c) for c in cfgs])
    logs = [np.log([1.0, 1.01, 0.99, 1.0]), np.log([0.6, 1.5, 0.8, 1.2])]
    z = np.array([lv.mean() for lv in logs])
    # the residual GP's starting kernel, held fixed: "the model may be off by ~35 %"
    kernel = ConstantKernel(0.3**2) * Matern(length_scale=0.5, nu=2.5)
    sds = {}
    for model in ("heteroscedastic", "homoscedastic"):
        alpha = noise_variances(logs, model)  # type: ignore[arg-type]
        gp = fit_gp(X, z, alpha, 0, kernel, residual=True)
        _, sd = gp.predict(X, return_std=True)
        sds[model] = sd
    assert sds["heteroscedastic"][1] > 1.5 * sds["heteroscedastic"][0]
    assert math.isclose(sds["homoscedastic"][0], sds["homoscedastic"][1], rel_tol=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("ei_stop", -0.1, "ei_stop"),
        ("ei_stop", math.nan, "ei_stop"),
        ("noise_model", "white", "noise_model"),
    ],
)
def test_bad_search_options_raise(field: str, value: object, match: str) -> None:
    inst = random_adv_instance(1, 3, 2)
    with pytest.raises(InputError, match=match):
        plan_bayes(inst, "latency", BayesOptions(**{field: value}))  # type: ignore[arg-type]


def test_homoscedastic_search_runs_and_says_so() -> None:
    inst = random_adv_instance(8, 5, 3)
    p = plan_bayes(inst, "latency", BayesOptions(budget=12, noise_model="homoscedastic", seed=2))
    assert p.details["noise_model"] == "homoscedastic" and p.details["evaluations"] == 12
