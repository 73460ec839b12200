"""Hand-built instances and plans for the schedule/simulate/report tests (no planner needed)."""

from __future__ import annotations

import random

from coinfer.core.evaluate import evaluate
from coinfer.core.instance import Device, Instance, Link, make_instance
from coinfer.core.plans import Plan, Stage


def full_mesh(names, bw=1e6, lat=0.001):
    return [Link(u, v, bw, lat) for u in names for v in names if u != v]


def random_chain_instance(
    seed: int, pieces: int = 6, devices: int = 4, *, direct: bool = True
) -> Instance:
    """Random instance: per-device times in [1, 20] ms, cuts up to 100 kB, links 1-20 MB/s.

    ``direct`` gives a full mesh (every stage pair has a direct link); otherwise a ring plus the
    source's links, so some transfers take several hops."""
    rng = random.Random(seed)
    names = [f"d{i}" for i in range(devices)]
    speed = {d: rng.uniform(0.5, 3.0) for d in names}
    times = [{d: rng.uniform(0.001, 0.02) / speed[d] for d in names} for _ in range(pieces)]
    out = [rng.randint(100, 100_000) for _ in range(pieces)]
    devs = [
        Device(d, 10**12, power_idle_w=1.0, power_active_w=rng.uniform(2, 6), power_transmit_w=0.5)
        for d in names
    ]
    links = []
    for u in names:
        for v in names:
            if u == v:
                continue
            ring = (names.index(v) - names.index(u)) % devices in (1, devices - 1)
            if direct or ring:
                links.append(Link(u, v, rng.uniform(1e6, 2e7), rng.uniform(0.0, 0.003)))
    return make_instance(
        times,
        [1] * pieces,
        out,
        rng.randint(100, 100_000),
        devs,
        links,
        names[0],
        name=f"rand{seed}",
    )


def random_plan(inst: Instance, seed: int, *, replicas: bool = False) -> Plan:
    """A random valid plan: random cuts, distinct devices (several per stage if ``replicas``)."""
    rng = random.Random(seed + 1000)
    names = list(inst.device_names)
    rng.shuffle(names)
    n_stages = rng.randint(1, min(len(names), inst.num_pieces))
    if replicas:
        n_stages = max(1, min(n_stages, len(names) // 2))
    cuts = sorted(rng.sample(range(inst.num_pieces - 1), n_stages - 1))
    bounds = [-1, *cuts, inst.num_pieces - 1]
    groups: list[tuple[str, ...]] = [(names[i],) for i in range(n_stages)]
    if replicas:
        spare = names[n_stages:]
        for d in spare:
            k = rng.randrange(n_stages)
            groups[k] = (*groups[k], d)
    stages = tuple(Stage(bounds[i] + 1, bounds[i + 1], groups[i]) for i in range(n_stages))
    return Plan("hand", "throughput", stages, evaluate(inst, stages))


def tiny_instance() -> Instance:
    """Three devices, four pieces, full mesh at 1 MB/s and 1 ms: readable golden schedules."""
    devs = [Device("a", 10**9), Device("b", 10**9), Device("c", 10**9)]
    return make_instance(
        [{"a": 0.01, "b": 0.02, "c": 0.03}] * 4,
        [1] * 4,
        [1000, 2000, 3000, 500],
        4000,
        devs,
        full_mesh("abc"),
        "a",
        name="tiny",
    )


def plan_of(inst: Instance, stages) -> Plan:
    stages = tuple(stages)
    return Plan("hand", "throughput", stages, evaluate(inst, stages))
