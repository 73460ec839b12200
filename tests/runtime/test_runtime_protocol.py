"""The control protocol: every message survives JSON both ways, bad ones are refused by name."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.errors import PeerError
from coinfer.runtime.protocol import (
    MESSAGES,
    Abort,
    Bye,
    Done,
    EmulateConfig,
    End,
    Error,
    Go,
    Heartbeat,
    Ready,
    Result,
    Setup,
    StageAssignment,
    Stats,
    Submit,
    decode,
    encode,
    expect,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.text("abcdefgh0123456789_", min_size=1, max_size=6)


def _setup(**over) -> Setup:
    base = dict(
        run_id="ab12",
        device="d1",
        rank=1,
        names=("d0", "d1"),
        store=("127.0.0.1", 4242),
        timeout_s=30.0,
        depth=2,
        num_stages=2,
        contracts=((((1, 3, 8, 8), "float32"),), (((1, 10), "float32"),), (((1, 10), "float32"),)),
        actions=("R0.1", "C0.1", "S0.1"),
        links={"d0": {"bandwidth_Bps": 1e6, "latency_s": 0.002}},
        emulate=EmulateConfig(0.5, 1, 0),
        use_cgroup=True,
        stage=StageAssignment({"model": "tiny_mlp", "cuts": [3]}, 1),
        client_actions=(),
        last_device={},
    )
    base.update(over)
    return Setup(**base)


def _wire(msg):
    """What the other side receives: the JSON text of the encoded message, parsed again."""
    return json.loads(json.dumps(encode(msg)))


@pytest.mark.parametrize(
    "msg",
    [
        _setup(),
        _setup(
            device="d0",
            rank=0,
            stage=None,
            client_actions=("S0.0", "R0.2"),
            last_device={0: "d1", 7: "d0"},
        ),
        Ready({"mode": "cgroup", "cpu_quota": 0.5}, 12.5, 1),
        Go(),
        Heartbeat(3.25),
        Result(4, 1.0, 1.5),
        Result(5, 1.0, 1.5, epoch=2),
        Submit(7),
        Stats(12.5, 1.0, 40, 0.8, 0.7, {"d1": (40, 1.2e6, 0.3)}),
        End(120),
        _setup(stream=True, cycle=12, window=3, epoch=1),
        Done(
            ({"resource": "d0", "kind": "compute", "request": 0, "start_s": 0.0, "end_s": 1.0},),
            (("d0", 0, 1, 0.5),),
            0.75,
            2.0,
        ),
        Bye(),
        Abort(),
        Error("stage 1 failed", device="d1", peer="d0"),
    ],
    ids=lambda m: m.type,
)
def test_every_message_round_trips_through_json(msg) -> None:
    got = decode(_wire(msg), peer="w")
    assert got == msg and type(got) is type(msg)


def test_every_message_type_is_covered() -> None:
    assert set(MESSAGES) == {
        "setup",
        "ready",
        "go",
        "hb",
        "result",
        "submit",
        "stats",
        "end",
        "done",
        "bye",
        "abort",
        "error",
    }


@given(message=st.integers(0, 10**6), a=finite, b=finite)
def test_results_round_trip(message: int, a: float, b: float) -> None:
    assert decode(_wire(Result(message, a, b))) == Result(message, a, b)


@given(device=names, rank=st.integers(0, 64), depth=st.integers(1, 8))
def test_setups_round_trip(device: str, rank: int, depth: int) -> None:
    s = _setup(device=device, rank=rank, depth=depth)
    assert decode(_wire(s)) == s


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "no 'type'"),
        ({"message": 1}, "no 'type'"),
        ({"type": "launch"}, "unknown control message type 'launch'"),
        ({"type": "result", "message": "x", "t_release": 1.0, "t_done": 2.0}, "field 'message'"),
        ({"type": "result", "t_release": 1.0, "t_done": 2.0}, "field 'message'"),
        (
            {"type": "result", "message": 1, "t_release": 1.0, "t_done": 2.0, "rm": "-rf"},
            "unknown field 'rm'",
        ),
        ({**encode(_setup()), "rank": "first"}, "field 'rank'"),
        ({**encode(_setup()), "store": ["127.0.0.1"]}, "field 'store"),
    ],
)
def test_malformed_messages_are_refused_with_one_line(data, match: str) -> None:
    with pytest.raises(PeerError, match=match) as info:
        decode(data, peer="10.0.0.9:5000")
    assert "10.0.0.9:5000" in str(info.value) and "\n" not in str(info.value)


def test_expect_names_what_came_instead() -> None:
    assert expect(_wire(_setup()), Setup) == _setup()
    with pytest.raises(PeerError, match="expected 'setup', got 'go'"):
        expect(encode(Go()), Setup, peer="coordinator")
    with pytest.raises(PeerError, match="device d9 not expected"):
        expect(encode(Error("device d9 not expected")), Setup, peer="coordinator")


def test_source_is_the_device_with_client_actions() -> None:
    assert not _setup().is_source
    assert _setup(client_actions=("S0.0",)).is_source
