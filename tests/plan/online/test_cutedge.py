"""CutEdge (S3): the per-slot choice is the true minimiser, queues stay stable, V trades energy.

Each test has a counterpart that would make it fail: the brute force prices options through the
scalar path (and the reference cost model pins that path), the stability check is shown to flag an
overloaded system, and the latency test shows the bound binds.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from coinfer.core.evaluate import energy_j, latency_s
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.plan.online import (
    CutEdge,
    Decision,
    FixedSplit,
    Greedy,
    SplitSystem,
    drift_plus_penalty,
    markov_bandwidth,
    poisson_arrivals,
    run_slots,
)
from coinfer.plan.online.cutedge import radio_power_w

SLOT_S = 0.25
LEVELS = (0.4, 0.6, 0.8, 1.0)
MBIT = 1e6 / 8


def _instance(seed: int, pieces: int = 6, *, edge_power: bool = True):
    """A phone + edge instance with random piece times and cut sizes (phone 10x slower)."""
    rng = np.random.default_rng(seed)
    flops = rng.uniform(0.05, 0.4, pieces)  # GFLOP
    cuts = rng.integers(20_000, 800_000, pieces)
    cuts[-1] = 4_000  # small output
    times = [{"phone": f / 20.0, "edge": f / 200.0} for f in flops]
    devs = [
        Device("phone", 2**32, 0.8, 5.0, 1.5, dvfs_levels=LEVELS),
        Device("edge", 2**36, *((60.0, 150.0, 2.0) if edge_power else (0.0, 0.0, 0.0))),
    ]
    links = [Link("phone", "edge", 2.5e6, 0.01), Link("edge", "phone", 6.25e6, 0.01)]
    return make_instance(times, [1000] * pieces, cuts, 600_000, devs, links, "phone")


def _system(seed: int = 0, **kw) -> SplitSystem:
    return SplitSystem.from_instance(_instance(seed, **kw), slot_s=SLOT_S)


def _brute(system: SplitSystem, V: float, Q: float, Z: float, bw: float, L: float):
    """min over every (k, f, r) and idle of J, priced one option at a time."""
    best, arg = 0.0, None  # idle
    rates = [x * bw for x in system.rate_fractions]
    for k, j, r in itertools.product(
        range(system.num_splits), range(len(system.levels)), range(len(rates))
    ):
        p = system.price(k, j, rates[r], bw)
        served = min(Q, p["capacity_tasks"])
        val = drift_plus_penalty(
            served, p["energy_j"], p["latency_s"], V=V, backlog=Q, virtual=Z, latency_max_s=L
        )
        if val < best - 1e-12:
            best, arg = val, (k, j, rates[r], served)
    return best, arg


def test_price_reduces_to_the_reference_cost_model_at_full_rate() -> None:
    inst = _instance(3, edge_power=False)  # the edge's own energy is not the device's
    system = SplitSystem.from_instance(inst, slot_s=SLOT_S)
    bw = inst.link_by_pair[("phone", "edge")].bandwidth_Bps
    P = inst.num_pieces
    for k in range(P + 1):
        for j, f in enumerate(system.levels):
            if k == 0:
                stages = (Stage(0, P - 1, ("edge",)),)
            elif k == P:
                stages = (Stage(0, P - 1, ("phone",), (f,)),)
            else:
                stages = (Stage(0, k - 1, ("phone",), (f,)), Stage(k, P - 1, ("edge",)))
            got = system.price(k, j, bw, bw)
            assert got["latency_s"] == pytest.approx(latency_s(inst, stages), rel=1e-12)
            assert got["energy_j"] == pytest.approx(energy_j(inst, stages), rel=1e-12)


def test_vectorised_options_equal_scalar_prices() -> None:
    system = _system(1)
    bw = 3.1e6
    opts = system.options(bw)
    for k, j, r in itertools.product(
        range(system.num_splits), range(len(system.levels)), range(len(system.rate_fractions))
    ):
        p = system.price(k, j, float(opts.rates_Bps[r]), bw)
        assert opts.latency_s[k, j, r] == pytest.approx(p["latency_s"], rel=1e-12)
        assert opts.energy_j[k, j, r] == pytest.approx(p["energy_j"], rel=1e-12)
        assert opts.capacity_tasks[k, j, r] == pytest.approx(p["capacity_tasks"], rel=1e-12)


def test_radio_power_is_full_power_at_capacity_and_convex() -> None:
    cap = 4e6
    assert radio_power_w(cap, cap, 1.5, 10e6) == pytest.approx(1.5)
    r = np.linspace(0.1, 1.0, 10) * cap
    p = np.asarray(radio_power_w(r, cap, 1.5, 10e6))
    assert np.all(np.diff(p) > 0)
    assert np.all(np.diff(p / r) > 0)  # joules per byte rise with the rate


@pytest.mark.parametrize("seed", range(6))
def test_decision_equals_brute_force(seed: int) -> None:
    system = _system(seed)
    rng = np.random.default_rng(100 + seed)
    for _ in range(25):
        V = float(10 ** rng.uniform(-1, 3))
        Q = float(rng.choice([0.0, rng.uniform(0, 3), rng.uniform(0, 200)]))
        Z = float(rng.choice([0.0, rng.uniform(0, 50)]))
        bw = float(rng.uniform(0.3, 6.0) * MBIT * 8)
        L = float(rng.uniform(0.05, 0.6))
        d = CutEdge(system, V, L).decide(0, Q, Z, bw)
        best, arg = _brute(system, V, Q, Z, bw, L)
        assert d.objective == pytest.approx(best, rel=1e-9, abs=1e-12)
        if arg is None:
            assert d.idle and d.served == 0.0
            continue
        # the chosen option's own J (priced by the scalar path) is the minimum too
        p = system.price(d.split, d.level, d.rate_Bps or bw, bw)
        again = drift_plus_penalty(
            d.served, p["energy_j"], p["latency_s"], V=V, backlog=Q, virtual=Z, latency_max_s=L
        )
        assert again == pytest.approx(best, rel=1e-9, abs=1e-12)
        assert d.served == pytest.approx(min(Q, p["capacity_tasks"]))


def _stable(backlog: np.ndarray) -> bool:
    """No growth: the last third's mean backlog is within 20 % (+2 tasks) of the middle third's."""
    n = backlog.size // 3
    mid, last = backlog[n : 2 * n].mean(), backlog[2 * n :].mean()
    return bool(last <= 1.2 * mid + 2.0)


def _inputs(rate: float, slots: int = 6000, seed: int = 7):
    bw = markov_bandwidth([1e6, 2.5e6, 5e6], 0.9, slots, seed)
    return bw, poisson_arrivals(rate, SLOT_S, slots, seed)


def test_queues_stay_bounded_inside_capacity_and_grow_outside() -> None:
    system = _system(2)
    ctl = CutEdge(system, V=20.0, latency_max_s=0.5)
    best_rate = max(float(system.options(1e6).capacity_tasks.max()) / SLOT_S, 0.0)
    inside = run_slots(ctl, *_inputs(0.5 * best_rate), slot_s=SLOT_S, latency_max_s=0.5)
    assert _stable(inside.backlog) and _stable(inside.virtual)
    assert inside.summary(warmup=2000)["throughput_rps"] == pytest.approx(
        inside.summary(warmup=2000)["arrival_rps"], rel=0.02
    )
    # the same check flags an overloaded system (arrivals beyond the best capacity at any bw)
    top = float(system.options(5e6).capacity_tasks.max()) / SLOT_S
    over = run_slots(ctl, *_inputs(1.5 * top), slot_s=SLOT_S, latency_max_s=0.5)
    assert not _stable(over.backlog)


def test_larger_V_spends_less_energy_and_holds_more_backlog() -> None:
    system = _system(4)
    bw, arr = _inputs(0.4 * float(system.options(1e6).capacity_tasks.max()) / SLOT_S, 5000)
    runs = [
        run_slots(CutEdge(system, V, 0.5), bw, arr, slot_s=SLOT_S, latency_max_s=0.5).summary(
            warmup=1000
        )
        for V in (0.5, 5.0, 50.0, 500.0)
    ]
    power = [r["power_w"] for r in runs]
    backlog = [r["backlog_mean"] for r in runs]
    assert all(b <= a * 1.01 for a, b in itertools.pairwise(power)), power
    assert power[-1] < 0.95 * power[0], power
    assert all(b >= a for a, b in itertools.pairwise(backlog)), backlog


def test_virtual_queue_enforces_the_latency_bound() -> None:
    system = _system(5)
    bw, arr = _inputs(0.3 * float(system.options(1e6).capacity_tasks.max()) / SLOT_S, 3000)
    free = run_slots(CutEdge(system, 20.0, 100.0), bw, arr, slot_s=SLOT_S, latency_max_s=100.0)
    loose = free.summary(warmup=1000)
    bound = 0.7 * loose["service_latency_s"]  # binding: the energy optimum is slower than this
    held = run_slots(CutEdge(system, 20.0, bound), bw, arr, slot_s=SLOT_S, latency_max_s=bound)
    s = held.summary(warmup=1000)
    assert s["service_latency_s"] <= bound * 1.03, (s["service_latency_s"], bound)
    assert s["power_w"] > loose["power_w"]  # meeting the bound costs energy
    assert _stable(held.virtual)


def test_baselines_serve_and_greedy_clears_backlog_when_it_can() -> None:
    system = _system(6)
    g = Greedy(system, 10.0).decide(0, 1.0, 0.0, 5e6)
    assert g.served == pytest.approx(1.0)
    fx = FixedSplit.best_static(system, 2.5e6, 0.5, 10.0)
    d = fx.decide(0, 2.0, 0.0, 2.5e6)
    assert d.split == fx.split and d.freq == 1.0
    assert Greedy(system, 10.0).decide(0, 0.0, 0.0, 5e6).idle


def test_decision_records_round_trip_json() -> None:
    system = _system(0)
    for Q in (0.0, 50.0):
        d = CutEdge(system, 1.0, 0.3).decide(3, Q, 1.5, 2e6)
        back = Decision.from_dict(json.loads(json.dumps(d.to_dict())))
        assert back == d
    with pytest.raises(InputError, match="decision record"):
        Decision.from_dict({"policy": "x", "bogus": 1})


def test_bad_inputs_are_named() -> None:
    inst = _instance(0)
    with pytest.raises(InputError, match="server 'nope'"):
        SplitSystem.from_instance(inst, server="nope", slot_s=SLOT_S)
    with pytest.raises(InputError, match="V must be"):
        CutEdge(_system(0), -1.0, 0.2)
    with pytest.raises(InputError, match="bandwidth"):
        _system(0).options(math.nan)
