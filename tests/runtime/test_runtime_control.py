"""Control plane: framing limits and the mutual HMAC handshake (in-process socket pairs)."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from coinfer.errors import InputError, PeerError
from coinfer.runtime.control import (
    Channel,
    authenticate_coordinator,
    authenticate_worker,
    mac,
    parse_hostport,
    read_token,
)


def _pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    return Channel(a, "w"), Channel(b, "c")


def _handshake(worker_token: str, coord_token: str) -> tuple[object, object]:
    w, c = _pair()
    out: dict[str, object] = {}

    def worker() -> None:
        try:
            authenticate_coordinator(w, worker_token, "d1")
            out["w"] = "ok"
        except PeerError as exc:
            out["w"] = exc
        w.close()

    t = threading.Thread(target=worker)
    t.start()
    try:
        out["c"] = authenticate_worker(c, coord_token)
    except PeerError as exc:
        out["c"] = exc
    t.join(5)
    c.close()
    return out["w"], out["c"]


def test_handshake_accepts_shared_token():
    w, c = _handshake("s3cret", "s3cret")
    assert w == "ok" and c == "d1"


def test_worker_rejects_coordinator_with_wrong_token():
    w, c = _handshake("s3cret", "guess")
    assert isinstance(w, PeerError) and "failed authentication" in str(w)
    assert isinstance(c, PeerError)  # the worker hung up instead of proving anything


def test_mac_binds_role_and_nonces():
    assert mac("t", "worker", "a", "b", "d") != mac("t", "coordinator", "a", "b", "d")
    assert mac("t", "worker", "a", "b", "d") != mac("t", "worker", "b", "a", "d")
    assert mac("t", "worker", "a", "b", "d") == mac("t", "worker", "a", "b", "d")


def test_messages_and_blobs_roundtrip_after_auth():
    a, b = _pair()
    a.max_bytes = b.max_bytes = 1 << 20
    a.send({"type": "x", "v": [1, 2]}, [b"abc", b""])
    msg, blobs = b.recv()
    assert msg == {"type": "x", "v": [1, 2]} and blobs == [b"abc", b""]


def test_oversized_and_non_json_messages_are_refused_before_auth():
    a, b = _pair()
    a.sock.sendall(struct.pack(">I", 10**6))
    with pytest.raises(PeerError, match="too large"):
        b.recv()
    a, b = _pair()
    a.sock.sendall(struct.pack(">I", 4) + b"\x80abc")
    with pytest.raises(PeerError, match="not JSON"):
        b.recv()
    a, b = _pair()
    a.send({"type": "x"}, [b"payload"])
    with pytest.raises(PeerError, match="before authentication"):
        b.recv()


def test_eof_is_a_peer_error():
    a, b = _pair()
    a.close()
    with pytest.raises(PeerError, match="lost"):
        b.recv()


def test_parse_hostport_and_token(tmp_path):
    assert parse_hostport("10.0.0.1:29500") == ("10.0.0.1", 29500)
    with pytest.raises(InputError, match="HOST:PORT"):
        parse_hostport("nohost")
    f = tmp_path / "tok"
    good = "k" * 32
    f.write_text(good + "\n")
    assert read_token(str(f)) == good
    f.write_text("abc\n")
    with pytest.raises(InputError, match="the token has 3 characters; use at least 32"):
        read_token(str(f))
    with pytest.raises(InputError, match="COINFER_TOKEN: the token has 5"):
        read_token(None, "short")
    f.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_token(str(f))
    with pytest.raises(InputError, match="no token"):
        read_token(None)


def test_deeply_nested_json_is_a_peer_error_not_a_dead_reader():
    a, b = _pair()
    a.max_bytes = b.max_bytes = 1 << 20
    body = b"[" * 200_000 + b"]" * 200_000
    t = threading.Thread(target=lambda: a.sock.sendall(struct.pack(">I", len(body)) + body))
    t.start()
    with pytest.raises(PeerError, match="nested too deeply"):
        b.recv()
    t.join(5)


@pytest.mark.parametrize("bad", ["duplicate", "unknown", "unreadable"])
def test_malformed_results_blame_the_peer_instead_of_raising(bad):
    """A result the ledger cannot take ends the run with a PeerError naming the device and the
    unfinished requests, not a ValueError/KeyError traceback out of the supervisor."""
    import queue

    import torch
    from safetensors.torch import save

    from coinfer.runtime.ledger import Ledger
    from coinfer.runtime.protocol import Ready, Result
    from coinfer.runtime.supervision import Peer, supervise

    mine, theirs = socket.socketpair()
    peers = {"a": Peer("a", Channel(mine, "a"))}
    events: queue.Queue = queue.Queue()
    blob = save({"t0": torch.zeros(1)})
    events.put(("a", Ready({}, 0.0, 1), []))
    events.put(("a", Result(0, 0.0, 0.1), [blob]))
    if bad == "duplicate":
        events.put(("a", Result(0, 0.0, 0.2), [blob]))
    elif bad == "unknown":
        events.put(("a", Result(7, 0.0, 0.2), [blob]))
    else:
        events.put(("a", Result(1, 0.0, 0.2), [b"not safetensors"]))
    ledger = Ledger(3, 1)
    with pytest.raises(PeerError, match="malformed result") as info:
        supervise(peers, events, ledger, 30.0, lambda _m: None, None)
    assert info.value.device == "a" and 2 in info.value.requests
    theirs.close()
