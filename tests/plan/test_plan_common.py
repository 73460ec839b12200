"""The common suite every registered planner must pass (parametrised over the registry).

For each planner, on small seeded random instances and every objective it supports: the plan
fits in memory and its prediction equals the independent cost oracle's (tests/support), it is
never better than the optimum of an independent enumeration of its plan space (equal to it when
the planner is exact), and the same inputs + seed give the same plan. New planners join this
suite by being registered. None of these checks uses ``coinfer.core.evaluate`` or the ``brute``
planner as its reference, so a wrong formula or a wrong search cannot grade itself.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from cost_oracle import oracle_energy_j, oracle_fits, oracle_latency_s, oracle_period_s
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_space import best_value

from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.tiles import LayerSpec
from coinfer.errors import InfeasibleError, InputError
from coinfer.plan import PLANNERS, plan, skip_reason
from coinfer.plan.fused.planner import conv_instance
from coinfer.testing import random_instance, with_shared_medium

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


def _conv_instance():
    """A 3-layer conv block on 3 devices: the one instance the fused planner applies to."""
    layers = (
        LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), 3, 8),
        LayerSpec("pointwise", in_ch=8, out_ch=8),
        LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), 8, 8),
    )
    flops = {"src": 2e9, "e1": 8e9, "e2": 5e9}
    links = [Link(a, b, 12.5e6, 0.002) for a in flops for b in flops if a != b]
    return conv_instance(layers, (16, 16), flops, links, "src")


# Shapes whose devices (a random group of two or more) also share one medium (Wi-Fi).
MEDIA_SHAPES = [(6, 3, False, False, True), (7, 4, True, True, True), (8, 4, False, False, True)]


def _instances():
    for k, (p, d, tight, sparse, power) in enumerate(SHAPES):
        yield random_instance(1000 + k, p, d, tight_memory=tight, sparse_links=sparse, power=power)
    yield _conv_instance()
    for k, (p, d, tight, sparse, power) in enumerate(MEDIA_SHAPES):
        base = random_instance(1100 + k, p, d, tight_memory=tight, sparse_links=sparse, power=power)
        yield with_shared_medium(base, 1100 + k)


_TRUTH: dict[tuple[int, str, bool], float | None] = {}


def _truth(k: int, inst, objective: str, replicas: bool) -> float | None:
    """The optimum of the independent enumeration (cached: several planners share it)."""
    key = (k, objective, replicas)
    if key not in _TRUTH:
        _TRUTH[key] = best_value(inst, objective, replicas=replicas)
    return _TRUTH[key]


def _assert_priced_by_the_oracle(inst, got) -> None:
    """The plan fits and its prediction is the oracle's figure for its own stages."""
    assert oracle_fits(inst, got.stages), f"{got.algo} plan does not fit: {got.stages}"
    assert math.isclose(got.predicted.latency_s, oracle_latency_s(inst, got.stages), rel_tol=1e-9)
    assert math.isclose(got.predicted.period_s, oracle_period_s(inst, got.stages), rel_tol=1e-9)
    e = oracle_energy_j(inst, got.stages)
    assert (got.predicted.energy_j is None) == (e is None)
    if e is not None:
        assert math.isclose(got.predicted.energy_j, e, rel_tol=1e-9)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planner_contract(name: str) -> None:
    info = PLANNERS[name]
    ran = 0
    for k, inst in enumerate(_instances()):
        for objective in sorted(info.objectives):
            if skip_reason(info, inst, objective) is not None:
                continue
            truth = None
            if info.model in ("chain", "replicas"):
                truth = _truth(k, inst, objective, info.model == "replicas")
            try:
                got = plan(inst, name, objective, **_opts(name, seed=3))
            except InfeasibleError:
                # a planner may only give up when nothing fits (or it is a restricted baseline)
                assert truth is None or not info.exact, f"{name} gave up on a feasible {inst}"
                continue
            ran += 1
            _assert_priced_by_the_oracle(inst, got)
            assert got.planning_time_s > 0
            assert got.objective == objective
            if info.model in ("chain", "replicas"):
                assert truth is not None, f"{name} found a plan where the enumeration found none"
                v = got.predicted.value(objective)
                assert v >= truth * (1 - 1e-9), f"{name} beat the optimum: {v} < {truth} on {inst}"
                if info.exact:
                    assert math.isclose(v, truth, rel_tol=1e-9), (
                        f"{name} is not optimal on {inst}: {v} vs {truth}"
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
    inst = _conv_instance() if PLANNERS[name].needs == "conv layers" else random_instance(7, 6, 3)
    obj = (
        "throughput"
        if "throughput" in PLANNERS[name].objectives
        else sorted(PLANNERS[name].objectives)[0]
    )
    if skip_reason(PLANNERS[name], inst, obj) is not None:
        pytest.skip("not applicable to a random instance")
    got = plan(inst, name, obj, **_opts(name, seed=11))
    assert got.seed == 11


def _tight_instance():
    """Passes the front door's up-front memory bound (every piece fits somewhere, the devices
    hold 300 B for a 240 B model) yet no plan fits: any two adjacent pieces need 120 B > 100 B,
    so four one-piece stages are needed and there are only three devices."""
    devs = [Device(n, 100, 1.0, 2.0, 1.0) for n in ("a", "b", "c")]
    links = [Link(u, v, 1e6, 0.001) for u in "abc" for v in "abc" if u != v]
    times = [{"a": 0.01, "b": 0.02, "c": 0.03}] * 4
    return make_instance(times, [60] * 4, [1000] * 4, 1000, devs, links, "a", name="tight")


@pytest.mark.parametrize("name", sorted(n for n in PLANNERS if n != "fused"))
def test_infeasible_memory_is_reported_by_the_planner(name: str) -> None:
    """The planner itself (not the up-front bound) refuses, naming a device (quoted)."""
    from coinfer.core.evaluate import memory_bound_check

    inst = _tight_instance()
    memory_bound_check(inst)  # the cheap bound lets it through: the planner must find out
    assert best_value(inst, "latency", replicas=True) is None  # truly nothing fits
    info = PLANNERS[name]
    obj = "latency" if "latency" in info.objectives else sorted(info.objectives)[0]
    with pytest.raises(InfeasibleError, match=r"'[abc]'") as direct:
        opts = info.options_type(**_opts(name, seed=0))
        info.func(inst, obj, opts)
    assert "\n" not in str(direct.value)
    with pytest.raises(InfeasibleError, match=r"'[abc]'"):
        plan(inst, name, obj, **_opts(name, seed=0))


def test_front_door_bound_names_the_bytes_short() -> None:
    """A model that fits nowhere is refused before any planner runs, with the bytes short."""
    import dataclasses as dc

    from coinfer.core.instance import Instance

    inst = random_instance(5, 4, 2)
    tiny = inst.mem_bytes(0, 3) // 10
    small = Instance(inst.pieces, inst.input_bytes,
                     tuple(dc.replace(d, mem_bytes=tiny) for d in inst.devices), inst.links,
                     inst.source, name="too-small")  # fmt: skip
    with pytest.raises(InfeasibleError, match="bytes short"):
        plan(small, "dp", "latency")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    pieces=st.integers(1, 9),
    devices=st.integers(1, 4),
    tight=st.booleans(),
    sparse=st.booleans(),
    media=st.booleans(),
    name=st.sampled_from(sorted(n for n in PLANNERS if n not in ("brute", "bayes"))),
    objective=st.sampled_from(["latency", "throughput"]),
)
def test_any_plan_passes_validation(
    seed, pieces, devices, tight, sparse, media, name, objective
) -> None:
    inst = random_instance(seed, pieces, devices, tight_memory=tight, sparse_links=sparse)
    if media and devices >= 2:
        inst = with_shared_medium(inst, seed)
    info = PLANNERS[name]
    if skip_reason(info, inst, objective) is not None:
        return
    try:
        got = plan(inst, name, objective, **_opts(name, seed=seed))
    except InfeasibleError:
        return
    _assert_priced_by_the_oracle(inst, got)


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
