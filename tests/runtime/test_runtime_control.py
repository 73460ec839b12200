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


def test_wrong_token_fails_on_both_sides():
    w, c = _handshake("s3cret", "guess")
    assert isinstance(w, PeerError) and "authentication failed" in str(w)
    assert isinstance(c, PeerError) and "failed authentication" in str(c)


def test_worker_refuses_a_coordinator_that_cannot_prove_the_token():
    """A fake coordinator that welcomes any proof is caught by the mac in its welcome."""
    w, fake = _pair()
    out: dict[str, object] = {}

    def worker() -> None:
        try:
            authenticate_coordinator(w, "s3cret", "d1")
            out["w"] = "ok"
        except PeerError as exc:
            out["w"] = exc

    t = threading.Thread(target=worker)
    t.start()
    fake.recv()  # the worker's hello
    fake.send({"type": "challenge", "nonce": "ab" * 32})
    fake.recv()  # the worker's proof
    fake.send({"type": "welcome", "mac": "00" * 32})
    t.join(5)
    assert isinstance(out["w"], PeerError) and "wrong token" in str(out["w"])


def test_the_side_that_connects_proves_itself_first():
    """The coordinator's challenge carries only a nonce: nothing computed from the token goes
    to a caller that has not proved it holds the token (no signing oracle); a wrong proof gets
    an error, not the coordinator's mac."""
    caller, c = _pair()
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("c", _try(authenticate_worker, c, "s3cret")))
    t.start()
    caller.send({"type": "hello", "device": "d1", "nonce": "cd" * 32})
    challenge, _ = caller.recv()
    assert set(challenge) == {"type", "nonce"}
    caller.send({"type": "proof", "mac": "00" * 32})
    reply, _ = caller.recv()
    t.join(5)
    assert reply["type"] == "error" and "mac" not in reply
    assert isinstance(out["c"], PeerError)


def _try(fn, *args):
    try:
        return fn(*args)
    except PeerError as exc:
        return exc


def _secured() -> tuple[Channel, Channel]:
    """An authenticated pair: (worker side, coordinator side)."""
    w, c = _pair()
    t = threading.Thread(target=authenticate_coordinator, args=(w, "s3cret", "d1"))
    t.start()
    authenticate_worker(c, "s3cret")
    t.join(5)
    return w, c


def _wire(chan: Channel, msg: dict) -> bytes:
    """The exact bytes ``chan`` sends for ``msg`` (its tag and sequence number advance)."""
    real = chan.sock
    tap, out = socket.socketpair()
    chan.sock = tap
    try:
        chan.send(msg)
    finally:
        chan.sock = real
    tap.close()
    data = b""
    while chunk := out.recv(1 << 16):
        data += chunk
    return data


def test_tampered_replayed_and_reflected_messages_are_refused():
    # tampered: one byte of the body changed on the wire
    w, c = _secured()
    frame = _wire(c, {"type": "end", "messages": 5})
    c.sock.sendall(frame.replace(b"5", b"9"))
    with pytest.raises(PeerError, match="failed authentication"):
        w.recv()
    # the same frame unaltered is fine on a fresh pair at the same sequence number...
    w, c = _secured()
    frame = _wire(c, {"type": "end", "messages": 5})
    c.sock.sendall(frame)
    assert w.recv()[0] == {"type": "end", "messages": 5}
    # ...but replayed, it is refused (sequence numbers)
    c.sock.sendall(frame)
    with pytest.raises(PeerError, match="failed authentication"):
        w.recv()
    # reflected: the worker's own message sent back to it (direction labels)
    w, c = _secured()
    mine = _wire(w, {"type": "go"})
    c.sock.sendall(mine)
    with pytest.raises(PeerError, match="failed authentication"):
        w.recv()


def test_a_relay_of_the_handshake_cannot_forge_a_setup():
    """The attack from the issue: a relay without the token forwards a real worker's handshake
    to the real coordinator (the worker believes it talks to the coordinator), then sends the
    worker its own `setup`. The message's tag cannot be made without the token: refused."""
    worker_side, relay_to_worker = _pair()
    relay_to_coord, coord_side = _pair()
    out: dict[str, object] = {}
    tw = threading.Thread(
        target=lambda: out.setdefault(
            "w", _try(authenticate_coordinator, worker_side, "s3cret", "d1")
        )
    )
    tc = threading.Thread(
        target=lambda: out.setdefault("c", _try(authenticate_worker, coord_side, "s3cret"))
    )
    tw.start()
    tc.start()
    for _ in range(2):  # hello, proof: worker -> coordinator; challenge, welcome: back
        relay_to_coord.send(relay_to_worker.recv()[0])
        relay_to_worker.send(relay_to_coord.recv()[0])
    tw.join(5)
    tc.join(5)
    assert out["w"] is None and out["c"] == "d1"  # both think they are authenticated
    forged = {"type": "setup", "run_id": "x", "stage": {"spec": {"model": "evil.py:f"}}}
    relay_to_worker.send(forged)
    relay_to_worker.sock.sendall(b"\0" * 32)  # a tag it cannot compute
    with pytest.raises(PeerError, match="failed authentication"):
        worker_side.recv()


def test_mac_binds_role_and_nonces():
    assert mac("t", "worker", "a", "b", "d") != mac("t", "coordinator", "a", "b", "d")
    assert mac("t", "worker", "a", "b", "d") != mac("t", "worker", "b", "a", "d")
    assert mac("t", "worker", "a", "b", "d") == mac("t", "worker", "a", "b", "d")


def test_messages_and_blobs_roundtrip_after_auth():
    w, c = _secured()
    c.send({"type": "setup", "v": [1, 2]}, [b"abc", b""])
    msg, blobs = w.recv()
    assert msg == {"type": "setup", "v": [1, 2]} and blobs == [b"abc", b""]


def test_attachments_are_capped_by_message_type_before_allocation():
    """After authentication a peer still cannot make us allocate what a message type does not
    need: a header declaring 4 GiB for a result with a 1 MiB cap is refused at once, memory
    flat; a type that carries no attachments takes none."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w2, c2 = _secured()
    c2.limit_attachments("result", 1 << 20)
    body = b'{"type":"result","message":0,"t_release":0,"t_done":0,"_blobs":[4294967296]}'
    w2.sock.sendall(struct.pack(">I", len(body)) + body)
    with pytest.raises(PeerError, match="at most 1048576 accepted"):
        c2.recv()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    w3, c3 = _secured()
    w3.send({"type": "hb", "t": 0.0}, [b"x"])
    with pytest.raises(PeerError, match="'hb' message"):
        c3.recv()


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
