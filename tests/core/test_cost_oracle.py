"""``core.evaluate`` and the simulator against the independent oracle (tests/core/cost_oracle.py).

Random instances here come from this file's own generator (not ``coinfer.testing``), so the
check shares nothing with the code under test but the ``Instance`` data type. They include
everything the reference model prices: replicated stages, relayed (store-and-forward) paths that
beat a slow direct link, missing direct links, a device serving several stages, DVFS levels,
power figures, and devices that are fast on some pieces and slow on others.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cost_oracle import (
    cheapest_path,
    oracle_busy,
    oracle_energy_j,
    oracle_latency_s,
    oracle_period_s,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import busy_times, energy_j, evaluate, latency_s, period_s
from coinfer.core.instance import Device, Instance, Link, Medium, make_instance
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.schedule import schedule
from coinfer.simulate import simulate

REL = 1e-9


def random_instance(
    seed: int,
    *,
    power: bool = True,
    max_devices: int = 6,
    link_scale: float = 1.0,
    media: bool = True,
) -> Instance:
    """Heterogeneous devices, sparse directed links with slow shortcuts, optional power/DVFS,
    and (about every other seed, when ``media``) a shared medium over a random group of devices.

    ``link_scale`` multiplies every bandwidth (and divides every latency), e.g. to make a plan
    compute-bound."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, max_devices + 1))
    P = int(rng.integers(2, 8))
    names = [f"n{i}" for i in range(n)]
    speed = rng.uniform(0.2, 5.0, n)
    # per-(piece, device) affinity 0.25x..4x: a device fast on some pieces is slow on others
    affinity = np.exp(rng.uniform(np.log(0.25), np.log(4.0), (P, n)))
    work = rng.uniform(1e-3, 3e-2, P)
    times = [{names[d]: float(work[p] * affinity[p, d] / speed[d]) for d in range(n)}
             for p in range(P)]  # fmt: skip
    mem = [int(x) for x in rng.integers(1_000, 50_000, P)]
    out = [int(x) for x in rng.integers(1_000, 2_000_000, P)]
    devices = []
    for name in names:
        kw = {}
        if power:
            active = float(rng.uniform(1.0, 20.0))
            kw = dict(
                power_idle_w=active * float(rng.uniform(0.05, 0.4)),
                power_active_w=active,
                power_transmit_w=float(rng.uniform(0.1, 3.0)) if rng.random() < 0.8 else None,
                dvfs_levels=(0.5, 0.75, 1.0) if rng.random() < 0.5 else (1.0,),
            )
        devices.append(Device(name, 10**9, **kw))
    # a directed ring keeps every device reachable; extra links come and go at random, and some
    # direct links are very slow so that a relay through other devices is cheaper
    pairs = {(i, (i + 1) % n) for i in range(n)}
    for a in range(n):
        for b in range(n):
            if a != b and rng.random() < 0.45:
                pairs.add((a, b))
    links = []
    for a, b in sorted(pairs):
        slow = rng.random() < 0.25
        bw = (
            float(np.exp(rng.uniform(np.log(1e4), np.log(1e5))))
            if slow
            else float(np.exp(rng.uniform(np.log(1e6), np.log(1e8))))
        )
        lat = float(rng.uniform(0.0, 5e-3))
        links.append(Link(names[a], names[b], bw * link_scale, lat / link_scale))
    src = names[int(rng.integers(n))]
    shared: list[Medium] = []
    if media and rng.random() < 0.5:  # drawn last: every other figure is the same without media
        members = [
            names[i] for i in sorted(rng.choice(n, int(rng.integers(2, n + 1)), replace=False))
        ]
        wired = [lk for lk in links if lk.src in members and lk.dst in members]
        links = [lk for lk in links if lk not in wired or rng.random() < 0.3]
        bw = float(np.exp(rng.uniform(np.log(1e6), np.log(1e8))))
        shared.append(Medium("air", tuple(members), bw * link_scale, 2e-3 / link_scale))
    return make_instance(
        times, mem, out, int(rng.integers(1_000, 600_000)), devices, links, src, media=shared
    )


def random_stages(inst: Instance, seed: int, *, revisit: bool = False, replicas: bool = True):
    """Random contiguous stages with 1-3 replicas each and random DVFS levels."""
    rng = np.random.default_rng(seed + 7919)
    P, names = inst.num_pieces, list(inst.device_names)
    k = int(rng.integers(1, min(P, len(names)) + 1))
    cuts = sorted(rng.choice(np.arange(1, P), size=k - 1, replace=False)) if k > 1 else []
    bounds = [0, *[int(c) for c in cuts], P]
    free = list(rng.permutation(names))
    stages = []
    for s in range(k):
        r = int(rng.integers(1, 4)) if replicas else 1
        if revisit:
            devs = list(rng.choice(names, size=min(r, len(names)), replace=False))
        else:
            r = max(1, min(r, len(free) - (k - s - 1)))
            devs, free = free[:r], free[r:]
        levels = [float(rng.choice(inst.device_by_name[d].dvfs_levels)) for d in devs]
        freqs = None if all(f == 1.0 for f in levels) else tuple(levels)
        stages.append(Stage(bounds[s], bounds[s + 1] - 1, tuple(str(d) for d in devs), freqs))
    return tuple(stages)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-15)


@settings(max_examples=250)
@given(seed=st.integers(0, 10**6), revisit=st.booleans())
def test_evaluate_equals_the_oracle(seed: int, revisit: bool) -> None:
    inst = random_instance(seed)
    stages = random_stages(inst, seed, revisit=revisit)
    m = evaluate(inst, stages)
    assert _close(m.latency_s, oracle_latency_s(inst, stages)), (m, stages)
    assert _close(m.period_s, oracle_period_s(inst, stages)), (m, stages)
    assert _close(m.energy_j, oracle_energy_j(inst, stages)), (m, stages)


@settings(max_examples=150)
@given(seed=st.integers(0, 10**6))
def test_busy_times_equal_the_oracle_per_device_and_link(seed: int) -> None:
    inst = random_instance(seed, power=False)
    stages = random_stages(inst, seed)
    dev, link = busy_times(inst, stages)
    odev, olink = oracle_busy(inst, stages)
    assert set(dev) == set(odev) and all(_close(dev[d], odev[d]) for d in dev)
    assert set(link) == set(olink) and all(_close(link[k], olink[k]) for k in link)


@settings(max_examples=100)
@given(seed=st.integers(0, 10**6))
def test_routes_are_the_cheapest_simple_paths(seed: int) -> None:
    inst = random_instance(seed, power=False)
    rng = np.random.default_rng(seed)
    for u in inst.device_names:
        for v in inst.device_names:
            nbytes = float(rng.uniform(1.0, 2e6))
            mine = cheapest_path(inst, u, v, nbytes)
            theirs = inst.path(u, v, nbytes)
            if u == v:
                assert theirs == () and mine == []
            else:
                cost = sum(lk.transfer_s(nbytes) for lk in theirs)
                assert mine is not None and math.isclose(
                    cost, sum(lk.transfer_s(nbytes) for lk in mine), rel_tol=1e-12
                )


def test_the_generator_exercises_relays_replicas_revisits_and_dvfs() -> None:
    """The property tests above only mean something if these cases actually occur."""
    relayed = replicated = dvfs = mixed = shared = 0
    for seed in range(200):
        inst = random_instance(seed)
        stages = random_stages(inst, seed)
        replicated += any(len(s.devices) > 1 for s in stages)
        dvfs += any(s.freqs is not None for s in stages)
        prev = [inst.source]
        for s in stages:
            for u in prev:
                for v in s.devices:
                    p = inst.path(u, v, inst.cut_bytes(s.first))
                    direct = inst.link_by_pair.get((u, v))
                    relayed += len(p) > 1 and direct is not None  # a relay beat the direct link
            prev = list(s.devices)
        t = [[pc.time_s[d] for d in inst.device_names] for pc in inst.pieces]
        order = {tuple(np.argsort(row)) for row in t}
        mixed += len(order) > 1  # the fastest device differs between pieces
        _, busy = busy_times(inst, stages)
        shared += "air" in busy  # some transfer of the plan crosses the shared medium
    assert relayed >= 20 and replicated >= 100 and dvfs >= 50 and mixed >= 150
    assert shared >= 50


def test_unreachable_transfer_costs_infinite_time_and_energy() -> None:
    devs = [Device("s", 10**9, 1.0, 2.0, 1.0), Device("x", 10**9, 1.0, 2.0, 1.0)]
    inst = make_instance(
        [{"s": 0.01, "x": 0.01}], [1], [10], 10, devs, [Link("s", "x", 1e6, 0)], "s"
    )
    stages = (Stage(0, 0, ("x",)),)  # x can never send the output back to s
    assert math.isinf(latency_s(inst, stages)) and math.isinf(oracle_latency_s(inst, stages))
    assert math.isinf(period_s(inst, stages)) and math.isinf(oracle_period_s(inst, stages))
    assert math.isinf(energy_j(inst, stages)) and math.isinf(oracle_energy_j(inst, stages))


# ----- the simulator against the oracle ---------------------------------------------------------


def _plan(stages) -> Plan:
    return Plan("oracle", "throughput", tuple(stages), Metrics(0.0, 0.0))


@pytest.mark.parametrize("seed", range(12))
def test_simulated_single_request_latency_equals_the_oracle(seed: int) -> None:
    """One device per stage (the request's replica is then fixed), relays included: exact."""
    inst = random_instance(1000 + seed, power=False)
    stages = random_stages(inst, seed, replicas=False)
    sim = simulate(schedule(_plan(stages), inst, 1), inst)
    assert math.isclose(sim.latency_s[0], oracle_latency_s(inst, stages), rel_tol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_simulated_period_with_relays_matches_the_oracle(seed: int) -> None:
    """One device per stage, relays and slow shortcuts included: steady state within 1 %."""
    inst = random_instance(3000 + seed, power=True)
    stages = random_stages(inst, seed, replicas=False)
    sim = simulate(schedule(_plan(stages), inst, 120), inst)
    assert sim.period_s == pytest.approx(oracle_period_s(inst, stages), rel=0.01)
    assert sim.energy_j == pytest.approx(oracle_energy_j(inst, stages), rel=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_simulated_period_with_replicas_matches_the_oracle(seed: int) -> None:
    """Replicated stages on fast links (compute-bound): steady state within 3 % of the oracle.

    The simulator hands requests to replicas by smooth weighted round-robin with the oracle's
    shares, so the long-run compute load per replica is the oracle's; what remains is the
    rounding of shares to whole requests. On slow links it can differ more: consecutive
    replicated stages' round-robins are correlated, so a replica PAIR's share of transfers is
    not the product ``w_i w_j`` the reference model averages to (docs/simulator.md)."""
    inst, stages = next(
        (i, s)
        for k in range(seed * 50, seed * 50 + 50)
        for i in [random_instance(2000 + k, power=True, link_scale=1e4)]
        for s in [random_stages(i, k, replicas=True)]
        if any(len(st.devices) > 1 for st in s)
    )
    want = oracle_period_s(inst, stages)
    sim = simulate(schedule(_plan(stages), inst, 240), inst)
    assert sim.period_s == pytest.approx(want, rel=0.03)
    assert sim.energy_j == pytest.approx(oracle_energy_j(inst, stages), rel=0.03)
