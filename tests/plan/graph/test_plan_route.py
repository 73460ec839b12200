"""Layered-graph routing: optimal against brute force, never worse than dp, multi-hop paths, jobs."""

from __future__ import annotations

import itertools
import math

import pytest

from coinfer.core.evaluate import check_plan
from coinfer.core.instance import Device, Link, make_instance
from coinfer.errors import InputError
from coinfer.plan.chain.brute import plan_brute
from coinfer.plan.chain.dp import plan_dp
from coinfer.plan.graph.route import RouteOptions, plan_route, route_jobs, shortest_route
from coinfer.testing import random_adv_instance

GB = 10**9


def test_route_equals_brute_when_no_revisit_and_never_worse() -> None:
    equal = 0
    for seed in range(20):
        inst = random_adv_instance(seed, 7, 4, sparse_links=seed % 2 == 0)
        p = plan_route(inst)
        check_plan(inst, p)
        best = plan_brute(inst, "latency").predicted.latency_s
        assert p.predicted.latency_s <= best * (1 + 1e-9)
        if not p.details["revisits"]:
            assert math.isclose(p.predicted.latency_s, best, rel_tol=1e-9)
            equal += 1
        assert math.isclose(p.details["path_latency_s"], p.predicted.latency_s, rel_tol=1e-9)
    assert equal >= 10  # most random instances need no revisit


def test_route_never_worse_than_dp_even_with_tight_memory() -> None:
    for seed in range(12):
        inst = random_adv_instance(100 + seed, 8, 4, tight_memory=True, sparse_links=seed % 3 == 0)
        p = plan_route(inst)
        check_plan(inst, p)
        assert p.predicted.latency_s <= plan_dp(inst, "latency").predicted.latency_s * (1 + 1e-9)


def _line(names: list[str], bw: float = 1e8, lat: float = 1e-4) -> list[Link]:
    links = []
    for a, b in itertools.pairwise(names):
        links += [Link(a, b, bw, lat), Link(b, a, bw, lat)]
    return links


def test_revisit_beats_one_stage_per_device() -> None:
    # a is fast at pieces 0 and 2, b at piece 1: a->b->a beats every plan that uses a once.
    times = [{"a": 0.001, "b": 1.0}, {"a": 1.0, "b": 0.001}, {"a": 0.001, "b": 1.0}]
    inst = make_instance(
        times,
        [1, 1, 1],
        [100, 100, 100],
        100,
        [Device("a", GB), Device("b", GB)],
        _line(["a", "b"]),
        "a",
    )
    p = plan_route(inst)
    check_plan(inst, p)
    assert [s.devices[0] for s in p.stages] == ["a", "b", "a"]
    assert p.details["revisits"] == ["a"]
    assert p.predicted.latency_s < plan_brute(inst, "latency").predicted.latency_s


def test_multi_hop_path_is_recorded() -> None:
    # only c computes fast; a reaches c through b on a line network a - b - c
    times = [{"a": 1.0, "b": 1.0, "c": 0.001}] * 2
    devs = [Device(n, GB) for n in "abc"]
    inst = make_instance(times, [1, 1], [1000, 1000], 1000, devs, _line(["a", "b", "c"]), "a")
    p = plan_route(inst)
    check_plan(inst, p)
    assert [s.devices for s in p.stages] == [("c",)]
    assert p.details["paths"][0] == ["a", "b", "c"]
    assert p.details["paths"][-1] == ["c", "b", "a"]
    assert p.details["paths"][1] == []


def test_memory_repair_keeps_plan_feasible() -> None:
    # the fast device can hold only one of the two pieces
    times = [{"a": 1.0, "b": 0.01}, {"a": 1.0, "b": 0.01}]
    devs = [Device("a", 10 * GB), Device("b", 150)]
    inst = make_instance(times, [100, 100], [10, 10], 10, devs, _line(["a", "b"]), "a")
    p = plan_route(inst)
    check_plan(inst, p)
    assert sum(1 for s in p.stages if "b" in s.devices) == 1
    assert p.details["memory_strategy"] in ("bans", "penalties", "fixed-order DP")


def test_route_rejects_other_objectives() -> None:
    inst = random_adv_instance(0, 3, 2)
    with pytest.raises(InputError, match="latency"):
        plan_route(inst, "throughput")
    with pytest.raises(InputError, match="objective"):
        plan_route(inst, "speed")  # type: ignore[arg-type]


def test_fifty_node_network_routes_to_valid_plan() -> None:
    inst = random_adv_instance(9, 20, 50, sparse_links=True)
    p = plan_route(inst, "latency", RouteOptions())
    check_plan(inst, p)
    assert len(p.details["paths"]) == 21


# ----- many jobs ------------------------------------------------------------------------------


def _two_servers() -> object:
    # s is slow; x and y are equally fast servers one hop away
    times = [{"s": 1.0, "x": 0.1, "y": 0.1}] * 3
    devs = [Device(n, GB) for n in "sxy"]
    links = [Link(a, b, 1e8, 1e-4) for a in "sxy" for b in "sxy" if a != b]
    return make_instance(times, [1] * 3, [1000] * 3, 1000, devs, links, "s")


def test_load_aware_jobs_spread_and_beat_independent_routing() -> None:
    inst = _two_servers()
    res = route_jobs(inst, ["s"] * 4)
    assert res.routes[0] == res.independent_routes[0]  # the first job sees an empty network
    used = {r.devices[0] for r in res.routes}
    assert used == {"x", "y"}  # spread over both servers
    assert {r.devices[0] for r in res.independent_routes} == {"x"}  # all pile on one
    assert res.mean_s < res.independent_mean_s
    assert math.isclose(res.total_s, sum(res.latencies_s))


def test_single_job_shared_latency_is_reference_latency() -> None:
    inst = random_adv_instance(4, 6, 4)
    res = route_jobs(inst, [inst.source])
    assert math.isclose(res.latencies_s[0], shortest_route(inst).latency_s, rel_tol=1e-12)
    assert math.isclose(res.latencies_s[0], plan_route(inst).predicted.latency_s, rel_tol=1e-9)


def test_route_jobs_errors() -> None:
    inst = random_adv_instance(4, 3, 2)
    with pytest.raises(InputError, match="at least one job"):
        route_jobs(inst, [])
    with pytest.raises(InputError, match="not a device"):
        route_jobs(inst, ["zz"])
