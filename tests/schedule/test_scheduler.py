"""Scheduler: golden schedules, round-robin shares, validation and deadlock detection."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sched_helpers import plan_of, random_chain_instance, random_plan, tiny_instance

from coinfer.core.evaluate import replica_weights
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.errors import InfeasibleError, InputError
from coinfer.schedule import (
    Action,
    Schedule,
    client_actions,
    schedule,
    smooth_weighted_round_robin,
    validate_schedule,
    worker_actions,
)

GOLDEN = Path(__file__).parent / "golden"


def _line_instance():
    """a - b - c in a line (no a<->c link): the a->c transfer takes two hops."""
    devs = [Device(n, 10**9) for n in "abc"]
    links = [
        Link("a", "b", 2e6, 0.001),
        Link("b", "a", 2e6, 0.001),
        Link("b", "c", 1e6, 0.002),
        Link("c", "b", 1e6, 0.002),
    ]
    return make_instance(
        [{"a": 0.01, "b": 0.01, "c": 0.005}] * 3,
        [1] * 3,
        [800, 400, 100],
        1000,
        devs,
        links,
        "a",
        name="line",
    )


def _golden_cases():
    inst = tiny_instance()
    line = _line_instance()
    return {
        "two_stage": schedule(plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))]), inst, 3),
        "replicated": schedule(
            plan_of(inst, [Stage(0, 0, ("a",)), Stage(1, 3, ("b", "c"))]), inst, 5, window=2
        ),
        "multihop_mb2": schedule(
            plan_of(line, [Stage(0, 0, ("b",)), Stage(1, 2, ("c",))]), line, 2, microbatch=2
        ),
    }


@pytest.mark.parametrize("name", ["two_stage", "replicated", "multihop_mb2"])
def test_golden_schedules(name):
    sched = _golden_cases()[name]
    text = str(sched) + "\n"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("COINFER_UPDATE_GOLDEN"):
        # refreshing a golden file is a deliberate act reviewed in the diff, never a pass
        path.write_text(text)
        pytest.fail(
            f"rewrote {path.name}; review the diff and re-run without COINFER_UPDATE_GOLDEN"
        )
    assert text == path.read_text()
    validate_schedule(sched)


def test_json_round_trip_and_text_parse():
    sched = _golden_cases()["replicated"]
    back = Schedule.from_dict(__import__("json").loads(sched.to_json()))
    assert back == sched
    assert back.window == 2
    for acts in sched.actions.values():
        for a in acts:
            assert Action.parse(str(a)) == a


def test_deterministic():
    inst = random_chain_instance(3)
    plan = random_plan(inst, 3, replicas=True)
    assert schedule(plan, inst, 17).to_json() == schedule(plan, inst, 17).to_json()


def test_swrr_exact_shares_and_smoothness():
    picks = smooth_weighted_round_robin([5, 1, 1], 7)
    assert picks == (0, 0, 1, 0, 2, 0, 0)  # nginx's published example order
    picks = smooth_weighted_round_robin([0.5, 0.3, 0.2], 100)
    assert Counter(picks) == {0: 50, 1: 30, 2: 20}


@given(
    weights=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=5),
    n=st.integers(1, 200),
)
@settings(max_examples=60, deadline=None)
def test_swrr_share_within_one(weights, n):
    picks = Counter(smooth_weighted_round_robin(weights, n))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(picks.get(i, 0) - n * w / total) <= 1.0 + 1e-9


def test_replica_shares_follow_speed():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 0, ("a",)), Stage(1, 3, ("b", "c"))])
    sched = schedule(plan, inst, 50)
    w = replica_weights(inst, plan.stages[1])  # b is 1.5x faster than c: 0.6 / 0.4
    counts = Counter(r[1] for r in sched.assignment)
    assert counts == {"b": round(50 * w[0]), "c": round(50 * w[1])}


def test_client_and_worker_split_on_source():
    inst = tiny_instance()
    sched = schedule(plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))]), inst, 4, window=2)
    client = client_actions(sched)
    assert [str(a) for a in client] == [
        "S0.-1>a:4000", "S1.-1>a:4000", "R0.2<b:500", "S2.-1>a:4000",
        "R1.2<b:500", "S3.-1>a:4000", "R2.2<b:500", "R3.2<b:500",
    ]  # fmt: skip
    work = worker_actions(sched, "a")
    assert all(a.stage == 0 for a in work) and len(work) == 12
    assert len(worker_actions(sched, "b")) == 12


@pytest.mark.parametrize("seed", range(12))
def test_random_schedules_validate(seed):
    inst = random_chain_instance(seed, direct=seed % 2 == 0)
    plan = random_plan(inst, seed, replicas=seed % 3 == 0)
    sched = schedule(plan, inst, 9, microbatch=1 + seed % 3)
    validate_schedule(sched)
    computes = [a for acts in sched.actions.values() for a in acts if a.kind == "compute"]
    assert len(computes) == 9 * len(plan.stages)


def test_bad_arguments():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 3, ("a",))])
    with pytest.raises(InputError, match="requests must be >= 1"):
        schedule(plan, inst, 0)
    with pytest.raises(InputError, match="microbatch"):
        schedule(plan, inst, 2, microbatch=0)
    bad = replace(plan, stages=(Stage(0, 2, ("a",)),))
    with pytest.raises(InputError, match="instance has 4"):
        schedule(bad, inst, 2)
    small = make_instance([{"a": 0.1}], [10], [1], 1, [Device("a", 5)], [], "a")
    with pytest.raises(InfeasibleError, match="bytes short"):
        schedule(plan_of(small, [Stage(0, 0, ("a",))]), small, 1)


def _mutate(sched: Schedule, device: str, acts) -> Schedule:
    actions = dict(sched.actions)
    actions[device] = tuple(acts)
    return replace(sched, actions=actions)


def test_validate_catches_missing_recv_bytes_and_deadlock():
    inst = tiny_instance()
    sched = schedule(plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))]), inst, 2)
    b = list(sched.actions["b"])
    with pytest.raises(InputError, match="no matching recv"):
        validate_schedule(
            _mutate(sched, "b", [a for a in b if not (a.kind == "recv" and a.request == 1)])
        )
    changed = [replace(a, nbytes=7) if a.kind == "recv" else a for a in b]
    with pytest.raises(InputError, match="sends 2000 bytes, recv expects 7"):
        validate_schedule(_mutate(sched, "b", changed))
    # A real cycle: the client sends request 1 only after output 0 is back, while b insists on
    # serving request 1 before request 0.
    a_work = list(worker_actions(sched, "a"))
    client = list(client_actions(sched))
    recv_out0 = next(a for a in client if a.kind == "recv" and a.request == 0)
    send_in1 = next(a for a in client if a.kind == "send" and a.request == 1)
    client.remove(send_in1)
    client.insert(client.index(recv_out0) + 1, send_in1)
    b_swapped = b[3:] + b[:3]  # request 1 first
    cyc = _mutate(_mutate(sched, "a", client + a_work), "b", b_swapped)
    with pytest.raises(InputError, match="deadlocks"):
        validate_schedule(cyc)
