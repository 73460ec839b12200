"""The front door (coinfer.plan.plan / compare) and the registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
from cost_oracle import oracle_latency_s, oracle_period_s

from coinfer.core.evaluate import evaluate
from coinfer.core.plans import Stage
from coinfer.errors import CoinferError, InfeasibleError, InputError
from coinfer.plan import PLANNERS, compare, get_planner, plan
from coinfer.plan.registry import ALL, DEFAULT_ALIAS, NEEDS, PlannerInfo, unmet_need
from coinfer.testing import random_instance


def test_default_alias_is_pico_and_names_are_case_insensitive() -> None:
    assert DEFAULT_ALIAS == "pico"
    assert get_planner("default") is PLANNERS["pico"]
    assert get_planner(" DP ") is PLANNERS["dp"]
    inst = random_instance(1, 5, 3)
    assert plan(inst).algo == "pico"
    # pico starts from dp's exact plan: the default is never predicted worse than dp
    assert plan(inst).predicted.period_s <= plan(inst, "dp").predicted.period_s * (1 + 1e-9)


def test_unknown_planner_lists_valid_names() -> None:
    with pytest.raises(
        InputError, match=r"unknown planner 'nope'; choose one of: default, .*brute.*dp"
    ):
        get_planner("nope")


def test_registry_entries_are_well_formed() -> None:
    import dataclasses

    for name, info in PLANNERS.items():
        assert name == info.name == name.lower()
        assert info.objectives <= ALL and info.objectives
        assert dataclasses.is_dataclass(info.options_type)
        assert info.options_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert info.needs is None or info.needs in NEEDS
        assert info.summary
        if info.seeded:
            assert "seed" in {f.name for f in dataclasses.fields(info.options_type)}


def test_unknown_objective_and_unsupported_objective() -> None:
    inst = random_instance(1, 4, 2)
    with pytest.raises(InputError, match="unknown objective 'speed'"):
        plan(inst, "dp", "speed")
    unsupported = [n for n, i in PLANNERS.items() if "throughput" not in i.objectives]
    for name in unsupported:
        with pytest.raises(InputError, match=f"planner '{name}' cannot plan .* not throughput"):
            plan(inst, name, "throughput")


def test_energy_without_power_is_refused_up_front() -> None:
    inst = random_instance(1, 4, 2)  # no power figures
    with pytest.raises(InputError, match="power figures"):
        plan(inst, "dp", "energy")


def _liar(mutate):
    """A planner that plans with dp, then tampers with the result the way a buggy one might."""
    from coinfer.plan.chain.dp import plan_dp

    def planner(instance, objective, options):
        return mutate(instance, plan_dp(instance, objective))

    return planner


def _with_planner(monkeypatch, func) -> None:
    info = PLANNERS["dp"]
    monkeypatch.setitem(PLANNERS, "liar", dataclasses.replace(info, name="liar", func=func))


def test_plan_is_timed_and_its_prediction_is_the_oracles() -> None:
    inst = random_instance(2, 8, 3)
    got = plan(inst, "dp", "throughput")
    assert got.planning_time_s > 0
    assert math.isclose(got.predicted.period_s, oracle_period_s(inst, got.stages), rel_tol=1e-9)
    assert math.isclose(got.predicted.latency_s, oracle_latency_s(inst, got.stages), rel_tol=1e-9)


def test_a_planner_that_misprices_its_plan_is_rejected(monkeypatch) -> None:
    """The front door re-prices every plan: a 5 % optimistic period does not get through."""

    def optimistic(instance, p):
        return dataclasses.replace(
            p, predicted=dataclasses.replace(p.predicted, period_s=p.predicted.period_s * 0.95)
        )

    _with_planner(monkeypatch, _liar(optimistic))
    with pytest.raises(InputError, match=r"predicts period_s=.* but the reference model gives"):
        plan(random_instance(2, 8, 3), "liar", "throughput")


def test_a_planner_whose_plan_does_not_fit_is_rejected(monkeypatch) -> None:
    """Squeezing everything onto the smallest device overflows it: refused, device named."""

    def squeeze(instance, p):
        small = min(instance.devices, key=lambda d: d.mem_bytes).name
        stages = (Stage(0, instance.num_pieces - 1, (small,)),)
        return dataclasses.replace(p, stages=stages, predicted=evaluate(instance, stages))

    _with_planner(monkeypatch, _liar(squeeze))
    inst = random_instance(4, 8, 3, tight_memory=True)
    with pytest.raises(InfeasibleError, match="bytes short"):
        plan(inst, "liar", "throughput")


def test_a_planner_that_drops_pieces_is_rejected(monkeypatch) -> None:
    def drop_last(instance, p):
        first = p.stages[0]
        stages = (Stage(0, instance.num_pieces - 2, first.devices),)
        return dataclasses.replace(p, stages=stages, predicted=evaluate(instance, stages))

    _with_planner(monkeypatch, _liar(drop_last))
    with pytest.raises(InputError, match=r"plan covers pieces 0\.\.6 but the instance has 8"):
        plan(random_instance(2, 8, 3), "liar", "latency")


def test_infeasible_instance_fails_before_planning() -> None:
    import dataclasses

    from coinfer.core.instance import Instance

    inst = random_instance(3, 4, 2)
    small = Instance(inst.pieces, inst.input_bytes,
                     tuple(dataclasses.replace(d, mem_bytes=1) for d in inst.devices), inst.links, inst.source)  # fmt: skip
    with pytest.raises(InfeasibleError, match="bytes short"):
        plan(small, "dp", "latency")


def test_compare_returns_plans_and_errors_in_order() -> None:
    inst = random_instance(4, 6, 3)
    names = ["dp", "single", "even", "pico"]
    out = compare(inst, "latency", names)
    assert [r.algo for r in out if not isinstance(r, CoinferError)] == names
    best = min(r.predicted.latency_s for r in out)
    assert math.isclose(out[0].predicted.latency_s, best, rel_tol=1e-12)
    # an inapplicable planner is reported, not raised
    latency_only = [n for n, i in PLANNERS.items() if "throughput" not in i.objectives]
    if latency_only:
        res = compare(inst, "throughput", ["dp", latency_only[0]])
        assert isinstance(res[1], InputError)
    with pytest.raises(InputError):
        compare(inst, "latency", ["dp", "nope"])


def test_needs_check() -> None:
    inst = random_instance(1, 3, 1)
    info = PlannerInfo(
        "x", lambda *a: None, object, exact=False, objectives=ALL, needs="two devices", summary="t"
    )
    assert "two devices" in (unmet_need(info, inst) or "")
    assert unmet_need(info, random_instance(1, 3, 2)) is None
