"""The per-request program of a tiled run: derived alike on every device, numbered per pair."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.errors import InputError
from coinfer.tiled.program import TiledProgram, message_ids, messages, pairs, program_of


def _fused_plan(assignment, suffix, depth=2, order=None, grid=(2, 2)) -> Plan:
    stages = [Stage(0, depth - 1, tuple(dict.fromkeys(assignment)))]
    stages += [Stage(a, b, (d,)) for a, b, d in suffix]
    details = {
        "fused": {
            "used": True,
            "depth": depth,
            "grid": list(grid),
            "assignment": list(assignment),
            "order": list(order if order is not None else range(len(assignment))),
        }
    }
    return Plan("fused", "latency", tuple(stages), Metrics(0.1, 0.1), details=details)


def test_program_puts_the_source_first_and_splits_after_block_and_stages():
    p = _fused_plan(["b", "a", "c", "b"], [(2, 3, "c"), (4, 4, "a")])
    prog = program_of(p, "tiny_cnn", "a", 5)
    assert prog.devices == ("a", "b", "c")
    assert prog.cuts == (1, 3)
    assert TiledProgram.from_dict(prog.to_dict()) == prog


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        (Plan("dp", "latency", (Stage(0, 4, ("a",)),), Metrics(0.1, 0.1)), "not a fused"),
        (_fused_plan(["a", "b", "a", "b"], [(2, 3, "c")]), "does not cover"),
        (_fused_plan(["a", "b", "a", "b"], [(2, 4, "c")], order=[0, 0, 1, 2]), "permutation"),
    ],
)
def test_plans_a_tiled_run_cannot_take_are_refused(plan, match):
    with pytest.raises(InputError, match=match):
        program_of(plan, "tiny_cnn", "a", 5)


def test_suffix_stage_with_replicas_is_refused():
    p = _fused_plan(["a", "b", "a", "b"], [(2, 4, "c")])
    p = Plan(
        p.algo, p.objective, (p.stages[0], Stage(2, 4, ("b", "c"))), p.predicted, details=p.details
    )
    with pytest.raises(InputError, match="one device"):
        program_of(p, "tiny_cnn", "a", 5)


devices = st.sampled_from(["a", "b", "c", "d"])


@given(
    st.lists(devices, min_size=1, max_size=6),
    st.lists(devices, min_size=0, max_size=3),
    st.randoms(use_true_random=False),
    st.integers(1, 4),
)
def test_every_pair_numbers_its_messages_0_1_2_across_requests(assign, suffix_devs, rnd, requests):
    order = list(range(len(assign)))
    rnd.shuffle(order)
    P = 2 + len(suffix_devs)
    suffix = [(2 + i, 2 + i, d) for i, d in enumerate(suffix_devs)]
    if not suffix:
        P = 2
    prog = program_of(_fused_plan(assign, suffix, order=order, grid=(1, len(assign))), "m", "a", P)
    msgs = messages(prog)
    ids = message_ids(prog, requests)
    per_pair: dict[tuple[str, str], list[int]] = {}
    for r in range(requests):
        for m in msgs:
            per_pair.setdefault((m.src, m.dst), []).append(ids[(r, m.what)])
    for got in per_pair.values():
        assert got == list(range(len(got)))  # consecutive, unique, in program order
    remote = [t for t in range(len(assign)) if assign[t] != "a"]
    assert sorted(m.what[1] for m in msgs if m.what[0] == "in") == remote
    assert sorted(m.what[1] for m in msgs if m.what[0] == "out") == remote
    # the request ends at the source: the last holder returns the result unless it is the source
    holder = suffix[-1][2] if suffix else "a"
    assert (holder != "a") == any(m.what == ("stage", len(suffix)) for m in msgs)
    assert all(u != v for u, v in pairs(prog))
    # input tiles leave the source in shipping order
    ins = [m.what[1] for m in msgs if m.what[0] == "in"]
    assert ins == [t for t in order if assign[t] != "a"]


def test_pairs_are_shaped_as_priced_and_a_medium_hop_books_the_medium():
    from coinfer.cluster import load_cluster
    from coinfer.profile.costmodel import build_instance
    from coinfer.tiled.runner import pair_shape

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    inst = build_instance(
        "tiny_cnn", load_cluster(root / "examples/clusters/local_wifi.yaml"), source="analytic"
    )
    wire = pair_shape(inst, "d0", "d1", 10_000)  # the dedicated d0-d1 link
    assert "medium" not in wire
    assert wire["latency_s"] == pytest.approx(1e-3) and wire["bandwidth_Bps"] == pytest.approx(
        125e6
    )
    air = pair_shape(inst, "d0", "d2", 10_000)  # over the Wi-Fi cell: its clock is booked
    assert air["medium"] == "wifi" and air["bandwidth_Bps"] == pytest.approx(25e6)
    x = 10_000
    assert air["latency_s"] + x / air["bandwidth_Bps"] == pytest.approx(
        inst.transfer_s("d0", "d2", x)
    )
