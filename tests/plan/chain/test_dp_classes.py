"""dp with device classes and beyond exact reach: classes found exactly, the class DP equal to
the bitset DP and brute force on class-symmetric instances, bounds below every optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest

import coinfer.plan.chain._dp_sum as sum_mod
from coinfer.core.evaluate import objective_value, validate_stages
from coinfer.core.instance import Device, Instance, Link, Medium, make_instance
from coinfer.errors import InfeasibleError
from coinfer.plan.chain._dp_classes import (
    ClassModel,
    class_sum_path,
    device_classes,
    swap_is_symmetry,
)
from coinfer.plan.chain._dp_period import min_period_path
from coinfer.plan.chain.brute import BruteOptions, plan_brute
from coinfer.plan.chain.dp import DPOptions, plan_dp
from coinfer.testing import random_instance

REL = 1e-9


def symmetric_instance(
    rng: np.random.Generator,
    sizes: list[int],
    pieces: int,
    *,
    sparse: bool = False,
    tight: bool = False,
    power: bool = False,
    medium: bool = False,
) -> tuple[Instance, list[list[str]]]:
    """A random instance whose devices fall into classes of the given sizes (class 0 = source,
    size 1): every figure drawn once per class, or per ordered class pair for links."""
    names = [["s"]] + [[f"c{c}m{m}" for m in range(n)] for c, n in enumerate(sizes, 1)]
    C = len(names)
    speed = np.exp(rng.uniform(np.log(0.2), np.log(5.0), C))
    work = np.exp(rng.uniform(np.log(1e-3), np.log(5e-2), pieces))
    aff = rng.uniform(0.6, 1.4, (pieces, C))
    mem = rng.integers(1_000_000, 100_000_000, pieces)
    total = int(mem.sum())
    cap = [max(int(total * rng.uniform(0.25, 0.6)), int(mem.max())) if tight else 2 * total
           for _ in range(C)]  # fmt: skip
    devs, times = [], [dict() for _ in range(pieces)]
    for c, group in enumerate(names):
        kw: dict = {}
        if power:
            active = float(rng.uniform(2.0, 30.0))
            kw = {"power_active_w": active, "power_idle_w": 0.2 * active,
                  "power_transmit_w": float(rng.uniform(0.5, 3.0))}  # fmt: skip
            if rng.random() < 0.5:
                kw["dvfs_levels"] = (0.5, 0.75, 1.0)
        for d in group:
            devs.append(Device(d, cap[c], **kw))
            for p in range(pieces):
                times[p][d] = float(work[p] / speed[c] * aff[p, c])
    on_air = set()
    media = ()
    if medium:
        chosen = [c for c in range(C) if rng.random() < 0.5]
        on_air = {d for c in chosen for d in names[c]}
        if len(on_air) >= 2:
            media = (Medium("air", tuple(sorted(on_air)), float(np.exp(rng.uniform(np.log(1e6), np.log(1e8)))),
                            float(rng.uniform(1e-4, 5e-3))),)  # fmt: skip
        else:
            on_air = set()
    links = []
    for a in range(C):
        for b in range(C):
            if a == b and len(names[a]) < 2:
                continue
            if sparse and a != b and rng.random() < 0.35:
                continue
            bw = float(np.exp(rng.uniform(np.log(1e6), np.log(1e8))))
            lat = float(rng.uniform(1e-4, 5e-3))
            for u in names[a]:
                for v in names[b]:
                    if u != v and not (u in on_air and v in on_air):
                        links.append(Link(u, v, bw, lat))
    cuts = np.exp(rng.uniform(np.log(1e4), np.log(2e6), pieces + 1)).astype(int)
    inst = make_instance(times, [int(m) for m in mem], [int(x) for x in cuts[1:]], int(cuts[0]),
                         devs, links, "s", name=f"sym-{pieces}x{sum(sizes) + 1}", media=media)  # fmt: skip
    return inst, names


def _partition(classes) -> set[frozenset[str]]:  # type: ignore[no-untyped-def]
    return {frozenset(g) for g in classes}


# ----- class detection ---------------------------------------------------------------------


def _hand_fleet(*, odd_uplink: bool = False, odd_memory: bool = False) -> Instance:
    """A source, two servers and four phones on one access point (same rate for every phone)."""
    phones = [f"p{i}" for i in range(4)]
    servers = ["s0", "s1"]
    devs = [Device("src", 10**10), *(Device(s, 10**10) for s in servers)]
    devs += [Device(p, 5 * 10**8 if odd_memory and p == "p2" else 10**9) for p in phones]
    times = [{"src": 0.01, "s0": 0.002, "s1": 0.002, **dict.fromkeys(phones, 0.02)}] * 3
    links = []
    for u in ["src", *servers, *phones]:
        for v in ["src", *servers, *phones]:
            if u == v:
                continue
            bw = 1e7 if (u in phones or v in phones) else 1e8
            if odd_uplink and u == "p3" and v in servers:
                bw = 5e6
            links.append(Link(u, v, bw, 1e-3))
    return make_instance(times, [10**6] * 3, [10**5] * 3, 10**5, devs, links, "src", name="fleet")


def test_hand_made_fleet_classes() -> None:
    got = _partition(device_classes(_hand_fleet()))
    assert got == {frozenset({"src"}), frozenset({"s0", "s1"}), frozenset({"p0", "p1", "p2", "p3"})}


def test_one_different_uplink_splits_the_phone_off() -> None:
    got = _partition(device_classes(_hand_fleet(odd_uplink=True)))
    assert frozenset({"p3"}) in got and frozenset({"p0", "p1", "p2"}) in got
    assert not swap_is_symmetry(_hand_fleet(odd_uplink=True), "p0", "p3")


def test_memory_is_part_of_the_signature_and_the_source_stays_alone() -> None:
    inst = _hand_fleet(odd_memory=True)
    got = _partition(device_classes(inst))
    assert frozenset({"p2"}) in got and frozenset({"p0", "p1", "p3"}) in got
    assert frozenset({"src"}) in got
    assert not swap_is_symmetry(inst, "src", "s0")


def test_random_symmetric_instances_give_back_their_classes() -> None:
    rng = np.random.default_rng(5)
    for k in range(30):
        sizes = [int(x) for x in rng.integers(1, 5, int(rng.integers(1, 5)))]
        inst, names = symmetric_instance(rng, sizes, 4, sparse=k % 2 == 1, medium=k % 3 == 0)
        assert _partition(device_classes(inst)) == _partition(names), inst


# ----- class DP against the bitset DP and brute force ------------------------------------


def _brute(inst: Instance, objective: str) -> float | None:
    """Brute-force optimum, or None when no plan fits in memory and reaches the source."""
    try:
        plan = plan_brute(inst, objective, BruteOptions(max_plans=5_000_000))
    except InfeasibleError:
        return None
    value = plan.predicted.value(objective)
    return value if value is not None and math.isfinite(value) else None


def _class_model(inst: Instance, objective: str) -> ClassModel:
    classes = device_classes(inst)
    if objective == "energy":
        usable = [c for c, g in enumerate(classes) if inst.device_by_name[g[0]].has_power]
    else:
        usable = list(range(len(classes)))
    return ClassModel(inst, objective, classes, usable)


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_class_dp_equals_brute_on_small_symmetric_instances(objective: str, monkeypatch) -> None:
    """~80 instances up to 8 pieces x 5 devices in 2-4 classes, dense/sparse/medium, roomy/tight."""
    calls = {"count_dp": 0}
    real = sum_mod._count_dp

    def counting(*args):
        calls["count_dp"] += 1
        return real(*args)

    monkeypatch.setattr(sum_mod, "_count_dp", counting)
    rng = np.random.default_rng(11 + (objective == "latency"))
    proven = checked = 0
    for k in range(80):
        sizes = [int(x) for x in rng.integers(1, 4, int(rng.integers(1, 4)))]
        while sum(sizes) > 4:
            sizes[int(np.argmax(sizes))] -= 1
        inst, _ = symmetric_instance(rng, sizes, int(rng.integers(1, 9)), sparse=k % 2 == 1,
                                     tight=k % 3 == 0, medium=k % 5 == 0)  # fmt: skip
        ref = _brute(inst, objective)
        model = _class_model(inst, objective)
        try:
            if objective == "throughput":
                path, exact, bound, _ = min_period_path(model, 50_000)
            else:
                path, exact, bound = class_sum_path(model)
        except InfeasibleError:
            assert ref is None, f"class DP says infeasible, brute found {ref} on {inst}"
            continue
        assert ref is not None
        stages = model.stages(path)
        validate_stages(inst, stages)
        value = objective_value(inst, stages, objective)
        checked += 1
        assert bound <= ref * (1 + REL), f"bound {bound} above the optimum {ref} on {inst}"
        assert value >= ref * (1 - REL)
        if exact and math.isclose(value, bound, rel_tol=1e-12):
            proven += 1
            assert math.isclose(value, ref, rel_tol=REL), f"class {value} != brute {ref} on {inst}"
        got = plan_dp(inst, objective)  # the front door: never worse than proven, always exact here
        assert got.details["exact"] is True
        assert math.isclose(got.predicted.value(objective), ref, rel_tol=REL)
    assert checked >= 60 and proven >= 0.8 * checked
    if objective == "latency":
        assert calls["count_dp"] > 0  # the count-limited DP was exercised, not only the relaxation


def test_latency_past_the_count_dp_budget_is_bounded(monkeypatch) -> None:
    """With the count DP's budget at 0, an over-used class leaves a heuristic plan: still valid,
    never better than brute force, and its bound (the count-free relaxation) below the optimum."""
    import coinfer.plan.chain._dp_classes as cls_mod

    real = cls_mod.least_sum_counts
    monkeypatch.setattr(cls_mod, "least_sum_counts", lambda *a: real(*a, budget=0))
    rng = np.random.default_rng(12)
    unproven = 0
    for k in range(80):
        sizes = [int(x) for x in rng.integers(1, 4, int(rng.integers(1, 4)))]
        while sum(sizes) > 4:
            sizes[int(np.argmax(sizes))] -= 1
        inst, _ = symmetric_instance(rng, sizes, int(rng.integers(1, 9)), sparse=k % 2 == 1,
                                     tight=k % 3 == 0, medium=k % 5 == 0)  # fmt: skip
        ref = _brute(inst, "latency")
        if ref is None:
            continue
        model = _class_model(inst, "latency")
        path, proven, bound = cls_mod.class_sum_path(model)
        stages = model.stages(path)
        validate_stages(inst, stages)
        assert bound <= ref * (1 + REL)
        assert objective_value(inst, stages, "latency") >= ref * (1 - REL)
        unproven += not proven
    assert unproven > 0  # the fallback really ran


def test_class_dp_equals_bitset_dp_on_mid_size_fleets() -> None:
    """10-12 devices in 3-4 classes, 12-20 pieces: the front door picks classes, and agrees with
    the bitset DP (classes off) on the optimum."""
    rng = np.random.default_rng(3)
    used_classes = 0
    for k in range(12):
        sizes = [int(rng.integers(1, 4)), int(rng.integers(2, 5)), int(rng.integers(3, 6))]
        inst, _ = symmetric_instance(rng, sizes, int(rng.integers(12, 21)), sparse=k % 3 == 2,
                                     tight=k % 2 == 1)  # fmt: skip
        for objective in ("throughput", "latency"):
            try:
                ref = plan_dp(inst, objective, DPOptions(use_classes=False))
            except InfeasibleError:
                with pytest.raises(InfeasibleError):
                    plan_dp(inst, objective)
                continue
            got = plan_dp(inst, objective)
            assert got.details["classes"] == len(sizes) + 1
            used_classes += got.details["method"] == "classes"
            assert got.details["exact"] is True
            a, b = got.predicted.value(objective), ref.predicted.value(objective)
            if ref.details["exact"]:
                assert math.isclose(a, b, rel_tol=REL), f"{objective}: classes {a} != bitset {b}"
            else:  # the bitset search hit a budget: the proven class optimum is no worse
                assert a <= b * (1 + REL)
                print(objective, "bitset unproven", a, b)
    assert used_classes >= 15


def test_class_energy_equals_brute() -> None:
    rng = np.random.default_rng(8)
    checked = 0
    for k in range(30):
        inst, _ = symmetric_instance(rng, [int(rng.integers(1, 3)), int(rng.integers(1, 3))],
                                     int(rng.integers(1, 6)), power=True, sparse=k % 2 == 1)  # fmt: skip
        ref = _brute(inst, "energy")
        if ref is None:
            continue
        got = plan_dp(inst, "energy")
        checked += 1
        assert math.isclose(got.predicted.energy_j, ref, rel_tol=REL)
    assert checked >= 20


def test_64_device_fleet_is_exact_through_classes_and_bounded_without() -> None:
    """48 phones, 12 boards, 3 servers, a source: exact via 4 classes; with classes switched
    off the same instance goes past exact reach, and its bound is below the class optimum."""
    rng = np.random.default_rng(64)
    inst, _ = symmetric_instance(rng, [3, 12, 48], 24)
    got = plan_dp(inst, "throughput")
    assert got.details["method"] == "classes" and got.details["classes"] == 4
    assert got.details["exact"] is True
    assert math.isclose(got.predicted.period_s, got.details["period_lower_bound_s"], rel_tol=1e-12)
    cut = plan_dp(inst, "throughput", DPOptions(use_classes=False))
    assert cut.details["method"] == "bound"
    assert cut.details["lower_bound"] <= got.predicted.period_s * (1 + REL)
    assert cut.predicted.period_s >= got.predicted.period_s * (1 - REL)


# ----- beyond exact reach: the bound ------------------------------------------------------


@pytest.mark.parametrize("objective", ["throughput", "latency", "energy"])
def test_lower_bound_is_below_the_exact_optimum(objective: str) -> None:
    """Force the bound path (max_exact_devices=3) on 5-8 devices, where the bitset DP still
    gives the optimum: the reported bound never exceeds it, and the gap bound is honest."""
    rng = np.random.default_rng(40 + ["throughput", "latency", "energy"].index(objective))
    checked = tight_groups = 0
    for k in range(40):
        inst = random_instance(rng, int(rng.integers(2, 11)), int(rng.integers(5, 9)),
                               tight_memory=k % 3 == 0, sparse_links=k % 2 == 1,
                               power=objective == "energy")  # fmt: skip
        try:
            opt = plan_dp(inst, objective)
        except InfeasibleError:
            continue
        if not opt.details["exact"]:  # the reference optimum itself is unproven: no yardstick
            continue
        best = opt.predicted.value(objective)
        for states in (4, 64, 4096):
            opts = DPOptions(max_exact_devices=3, bound_states=states,
                             beyond_reach="search" if k % 2 else "cut")  # fmt: skip
            try:
                got = plan_dp(inst, objective, opts)
            except InfeasibleError:  # the 3 kept devices cannot hold the model
                continue
            det = got.details
            assert det["method"] == "bound"
            value = got.predicted.value(objective)
            lb = det["lower_bound"]
            assert lb <= best * (1 + REL), f"bound {lb} > optimum {best} on {inst} ({states})"
            assert value >= best * (1 - REL)
            assert math.isclose(det["gap_bound"], max(0.0, (value - lb) / lb), rel_tol=1e-9)
            if det.get("bound_groups") and max(det["bound_groups"]) > 1:
                tight_groups += 1
            checked += 1
    assert checked >= 60
    if objective == "throughput":
        assert tight_groups > 0  # devices really were grouped (the min-figure relaxation ran)


def test_cut_path_reports_a_gap_bound() -> None:
    inst = random_instance(2, 30, 24)
    got = plan_dp(inst, "throughput")
    det = got.details
    assert det["method"] == "bound" and det["exact"] is False
    assert len(got.devices) <= 16  # the long-standing cut: source + the fastest 15
    assert 0 < det["lower_bound"] <= got.predicted.period_s
    assert math.isclose(
        det["gap_bound"], got.predicted.period_s / det["lower_bound"] - 1, rel_tol=1e-9
    )
