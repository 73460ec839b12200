"""The common suite every registered planner must pass (parametrised over the registry).

For each planner, on small seeded random instances and every objective it supports:
the plan is valid, its prediction is exactly the reference evaluation, it is never better than
brute force in its own plan space (equal to it when the planner is exact), and the same
inputs + seed give the same plan. New planners join this suite by being registered.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import evaluate, validate_stages
from coinfer.errors import InfeasibleError, InputError
from coinfer.plan import PLANNERS, plan, skip_reason
from coinfer.plan.chain.brute import BruteOptions, plan_brute
from coinfer.testing import random_instance

# Small budgets for slow search planners so the whole suite stays fast; only fields that the
# planner's options really have are passed (a renamed field is skipped, not an error).
FAST = {
    "bayes": {"budget": 8, "init": 3, "repeats": 1, "pool": 50},
    "pso": {"particles": 8, "iterations": 12},
}

# Instances: (pieces, devices, tight memory, sparse links, power); small enough for brute force.
SHAPES = [
    (1, 1, False, False, True),
    (4, 2, False, False, True),
    (6, 3, False, True, True),
    (5, 3, True, False, True),
    (7, 3, True, True, True),
    (8, 4, False, False, True),
]


def _opts(name: str, seed: int | None = None) -> dict:
    info = PLANNERS[name]
    fields = {f.name for f in dataclasses.fields(info.options_type)}
    out = {k: v for k, v in FAST.get(name, {}).items() if k in fields}
    if info.seeded and seed is not None:
        out["seed"] = seed
    return out


def _instances():
    for k, (p, d, tight, sparse, power) in enumerate(SHAPES):
        yield random_instance(1000 + k, p, d, tight_memory=tight, sparse_links=sparse, power=power)


def _brute(inst, objective, replicas):
    try:
        return plan_brute(inst, objective, BruteOptions(replicas=replicas, max_plans=2_000_000))
    except InfeasibleError:
        return None


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planner_contract(name: str) -> None:
    info = PLANNERS[name]
    ran = 0
    for inst in _instances():
        for objective in sorted(info.objectives):
            if skip_reason(info, inst, objective) is not None:
                continue
            ref = _brute(inst, objective, replicas=info.model == "replicas")
            try:
                got = plan(inst, name, objective, **_opts(name, seed=3))
            except InfeasibleError:
                # a planner may only give up when nothing fits (or it is a restricted baseline)
                assert ref is None or not info.exact, f"{name} gave up on a feasible {inst}"
                continue
            ran += 1
            revisit = bool(got.details.get("allow_revisit", False))
            validate_stages(inst, got.stages, allow_revisit=revisit)
            m = evaluate(inst, got.stages)
            assert math.isclose(m.latency_s, got.predicted.latency_s, rel_tol=1e-12)
            assert math.isclose(m.period_s, got.predicted.period_s, rel_tol=1e-12)
            assert got.planning_time_s > 0
            assert got.objective == objective
            assert ref is not None, f"{name} found a plan where brute force found none"
            if info.model in ("chain", "replicas"):
                v, best = got.predicted.value(objective), ref.predicted.value(objective)
                assert v >= best * (1 - 1e-9), f"{name} beat brute force: {v} < {best} on {inst}"
                if info.exact:
                    assert math.isclose(v, best, rel_tol=1e-9), (
                        f"{name} is not optimal on {inst}: {v} vs {best}"
                    )
            again = plan(inst, name, objective, **_opts(name, seed=3))
            assert again.stages == got.stages, f"{name} is not deterministic for a fixed seed"
    if not any(
        skip_reason(info, inst, o) is None for inst in _instances() for o in info.objectives
    ):
        pytest.skip(f"{name} applies to none of the random instances ({info.needs})")
    assert ran > 0


@pytest.mark.parametrize("name", sorted(n for n, i in PLANNERS.items() if i.seeded))
def test_seed_recorded(name: str) -> None:
    inst = random_instance(7, 6, 3)
    obj = (
        "throughput"
        if "throughput" in PLANNERS[name].objectives
        else sorted(PLANNERS[name].objectives)[0]
    )
    if skip_reason(PLANNERS[name], inst, obj) is not None:
        pytest.skip("not applicable to a random instance")
    got = plan(inst, name, obj, **_opts(name, seed=11))
    assert got.seed == 11


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_infeasible_memory_is_reported(name: str) -> None:
    """Every planner refuses an instance whose model cannot fit, naming bytes short."""
    inst = random_instance(5, 4, 2)
    tiny = inst.mem_bytes(0, 3) // 10  # every device gets a tenth of the model
    from coinfer.core.instance import Instance

    small = Instance(
        inst.pieces, inst.input_bytes, tuple(dataclasses.replace(d, mem_bytes=tiny) for d in inst.devices),
        inst.links, inst.source, name="too-small",
    )  # fmt: skip
    info = PLANNERS[name]
    obj = "latency" if "latency" in info.objectives else sorted(info.objectives)[0]
    if skip_reason(info, small, obj) is not None:
        pytest.skip("not applicable")
    with pytest.raises(InfeasibleError, match="bytes short"):
        plan(small, name, obj, **_opts(name, seed=0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    pieces=st.integers(1, 9),
    devices=st.integers(1, 4),
    tight=st.booleans(),
    sparse=st.booleans(),
    name=st.sampled_from(sorted(n for n in PLANNERS if n not in ("brute", "bayes"))),
    objective=st.sampled_from(["latency", "throughput"]),
)
def test_any_plan_passes_validation(seed, pieces, devices, tight, sparse, name, objective) -> None:
    inst = random_instance(seed, pieces, devices, tight_memory=tight, sparse_links=sparse)
    info = PLANNERS[name]
    if skip_reason(info, inst, objective) is not None:
        return
    try:
        got = plan(inst, name, objective, **_opts(name, seed=seed))
    except InfeasibleError:
        return
    validate_stages(inst, got.stages, allow_revisit=bool(got.details.get("allow_revisit", False)))
    assert got.predicted == evaluate(inst, got.stages)


def test_transfer_table_matches_instance_paths() -> None:
    """The planners' batched shortest paths are exactly Instance.path's, hop by hop."""
    from coinfer.plan._shared import TransferTable

    rng = np.random.default_rng(4)
    for _ in range(6):
        inst = random_instance(rng, 5, 6, sparse_links=True)
        tt = TransferTable(inst)
        names = inst.device_names
        for k in range(inst.num_pieces + 1):
            x = inst.cut_bytes(k)
            for u, a in enumerate(names):
                for v, b in enumerate(names):
                    want = [((lk.src, lk.dst), lk.transfer_s(x)) for lk in inst.path(a, b, x)]
                    assert tt.paths[k][u][v] == want
                    assert tt.total_s[k, u, v] == inst.transfer_s(a, b, x)


def test_unknown_option_names_the_valid_ones() -> None:
    inst = random_instance(1, 3, 2)
    with pytest.raises(InputError, match="max_exact_devices"):
        plan(inst, "dp", "latency", bogus=1)
