"""PSOMW for fused-layer tile placement: cost models, MW order, brute force, planner option."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import check_plan
from coinfer.core.instance import Link
from coinfer.core.tiles import LayerSpec, tile_plan
from coinfer.errors import InputError
from coinfer.plan import plan
from coinfer.plan.fused.placement import (
    Solution,
    TileCosts,
    bf_size,
    brute_force,
    lpt_order,
    mw_order,
    psomw_tiles,
    schedule_latency,
    tile_costs,
)
from coinfer.plan.fused.planner import (
    FusedOptions,
    _greedy_costs,
    assign_tiles,
    conv_instance,
    plan_fused,
)


def _conv(i: int, o: int) -> LayerSpec:
    return LayerSpec("conv", (3, 3), (1, 1), (1, 1), (1, 1), i, o)


LAYERS = (
    _conv(3, 16),
    _conv(16, 16),
    LayerSpec("maxpool", (2, 2), (2, 2), (0, 0), (1, 1), 16, 16),
    _conv(16, 32),
)


def _case(seed: int, devices: int, grid: tuple[int, int]):
    """A weak source + helpers behind 2-30 Mbit/s links (seeded): transfers matter."""
    rng = np.random.default_rng(seed)
    names = ["src"] + [f"h{i}" for i in range(devices - 1)]
    flops = {n: float(rng.uniform(2, 10)) * 1e8 for n in names}
    flops["src"] = 1e8
    links = [
        Link(u, v, float(rng.uniform(2, 30)) * 1.25e5, 0.002)
        for u in names
        for v in names
        if u != v
    ]
    inst = conv_instance(LAYERS, (32, 32), flops, links, "src")
    tp = tile_plan(LAYERS, (32, 32), grid)
    return inst, tp, tile_costs(inst, tp, names)


def _greedy(tp, costs: TileCosts, model: str) -> Solution:
    a = _greedy_costs(costs, [t.flops for t in tp.tiles], "src")
    o = lpt_order(costs, a)
    return Solution(0, a, o, schedule_latency(costs, a, o, model)[0])  # type: ignore[arg-type]


def _random_costs(seed: int, T: int, D: int) -> TileCosts:
    rng = np.random.default_rng(seed)
    send = rng.uniform(0.001, 0.01, (T, D))
    send[:, 0] = 0.0  # device 0 is the source: its tiles skip the radio
    back = rng.uniform(0.0005, 0.005, (T, D))
    back[:, 0] = 0.0
    comp = rng.uniform(0.002, 0.02, (T, 1)) * rng.uniform(0.5, 3.0, (1, D))
    return TileCosts(tuple(f"d{i}" for i in range(D)), send, comp, back)


# ----- cost models ---------------------------------------------------------------------------


def test_serial_model_is_assign_tiles_cost_model() -> None:
    inst, tp, costs = _case(3, 4, (2, 3))
    res = assign_tiles(inst, tp, list(costs.devices))
    assign = tuple(costs.devices.index(d) for d in res.assignment)
    lat, fin = schedule_latency(costs, assign, None, "serial")
    assert lat == pytest.approx(res.latency_s, rel=1e-12)
    assert assign == _greedy_costs(costs, [t.flops for t in tp.tiles], "src")
    for j, d in enumerate(costs.devices):
        assert fin[j] == pytest.approx(res.finish_s.get(d, 0.0), rel=1e-12, abs=1e-15)


def test_pipelined_model_by_hand() -> None:
    # two tiles to device 1, one kept at the source (device 0)
    send = np.array([[0.0, 2.0], [0.0, 1.0], [0.0, 5.0]])
    comp = np.array([[4.0, 3.0], [4.0, 3.0], [1.0, 1.0]])
    back = np.array([[0.0, 0.5], [0.0, 0.5], [0.0, 0.5]])
    c = TileCosts(("src", "h"), send, comp, back)
    # order (0, 1): radio 0-2 tile 0, 2-3 tile 1; h computes 2-5, 5-8; returns 5-5.5, 8-8.5
    lat, fin = schedule_latency(c, (1, 1, 0), (0, 1, 2), "pipelined")
    assert lat == pytest.approx(8.5) and fin[0] == pytest.approx(1.0)
    # the other order: radio 0-1 tile 1, 1-3 tile 0; h computes 1-4, 4-7; ends 7.5
    assert schedule_latency(c, (1, 1, 0), (1, 0, 2), "pipelined")[0] == pytest.approx(7.5)
    # the serial model: 2+3+0.5 + 1+3+0.5 = 10 on h, no overlap
    assert schedule_latency(c, (1, 1, 0), None, "serial")[0] == pytest.approx(10.0)
    # MW picks the better order (shortest transfer first gets h busy sooner)
    assert schedule_latency(c, (1, 1, 0), mw_order(c, (1, 1, 0)), "pipelined")[0] == 7.5


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 6), D=st.integers(1, 4))
def test_schedule_bounds_and_mw_order_is_a_permutation(seed: int, T: int, D: int) -> None:
    c = _random_costs(seed, T, D)
    rng = np.random.default_rng(seed)
    assign = tuple(int(x) for x in rng.integers(0, D, T))
    order = tuple(int(x) for x in rng.permutation(T))
    lat, fin = schedule_latency(c, assign, order, "pipelined")
    ser = schedule_latency(c, assign, None, "serial")[0]
    # lower bounds: each device's compute; the radio's total + the last tile's compute+return
    for d in range(D):
        mine = [t for t in range(T) if assign[t] == d]
        assert fin[d] >= sum(c.comp_s[t, d] for t in mine) - 1e-12
    remote = [t for t in range(T) if c.send_s[t, assign[t]] > 0]
    if remote:
        radio = sum(c.send_s[t, assign[t]] for t in remote)
        tail = min(c.comp_s[t, assign[t]] + c.back_s[t, assign[t]] for t in remote)
        assert lat >= radio + tail - 1e-12
    # with a single remote device the pipelined model only overlaps: never slower than serial
    if len({assign[t] for t in remote}) <= 1:
        assert lat <= ser + 1e-12
    mw = mw_order(c, assign)
    assert sorted(mw) == list(range(T))
    # one tile on one device: both models are send + compute + return
    one = schedule_latency(c, (D - 1,), (0,), "pipelined")[0]
    assert one == pytest.approx(c.total_s[0, D - 1])


@pytest.mark.parametrize("seed", range(4))
def test_mw_order_is_optimal_for_one_remote_device(seed: int) -> None:
    # all tiles to one helper with free returns = two-machine flow shop (radio, compute), where
    # Johnson's rule is exact; with returns (a third stage) MW is a heuristic, within 5 % here
    c = _random_costs(seed, 5, 2)
    assign = (1,) * 5
    with_back = schedule_latency(c, assign, mw_order(c, assign), "pipelined")[0]
    best_back = min(
        schedule_latency(c, assign, p, "pipelined")[0] for p in itertools.permutations(range(5))
    )
    assert best_back <= with_back <= best_back * 1.05
    c = TileCosts(c.devices, c.send_s, c.comp_s, np.zeros_like(c.back_s))
    best = min(
        schedule_latency(c, assign, p, "pipelined")[0] for p in itertools.permutations(range(5))
    )
    got = schedule_latency(c, assign, mw_order(c, assign), "pipelined")[0]
    assert got == pytest.approx(best, rel=1e-12)


# ----- brute force and the swarm --------------------------------------------------------------


def test_brute_force_beats_every_sampled_solution_and_refuses_big_spaces() -> None:
    c = _random_costs(1, 4, 3)
    rng = np.random.default_rng(0)
    for model in ("serial", "pipelined"):
        bf, a, o = brute_force(c, model)  # type: ignore[arg-type]
        assert schedule_latency(c, a, o, model)[0] == pytest.approx(bf)  # type: ignore[arg-type]
        for _ in range(200):
            assign = tuple(int(x) for x in rng.integers(0, 3, 4))
            order = tuple(int(x) for x in rng.permutation(4))
            assert schedule_latency(c, assign, order, model)[0] >= bf - 1e-12  # type: ignore[arg-type]
    assert bf_size(c, "pipelined") == 3**4 * 24
    with pytest.raises(InputError, match="exceed the budget"):
        brute_force(_random_costs(0, 9, 4), "pipelined")
    with pytest.raises(InputError, match="link_model"):
        brute_force(c, "shared")  # type: ignore[arg-type]


# (model, devices, grid) of the small cases: brute force <= 0.3 s each
SMALL = {
    "serial": [(3, (2, 3)), (4, (2, 3)), (3, (3, 3)), (4, (2, 4))],
    "pipelined": [(3, (1, 4)), (3, (2, 2)), (3, (1, 5)), (2, (2, 3))],
}


@pytest.mark.parametrize("model", ["serial", "pipelined"])
def test_psomw_within_one_percent_of_brute_force_and_never_worse_than_greedy(model) -> None:
    gaps, greedy_gaps = [], []
    for seed in range(8):
        D, grid = SMALL[model][seed % 4]
        _, tp, c = _case(seed, D, grid)
        bf = brute_force(c, model)[0]
        g = _greedy(tp, c, model)
        sol, hist = psomw_tiles([c], [0.0], model, np.random.default_rng(seed), init=[g])
        assert sol.latency_s <= g.latency_s + 1e-15  # elitist: seeded greedy is a floor
        assert sol.latency_s >= bf - 1e-12  # nothing beats the exact optimum
        assert hist == sorted(hist, reverse=True)  # the global best never gets worse
        assert schedule_latency(c, sol.assign, sol.order, model)[0] == pytest.approx(sol.latency_s)
        # the swarm alone (no greedy particle, no polish) must also get close
        raw, _ = psomw_tiles([c], [0.0], model, np.random.default_rng(seed), polish=False)
        gaps.append(raw.latency_s / bf - 1)
        greedy_gaps.append(g.latency_s / bf - 1)
        assert sol.latency_s / bf - 1 <= 0.02
    print(f"{model}: PSOMW (unseeded) gap mean {np.mean(gaps):.3%} worst {max(gaps):.3%}; "
          f"greedy mean {np.mean(greedy_gaps):.3%}")  # fmt: skip
    assert np.mean(gaps) <= 0.01
    assert np.mean(gaps) < np.mean(greedy_gaps)  # the cases are ones where greedy is not optimal


def test_psomw_is_deterministic_per_seed_and_searches_candidates() -> None:
    _, _, c1 = _case(5, 3, (1, 2))
    _, _, c2 = _case(5, 3, (2, 2))
    a, ha = psomw_tiles(
        [c1, c2], [0.0, 0.001], "pipelined", np.random.default_rng(7), iterations=20
    )
    b, hb = psomw_tiles(
        [c1, c2], [0.0, 0.001], "pipelined", np.random.default_rng(7), iterations=20
    )
    assert a == b and ha == hb and len(ha) == 21
    for model in ("serial", "pipelined"):  # the reported latency includes the suffix (extras)
        s, _ = psomw_tiles([c1, c2], [0.5, 0.25], model, np.random.default_rng(1), iterations=5)
        cost = (c1, c2)[s.cand]
        own = schedule_latency(cost, s.assign, s.order, model)[0]
        assert s.latency_s == pytest.approx(own + (0.5, 0.25)[s.cand], rel=1e-12)
    best = min(brute_force(c1, "pipelined")[0], brute_force(c2, "pipelined")[0] + 0.001)
    assert a.latency_s <= best * 1.01
    with pytest.raises(InputError, match="no candidate"):
        psomw_tiles([], [], "serial", np.random.default_rng(0))


# ----- the planner option ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ["serial", "pipelined"])
def test_plan_fused_pso_never_worse_than_greedy_and_records_seed(model) -> None:
    inst, _, _ = _case(2, 4, (1, 1))
    base = dict(max_tiles=6, link_model=model)
    greedy = plan_fused(inst, "latency", FusedOptions(search="greedy", **base))
    pso = plan_fused(inst, "latency", FusedOptions(search="pso", seed=5, iterations=30, **base))
    check_plan(inst, pso)
    g, p = greedy.details["fused"], pso.details["fused"]
    assert greedy.seed is None and pso.seed == 5
    assert p["search"] == "pso" and p["link_model"] == model
    assert p["latency_s"] <= g["latency_s"] * (1 + 1e-12)
    assert p["greedy_latency_s"] == pytest.approx(g["latency_s"])
    assert sorted(p["order"]) == list(range(p["grid"][0] * p["grid"][1]))
    assert len(p["assignment"]) == p["grid"][0] * p["grid"][1]
    assert p["pso"]["history"][0] >= p["pso"]["history"][-1]
    for f in (g, p):
        assert f["latency_s"] == pytest.approx(f["block_latency_s"] + f["suffix_latency_s"])
    again = plan_fused(inst, "latency", FusedOptions(search="pso", seed=5, iterations=30, **base))
    assert again.details["fused"] == p | {"pso": again.details["fused"]["pso"]}
    assert again.stages == pso.stages


def test_registry_passes_seed_and_refuses_bad_options() -> None:
    inst, _, _ = _case(1, 3, (1, 1))
    p = plan(inst, "fused", "latency", seed=3, max_tiles=4, iterations=10)
    assert p.seed == 3 and p.details["fused"]["search"] == "pso"
    with pytest.raises(InputError, match="search"):
        plan_fused(inst, "latency", FusedOptions(search="anneal"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="link_model"):
        plan_fused(inst, "latency", FusedOptions(link_model="mesh"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="particles"):
        plan_fused(inst, "latency", FusedOptions(particles=0))
    assert math.isfinite(p.predicted.latency_s)


@pytest.mark.parametrize("model", ["serial", "pipelined"])
def test_plan_fused_pso_at_least_greedy_on_random_clusters(model) -> None:
    gains = []
    for seed in range(5):
        inst, _, _ = _case(10 + seed, 2 + seed % 3, (1, 1))
        opts = dict(max_tiles=6, link_model=model, iterations=15, particles=15)
        g = plan_fused(inst, "latency", FusedOptions(search="greedy", **opts))
        p = plan_fused(inst, "latency", FusedOptions(seed=seed, **opts))
        check_plan(inst, p)
        gl, pl = g.details["fused"]["latency_s"], p.details["fused"]["latency_s"]
        assert pl <= gl * (1 + 1e-12)
        gains.append(1 - pl / gl)
    if model == "pipelined":  # the shipping order matters here: PSOMW must find something
        assert max(gains) > 0.01


def test_cli_records_the_fused_seed(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from coinfer.cli import app

    inst, _, _ = _case(4, 3, (1, 1))
    path = tmp_path / "conv.json"
    inst.save(path)
    args = ["plan", "--instance", str(path), "--algo", "fused", "--objective", "latency"]
    out = CliRunner().invoke(app, [*args, "--seed", "9", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["seed"] == 9 and data["details"]["fused"]["search"] == "pso"


def test_a_shared_medium_bounds_the_tile_latency_by_its_air_time() -> None:
    """Two helpers on the source's Wi-Fi cell: independent links let both receive at once, the
    shared medium cannot; the brute-force optimum and the schedule agree on the air bound."""
    send = np.array([[0.0, 0.05, 0.05]] * 4)
    comp = np.array([[0.2, 0.1, 0.1]] * 4)
    back = np.array([[0.0, 0.01, 0.01]] * 4)
    indep = TileCosts(("src", "h1", "h2"), send, comp, back)
    air = {"wifi": send + back}
    shared = TileCosts(("src", "h1", "h2"), send, comp, back, air)
    assign = (1, 1, 2, 2)
    lat_indep, _ = schedule_latency(indep, assign)
    lat_shared, _ = schedule_latency(shared, assign)
    assert lat_indep == pytest.approx(0.32)  # each helper: 2 x (0.05 + 0.1 + 0.01)
    assert shared.air_bound(assign) == pytest.approx(0.24) and lat_shared == pytest.approx(0.32)
    many = TileCosts(("src", "h1", "h2"), send * 4, comp, back, {"wifi": (send + back) * 4})
    # slower air: each helper needs 2 x (0.2 + 0.1 + 0.01) = 0.62 s, the air 4 x 0.24 = 0.96 s
    assert schedule_latency(many, assign)[0] == pytest.approx(0.96)
    for model in ("serial", "pipelined"):
        best, a, order = brute_force(many, model)
        assert best == pytest.approx(schedule_latency(many, a, order, model)[0])
        assert best >= many.air_bound(a) - 1e-12


# -- the "links" model: one link per destination, what the tiled runtime does ------------------
def _links_by_hand(costs: TileCosts, assign, order) -> float:
    """Per device on its own: arrivals are the running sum of its sends in shipping order."""
    best = 0.0
    for d in range(costs.num_devices):
        link = free = ret = 0.0
        for t in order:
            if assign[t] != d:
                continue
            link += costs.send_s[t, d]
            free = max(link, free) + costs.comp_s[t, d]
            ret = max(free, ret) + costs.back_s[t, d]
        best = max(best, ret)
    return best


@settings(max_examples=40)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 4))
def test_links_model_is_each_devices_own_pipeline(seed: int, T: int, D: int) -> None:
    costs = _random_costs(seed, T, D)
    rng = np.random.default_rng(seed)
    assign = tuple(int(x) for x in rng.integers(0, D, T))
    order = tuple(int(x) for x in rng.permutation(T))
    lat = schedule_latency(costs, assign, order, "links")[0]
    assert lat == pytest.approx(_links_by_hand(costs, assign, order))
    # one radio can only be slower than a link per device; no overlap at all slower still
    assert lat <= schedule_latency(costs, assign, order, "pipelined")[0] + 1e-12
    assert lat <= schedule_latency(costs, assign, order, "serial")[0] + 1e-12


def test_links_model_brute_force_and_swarm_agree_on_small_cases() -> None:
    for seed in range(4):
        _inst, tp, costs = _case(seed, 3, (2, 2))
        best, assign, order = brute_force(costs, "links")
        assert schedule_latency(costs, assign, order, "links")[0] == pytest.approx(best)
        greedy = _greedy(tp, costs, "links")
        sol, _ = psomw_tiles(
            [costs], [0.0], "links", np.random.default_rng(seed), particles=10, iterations=20,
            init=[greedy],
        )  # fmt: skip
        assert best - 1e-12 <= sol.latency_s <= greedy.latency_s + 1e-12


@settings(max_examples=40)
@given(
    st.integers(0, 10_000),
    st.integers(1, 6),
    st.integers(1, 4),
    st.sampled_from(["serial", "pipelined", "links"]),
)
def test_timeline_ends_when_schedule_latency_says(seed: int, T: int, D: int, model: str) -> None:
    from coinfer.plan.fused.placement import schedule_timeline

    costs = _random_costs(seed, T, D)
    rng = np.random.default_rng(seed)
    assign = tuple(int(x) for x in rng.integers(0, D, T))
    order = tuple(int(x) for x in rng.permutation(T))
    bars = schedule_timeline(costs, assign, order, model)  # type: ignore[arg-type]
    assert sorted(b["tile"] for b in bars) == list(range(T))
    lat, _fin = schedule_latency(costs, assign, order, model)  # type: ignore[arg-type]
    assert max(b["returned"] for b in bars) == pytest.approx(lat)
    for b in bars:
        assert b["send_start"] <= b["arrive"] <= b["start"] <= b["end"] <= b["returned"] + 1e-12
    for d in range(D):  # a device computes one tile at a time
        spans = sorted((b["start"], b["end"]) for b in bars if b["device"] == d)
        assert all(e0 <= s1 + 1e-12 for (_, e0), (s1, _) in itertools.pairwise(spans))
