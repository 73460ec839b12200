"""Planning SoCs down to single cores: dp over core counts equals a brute force over every plan
that respects the one-stage-per-core rule (coinfer.plan.percore)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coinfer import plan as plan_mod
from coinfer.core.cores import core_conflict
from coinfer.core.evaluate import objective_value, validate_stages
from coinfer.core.instance import Device, Instance, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import CoinferError


def random_soc_instance(seed: int, pieces: int = 4) -> Instance:
    """A host ``h`` and a SoC with 2 cores of type A and 2 of type B (groups A0, A1, A0-1, B0,
    B1, B0-1): per-type speed, a random speed-up of two cores, random memory and links."""
    rng = np.random.default_rng(seed)
    work = rng.uniform(0.01, 0.1, pieces)
    speed = {"h": rng.uniform(0.5, 2.0)}
    devs = [Device("h", int(rng.integers(2, 6)) * 1000)]
    for t in ("A", "B"):
        one = rng.uniform(0.3, 3.0)
        for k, first in ((1, 0), (1, 1), (2, 0)):
            name = f"s.{t}{first}" if k == 1 else f"s.{t}0-1"
            speed[name] = one * (1.0 if k == 1 else rng.uniform(1.0, 2.0))
            devs.append(Device(name, k * int(rng.integers(1, 4)) * 1000,
                               cores=tuple(f"s.{t}{c}" for c in range(first, first + k))))  # fmt: skip
    names = [d.name for d in devs]
    # as a cluster file's SoC: one hand-off figure between its groups, one link to the host
    handoff, uplink = rng.uniform(1e6, 1e8), rng.uniform(1e5, 1e7)
    links = [
        Link(a, b, uplink if "h" in (a, b) else handoff, 1e-4 if "h" in (a, b) else 1e-5)
        for a in names
        for b in names
        if a != b
    ]
    times = [{n: float(w / speed[n]) for n in names} for w in work]
    source = str(rng.choice(["h", "s.A0"]))
    return make_instance(
        times, [1000] * pieces, [int(x) for x in rng.integers(1000, 200_000, pieces)],
        50_000, devs, links, source,
    )  # fmt: skip


def brute_force(inst: Instance, objective: str) -> float:
    """The best objective over every contiguous split and every ordered choice of distinct
    devices whose cores do not overlap (and that fit in memory)."""
    best = float("inf")
    p, names = inst.num_pieces, inst.device_names
    for k in range(1, p + 1):
        for cuts in itertools.combinations(range(1, p), k - 1):
            bounds = [0, *cuts, p]
            for devs in itertools.permutations(names, k):
                if core_conflict(inst, devs) is not None:
                    continue
                stages = [Stage(bounds[i], bounds[i + 1] - 1, (devs[i],)) for i in range(k)]
                try:
                    validate_stages(inst, stages)
                except CoinferError:
                    continue
                best = min(best, objective_value(inst, stages, objective))
    return best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_dp_over_core_counts_equals_brute_force(seed: int, objective: str) -> None:
    inst = random_soc_instance(seed)
    truth = brute_force(inst, objective)
    got = plan_mod.plan(inst, "dp", objective)
    assert core_conflict(inst, got.devices) is None
    assert objective_value(inst, got.stages, objective) == pytest.approx(truth, rel=1e-9)
    assert got.details["core_families"] == 4  # {A0-1 | A0, A1} x {B0-1 | B0, B1}


def test_two_cores_win_when_their_speed_up_pays() -> None:
    """One piece-heavy model, a SoC whose 2-core group is 1.9x one core: the best plan gives a
    stage both cores, and that beats every plan that uses single cores only."""
    devs = [Device("s.A0", 10**6, cores=("s.A0",)), Device("s.A1", 10**6, cores=("s.A1",)),
            Device("s.A0-1", 10**6, cores=("s.A0", "s.A1"))]  # fmt: skip
    names = [d.name for d in devs]
    links = [Link(a, b, 1e9, 1e-3) for a in names for b in names if a != b]
    times = [{"s.A0": 0.1, "s.A1": 0.1, "s.A0-1": 0.1 / 1.9}]
    inst = make_instance(times, [1], [10], 10, devs, links, "s.A0")
    got = plan_mod.plan(inst, "dp", "throughput")
    assert got.devices == ("s.A0-1",)
    assert got.predicted.period_s == pytest.approx(0.1 / 1.9)


def test_every_planner_respects_the_core_rule() -> None:
    inst = random_soc_instance(3)
    for result in plan_mod.compare(inst, "throughput", ["dp", "brute", "pico", "split2", "pso"]):
        if isinstance(result, CoinferError):
            continue
        assert core_conflict(inst, result.devices) is None, result
