"""Shared media in the planners: dp and pico stay exact (against brute force) when a group of
devices shares one medium, and media change the plans the way they should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.core.evaluate import busy_times, period_s
from coinfer.core.instance import Device, Link, Medium, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InfeasibleError
from coinfer.plan import plan
from coinfer.plan.chain.brute import BruteOptions, plan_brute
from coinfer.plan.chain.dp import plan_dp
from coinfer.plan.chain.pico import plan_pico
from coinfer.testing import random_instance, with_shared_medium


def _media_instances(seed: int, count: int, *, power: bool = False):
    rng = np.random.default_rng(seed)
    for k in range(count):
        base = random_instance(
            rng,
            int(rng.integers(1, 8)),
            int(rng.integers(2, 5)),
            tight_memory=k % 3 == 0,
            sparse_links=k % 2 == 1,
            power=power,
        )
        yield with_shared_medium(base, rng)


@pytest.mark.parametrize("objective", ["latency", "throughput", "energy"])
def test_dp_equals_brute_with_a_shared_medium(objective: str) -> None:
    checked = contended = 0
    for inst in _media_instances(40 + len(objective), 70, power=objective == "energy"):
        try:
            ref = plan_brute(inst, objective, BruteOptions(max_plans=5_000_000))
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                plan_dp(inst, objective)
            continue
        got = plan_dp(inst, objective)
        checked += 1
        assert got.details["exact"] is True
        a, b = got.predicted.value(objective), ref.predicted.value(objective)
        assert math.isclose(a, b, rel_tol=1e-9), f"dp {a} != brute {b} on {inst}"
        _, busy = busy_times(inst, ref.stages)
        air = busy.get("air", 0.0)
        contended += air > 0 and air >= period_s(inst, ref.stages) * (1 - 1e-12)
    assert checked >= 40
    if objective == "throughput":
        assert contended > 0  # the medium really is the bottleneck of some optimal plans


def test_pico_equals_brute_with_replicas_on_a_shared_medium() -> None:
    checked = 0
    for inst in _media_instances(77, 60):
        if inst.num_pieces > 6:
            continue
        try:
            ref = plan_brute(inst, "throughput", BruteOptions(replicas=True, max_plans=5_000_000))
        except InfeasibleError:
            continue
        got = plan_pico(inst, "throughput")
        checked += 1
        assert math.isclose(got.predicted.period_s, ref.predicted.period_s, rel_tol=1e-9), inst
    assert checked >= 25


def _wifi_cluster(n: int, bandwidth_Bps: float):
    """``n`` identical boards on one Wi-Fi cell; big activations, so the air is what limits."""
    names = [f"pi{i}" for i in range(n)]
    devs = [Device(d, 1 << 32) for d in names]
    times = [dict.fromkeys(names, 0.02) for _ in range(6)]
    media = [Medium("wifi", tuple(names), bandwidth_Bps, 0.003)]
    return make_instance(times, [1] * 6, [400_000] * 6, 600_000, devs, [], "pi0", media=media)


def test_media_remove_the_free_parallelism_of_independent_links() -> None:
    """Data parallelism over six boards: with independent links every board gets its own pipe;
    on one medium every input and output crosses the same air, so the period is their sum."""
    shared = _wifi_cluster(6, 10e6)
    independent = make_instance(
        [pc.time_s for pc in shared.pieces], [1] * 6, [400_000] * 6, 600_000, shared.devices,
        [Link(u.src, u.dst, u.bandwidth_Bps, u.latency_s) for u in shared.links], "pi0",
    )  # fmt: skip
    replicas = (Stage(0, 5, tuple(shared.device_names)),)
    per_replica = 0.003 + 600_000 / 10e6 + 0.003 + 400_000 / 10e6  # in and out, one board
    assert period_s(shared, replicas) == pytest.approx(per_replica * 5 / 6)  # pi0 sends nothing
    assert period_s(independent, replicas) == pytest.approx(0.12 / 6)  # compute-bound
    got_shared = plan(shared, "pico", "throughput")
    got_indep = plan(independent, "pico", "throughput")
    assert got_indep.predicted.period_s < got_shared.predicted.period_s
    # on the air, keeping the work on the source beats shipping 1 MB per request to helpers
    assert got_shared.predicted.period_s <= period_s(shared, (Stage(0, 5, ("pi0",)),)) + 1e-12


def test_a_wired_link_beside_the_medium_is_used_and_not_charged_to_the_air() -> None:
    inst = _wifi_cluster(3, 10e6)
    wired = make_instance(
        [pc.time_s for pc in inst.pieces], [1] * 6, [400_000] * 6, 600_000, inst.devices,
        [Link("pi0", "pi1", 100e6, 0.0001)], "pi0", media=inst.media,
    )  # fmt: skip
    assert wired.path("pi0", "pi1", 1000)[0].medium is None
    assert wired.path("pi1", "pi0", 1000)[0].medium == "wifi"  # the reverse direction is air
    _, busy = busy_times(wired, (Stage(0, 2, ("pi0",)), Stage(3, 5, ("pi1",))))
    assert busy[("pi0", "pi1")] == pytest.approx(0.0001 + 400_000 / 100e6)
    assert busy["wifi"] == pytest.approx(0.003 + 400_000 / 10e6)
