"""Pure helpers of the runtime: routing of emulated links, ledger, percentiles, ids, plan checks."""

from __future__ import annotations

import itertools
import math
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.errors import InputError
from coinfer.runtime.emulation import cgroup_name
from coinfer.runtime.ledger import Ledger, format_ids
from coinfer.runtime.prepare import check_plan_shape, link_shapes, make_inputs
from coinfer.runtime.results import measured_links, percentile
from coinfer.runtime.stages import StageSpec, split_pieces
from coinfer.runtime.transport import LinkShape
from coinfer.runtime.worker import message_id


def test_link_shapes_are_the_direct_links_only():
    links = [("a", "b", 1e6, 0.01), ("b", "c", 2e6, 0.02), ("a", "c", 1e3, 0.0), ("c", "x", 1, 0)]
    sh = link_shapes(links, ["a", "b", "c"])
    assert sh["a"] == {"b": LinkShape(1e6, 0.01), "c": LinkShape(1e3, 0.0)}
    assert sh["b"] == {"c": LinkShape(2e6, 0.02)}
    assert sh["c"] == {}  # directed, and x is not in the run


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(1e3, 1e9), st.floats(0, 0.1)),
        max_size=10,
    ),
    st.floats(1, 1e7),
)
def test_hop_routes_follow_links_and_cost_what_the_model_charges(raw, nbytes):
    """Every route the runtime relays along uses only real links, and its store-and-forward
    time is the cost model's transfer time for the pair (the simulator charges the same hops)."""
    from coinfer.core.instance import Device, Link, make_instance
    from coinfer.runtime.relays import hop_route

    names = ["n0", "n1", "n2", "n3"]
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for a, b, bw, lat in raw:
        if a != b:
            best[(names[a], names[b])] = (bw, lat)  # one link per ordered pair
    links = [Link(s, d, bw, lat) for (s, d), (bw, lat) in best.items()]
    inst = make_instance([dict.fromkeys(names, 1e-3)], [0], [0], 0,
                         [Device(n, 1 << 40) for n in names], links, "n0")  # fmt: skip
    for u in names:
        for v in names:
            hops = hop_route(inst, u, v, nbytes)
            assert hops[0] == u and hops[-1] == v
            if u == v or not inst.path(u, v, nbytes):
                continue
            pairs = list(itertools.pairwise(hops))
            assert all(p in best for p in pairs)
            cost = sum(best[p][1] + nbytes / best[p][0] for p in pairs)
            assert cost == pytest.approx(inst.transfer_s(u, v, nbytes))


def test_ledger_completion_and_failure():
    led = Ledger(6, 2)
    assert led.num_messages == 3 and list(led.requests_of(1)) == [2, 3]
    led.complete(1, 0.0, 0.5, [torch.zeros(2)])
    with pytest.raises(ValueError, match="duplicate"):
        led.complete(1, 0.0, 0.5, [torch.zeros(2)])
    with pytest.raises(ValueError, match="unknown"):
        led.complete(3, 0.0, 0.5, [])
    assert led.pending == (0, 1, 4, 5) and not led.all_done
    assert led.fail_open("boom") == (0, 1, 4, 5)
    assert led.state(0) == "failed" and led.state(2) == "done" and led.pending == ()
    with pytest.raises(ValueError):
        Ledger(5, 2)


@given(st.sets(st.integers(0, 200)))
def test_format_ids_lists_every_id_in_runs(ids):
    text = format_ids(tuple(sorted(ids)), limit=10**6)
    back: set[int] = set()
    for part in filter(None, text.split(", ")):
        lo, _, hi = part.partition("-")
        back.update(range(int(lo), int(hi or lo) + 1))
    assert back == ids


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert math.isnan(percentile([], 50))


def test_message_ids_are_unique_per_request_and_stage():
    ids = {message_id(r, k, 3) for r in range(50) for k in range(4)}
    assert len(ids) == 200


def test_check_plan_shape():
    ok = Plan("m", "throughput", (Stage(0, 1, ("a",)), Stage(2, 4, ("b",))), Metrics(0, 0))
    check_plan_shape(ok, 5)
    with pytest.raises(InputError, match="model has 6 pieces"):
        check_plan_shape(ok, 6)
    gap = Plan("m", "throughput", (Stage(0, 1, ("a",)), Stage(3, 4, ("b",))), Metrics(0, 0))
    with pytest.raises(InputError, match="expected to start at piece 2"):
        check_plan_shape(gap, 5)


def test_measured_links_accounts_for_queueing():
    shapes = {"a": {"b": LinkShape(1e6, 0.01)}}
    trace = [
        {
            "resource": "a->b",
            "kind": "transfer",
            "request": r,
            "stage": 1,
            "start_s": 0.0,
            "nbytes": 1e5,
        }
        for r in range(2)
    ]
    # both queued at t=0; the second arrives 0.1 s after the first: 2e5 bytes in 0.2 s busy
    arrivals = {("a", "b", 0, 1): 0.11, ("a", "b", 1, 1): 0.21}
    st_ = measured_links(trace, arrivals, shapes)["a->b"]
    assert st_["transfers"] == 2 and st_["measured_Bps"] == pytest.approx(1e6, rel=1e-6)


def test_make_inputs_is_deterministic_and_distinct():
    ex = (torch.zeros(1, 3), torch.tensor([[5, 1]]))
    a, b = make_inputs(ex, 3, 7), make_inputs(ex, 3, 7)
    assert all(
        torch.equal(x, y) for s, t in zip(a, b, strict=True) for x, y in zip(s, t, strict=True)
    )
    assert not torch.equal(a[0][0], a[1][0])
    assert a[0][1].dtype == torch.int64 and int(a[0][1].max()) <= 5


def test_sequential_split_and_spec_roundtrip():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(1, 4)
    stages, n = split_pieces(model, (x,), [0], "sequential")
    assert n == 3 and len(stages) == 2
    y = stages[1](*stages[0](x))[0]
    assert torch.equal(y, model(x))
    with pytest.raises(InputError, match="not increasing"):
        split_pieces(model, (x,), [2], "sequential")
    spec = StageSpec("m:f", (1, 4), (0,), "sequential", 7)
    assert StageSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(InputError, match="unknown partition"):
        StageSpec.from_dict({**spec.to_dict(), "partition": "magic"})


def test_cgroup_names_are_safe():
    assert cgroup_name("ab12", "dev/../x y") == "coinfer-ab12-dev____x_y"


def test_pack_cpus_fits_quotas_within_one_core_per_cpu() -> None:
    from coinfer.runtime.emulation import pack_cpus

    slots = pack_cpus({"d0": 0.75, "d1": 0.5, "d2": 0.3, "d3": 0.25}, 2)
    load = [0.0, 0.0]
    for dev, cpu in slots.items():
        load[cpu] += {"d0": 0.75, "d1": 0.5, "d2": 0.3, "d3": 0.25}[dev]
    assert max(load) <= 1.0 + 1e-9
    assert slots["d0"] != slots["d1"]  # the two largest never share a CPU
    # the testbed: spare capacity spread over both CPUs (0.6+0.2 and 0.4+0.3), none filled to 1.0
    testbed = {"d0": 0.6, "d1": 0.4, "d2": 0.3, "d3": 0.2}
    slots = pack_cpus(testbed, 2)
    loads = sorted(sum(q for d, q in testbed.items() if slots[d] == c) for c in (0, 1))
    assert loads == pytest.approx([0.7, 0.8])


def test_pack_cpus_overflow_goes_to_least_loaded_cpu() -> None:
    from coinfer.runtime.emulation import pack_cpus

    slots = pack_cpus({"a": 0.9, "b": 0.9, "c": 0.5}, 2)
    assert slots["a"] != slots["b"]
    assert sorted(slots.values()).count(slots["c"]) == 2  # c joins one of them, deterministically
    assert pack_cpus({"a": 0.9, "b": 0.9, "c": 0.5}, 2) == slots


@pytest.mark.root
@pytest.mark.skipif(
    not os.path.isdir("/sys/fs/cgroup/cpu") or os.geteuid() != 0,
    reason="needs root + cgroup v1 cpu",
)
def test_abandoned_cgroups_are_swept_and_used_ones_kept():
    """Workers that exit on their own after their coordinator was killed leave empty groups;
    the next run removes them, never a group a process is still in."""
    import subprocess
    import sys

    from coinfer.profile.cgroup import (
        CGROUP_CPU_ROOT,
        create_cpu_cgroup,
        move_pid,
        remove_cpu_cgroup,
    )
    from coinfer.runtime import emulation

    empty = create_cpu_cgroup("coinfer-sweeptest-empty", 0.5)
    used = create_cpu_cgroup("coinfer-sweeptest-used", 0.5)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        move_pid(used, sleeper.pid)
        assert emulation.sweep_abandoned(min_age_s=3600) == []  # too young
        gone = emulation.sweep_abandoned(min_age_s=0)
        assert "coinfer-sweeptest-empty" in gone and not empty.path.exists()
        assert used.path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        remove_cpu_cgroup(used, CGROUP_CPU_ROOT)
        remove_cpu_cgroup(empty, CGROUP_CPU_ROOT)
