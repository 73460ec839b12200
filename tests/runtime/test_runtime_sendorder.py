"""Send order: a link sends each receiving thread's messages in the order that thread posts them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_clusters import LINE_YAML

from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.core.schedules import Action
from coinfer.runtime.prepare import prepare_run
from coinfer.runtime.sendorder import HeldSends, SendOrder, link_orders, message_id

MLP = "coinfer.zoo.tiny:tiny_mlp"

# A line a - b - c: stage 0 on a and b (replicas), stage 1 on c. a's half of the requests reach
# c through b, so the link b -> c carries a relayed flow and b's own outputs, both for c's
# compute receiver: the merge that deadlocked MobileNetV2.
LINE = cluster_from_yaml(LINE_YAML)
MERGE = Plan(
    "manual", "throughput", (Stage(0, 1, ("a", "b")), Stage(2, 4, ("c",))), Metrics(0.0, 0.0)
)


def test_place_names_the_predecessor_within_and_across_cycles() -> None:
    order = SendOrder(((3, 7, 12), (5,)), stride=20)
    assert order.place(3) == (0, None)  # the thread's first message
    assert order.place(7) == (0, 3) and order.place(12) == (0, 7)
    assert order.place(23) == (0, 12)  # the next cycle's first waits for this cycle's last
    assert order.place(47) == (0, 43)
    assert order.place(25) == (1, 5) and order.place(5) == (1, None)
    assert order.place(4) is None and order.place(-1) is None  # unordered: goes at once
    finite = SendOrder(((3, 7),))
    assert finite.place(27) is None  # a finite run has no later cycle


def test_an_order_is_refused_when_it_contradicts_itself() -> None:
    with pytest.raises(ValueError, match="two receive orders"):
        SendOrder(((1, 2), (2,)))
    with pytest.raises(ValueError, match="outside the cycle"):
        SendOrder(((1, 25),), stride=20)


def test_a_message_produced_early_waits_for_its_predecessor() -> None:
    held = HeldSends(SendOrder(((0, 1, 2),)))
    assert held.release(2, "c") == [] and held.release(1, "b") == []
    assert held.held == [1, 2]
    assert held.release(0, "a") == [(0, "a"), (1, "b"), (2, "c")]
    assert held.held == []
    assert HeldSends(None).release(5, "x") == [(5, "x")]  # no order: as queued


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    cycles=st.integers(1, 3),
    unordered=st.integers(0, 3),
    seed=st.integers(0, 10**6),
)
def test_every_thread_gets_its_messages_in_order_and_none_is_held_longer_than_needed(
    lengths, cycles, unordered, seed
) -> None:
    """Any production order that keeps each producer's own order (every thread's messages are
    produced by the sender's threads in some interleaving): each receiving thread's messages go
    out in its order, all of them, and a message goes the moment its predecessor has."""
    rng = random.Random(seed)
    ids = rng.sample(range(100), sum(lengths) + unordered)
    streams, k = [], 0
    for n in lengths:
        streams.append(tuple(ids[k : k + n]))
        k += n
    free = ids[k:]
    order = SendOrder(tuple(streams), stride=100)
    wanted = [[m + c * 100 for c in range(cycles) for m in s] for s in streams]
    produced = [m for s in wanted for m in s] + free
    rng.shuffle(produced)
    held, sent = HeldSends(order), []
    for m in produced:
        out = held.release(m, None)
        if m in free:  # unordered messages never wait
            assert out == [(m, None)]
        sent.extend(x for x, _ in out)
        done = set(sent)
        for x, _ in out:
            place = order.place(x)
            assert place is None or place[1] is None or place[1] in done
    assert sorted(sent) == sorted(produced) and held.held == []
    for s in wanted:
        assert [m for m in sent if m in set(s)] == s


def test_a_merged_link_is_ordered_as_its_receiver_posts() -> None:
    prep = prepare_run(MLP, LINE, MERGE, requests=8, microbatch=1, input_shape=(1, 64),
                       partition="sequential")  # fmt: skip
    b, c = prep.setups["b"], prep.setups["c"]
    assert b.relays and b.stage is not None  # b relays a's cuts and computes its own
    (stream,) = b.send_order["c"]
    posted = [Action.parse(x) for x in c.actions if x.startswith("R")]
    assert all(x.peer == "b" for x in posted)
    assert list(stream) == [message_id(x.request, x.stage, 2) for x in posted]
    mine = {message_id(x.request, 1, 2) for x in map(Action.parse, b.actions) if x.kind == "send"}
    relayed = {message_id(r, s, 2) for r, s, _, nxt, _ in b.relays if nxt == "c"}
    assert mine and relayed and set(stream) == mine | relayed  # both producers, one order
    # the relay's own receives from a are a thread of their own; a's outputs to c are relayed
    assert set(prep.setups["a"].send_order["b"]) == {
        tuple(message_id(r, s, 2) for r, s, prev, _, _ in b.relays if prev == "a"),
        tuple(
            message_id(x.request, 0, 2) for x in map(Action.parse, b.actions) if x.kind == "recv"
        ),
    }
    orders = link_orders(b.send_order, cycle=8, num_stages=2)
    assert orders["c"].stride == 8 * 4


@pytest.mark.parametrize("requests", [5, 8])
def test_every_message_a_sender_sends_to_a_receiving_thread_is_ordered_once(requests) -> None:
    """Each remote message a device sends (its stage's outputs, the source's inputs, what it
    relays) is in exactly one thread's order at the peer — all but the outputs, which the
    source's collector posts at release."""
    prep = prepare_run(MLP, LINE, MERGE, requests=requests, microbatch=1, input_shape=(1, 64),
                       partition="sequential")  # fmt: skip
    for u, setup in prep.setups.items():
        sent: dict[str, list[int]] = {}
        sends = [(x, x.stage + 1) for x in map(Action.parse, setup.actions)]
        sends += [(x, 0) for x in map(Action.parse, setup.client_actions)]  # the inputs
        for x, stage_in in sends:
            if x.kind == "send" and x.peer != u:
                sent.setdefault(str(x.peer), []).append(message_id(x.request, stage_in, 2))
        for r, s, _prev, nxt, _flow in setup.relays:
            sent.setdefault(nxt, []).append(message_id(r, s, 2))
        for v, ids in sent.items():
            ordered = [m for s in setup.send_order.get(v, ()) for m in s]
            assert len(ordered) == len(set(ordered))
            # an output handed to the source itself (stage 2 of 2); one to a relay is ordered
            outputs = {m for m in ids if m % 4 == 3 and v == "a"}
            assert sorted(ordered) == sorted(set(ids) - outputs), (u, v)
