"""The control plane: length-prefixed JSON messages over TCP, with mutual HMAC authentication.

Why JSON and not pickle: the control channel crosses machines, and nothing received from the
network may be able to run code on arrival. Every message is one JSON object; binary payloads
(a stage's weights as safetensors bytes, input tensors) travel as *attachments* — raw bytes whose
lengths the JSON header declares — and are only ever parsed by ``safetensors`` (no code).

Wire format of one message::

    4 bytes big-endian N | N bytes UTF-8 JSON object | attachment bytes (sum of header["_blobs"])
    | after authentication: 32 bytes HMAC-SHA256 tag

Authentication (both sides prove they hold the cluster token; the token never crosses the wire;
the side that connects — the worker — proves itself first, so the coordinator answers nobody
with a value computed from the token before that caller has proved it holds the token too):

1. worker -> coordinator  ``{"type": "hello", "device", "nonce": w}``
2. coordinator -> worker  ``{"type": "challenge", "nonce": c}``
3. worker -> coordinator  ``{"type": "proof", "mac": H("worker", c, w, device)}``
4. coordinator checks it (constant time) and answers ``{"type": "welcome", "mac": H("coordinator", w, c, device)}``
5. the worker checks that mac.

with ``H = HMAC-SHA256(token, role|nonce|nonce|device)``. Distinct role labels stop a reflection
of one side's proof as the other's; fresh nonces on both sides stop replay.

Every message after the handshake carries a tag: ``HMAC-SHA256(K, direction | sequence number |
header | body | attachments)`` with the session key ``K = H("session", w, c, device)``, a
sequence number per direction and a direction label. A relay that forwarded the handshake (the
one thing it can do without the token) can therefore neither forge, alter, reorder, replay nor
reflect a single message afterwards: a ``setup`` (whose model spec names code to import) is only
ever accepted from the holder of the token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import InputError, PeerError

_HEADER = struct.Struct(">I")
# Largest JSON header accepted: schedules and configs are a few KiB; 16 MiB leaves room for
# long traces while keeping a hostile peer from making us allocate gigabytes for a header.
MAX_JSON_BYTES = 16 * 2**20
# Largest single attachment (a stage's weights): VGG-16 is ~550 MB in float32; 8 GiB is a cap,
# not an expectation.
MAX_BLOB_BYTES = 8 * 2**30
# Before authentication a peer may only send tiny messages (hello/proof are < 300 bytes).
PRE_AUTH_MAX_BYTES = 4096
# Seconds either side waits for the other's next handshake message before giving up.
HANDSHAKE_TIMEOUT_S = 10.0
# Nonce size: 32 random bytes (256 bits) make a repeated challenge practically impossible.
NONCE_BYTES = 32
# Length of a message's authentication tag (HMAC-SHA256).
TAG_BYTES = 32
# Per message type, the most attachment bytes a peer may send (checked from the JSON header,
# before anything is allocated); types absent here take none. Channels tighten these once the
# run's contracts are known (:meth:`Channel.limit_attachments`).
DEFAULT_ATTACHMENT_LIMITS = {
    "setup": MAX_BLOB_BYTES,
    "submit": MAX_BLOB_BYTES,
    "result": MAX_BLOB_BYTES,
}


def mac(token: str, role: str, nonce_a: str, nonce_b: str, device: str) -> str:
    """HMAC-SHA256 of ``role|nonce_a|nonce_b|device`` under ``token`` (hex)."""
    msg = "|".join((role, nonce_a, nonce_b, device)).encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def session_key(token: str, worker_nonce: str, coordinator_nonce: str, device: str) -> bytes:
    """The key that tags every message of one authenticated connection (fresh per handshake)."""
    return bytes.fromhex(mac(token, "session", worker_nonce, coordinator_nonce, device))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer")
        got += k
    return bytes(buf)


class Channel:
    """One authenticated (or about to be) control connection; thread-safe sends.

    Receives happen on one thread at a time (the owner's reader loop); sends may come from
    several threads (heartbeats, results), so they share a lock.
    """

    def __init__(self, sock: socket.socket, peer: str = "peer"):
        self.sock = sock
        self.peer = peer
        self._send_lock = threading.Lock()
        self.max_bytes = PRE_AUTH_MAX_BYTES
        self._key: bytes | None = None  # the session key, once authenticated
        self._send_label = b""
        self._recv_label = b""
        self._send_seq = 0
        self._recv_seq = 0
        self.attachment_limits = dict(DEFAULT_ATTACHMENT_LIMITS)
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # small messages: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def secure(self, key: bytes, role: str) -> None:
        """From now on every message is tagged (sent) and checked (received) under ``key``;
        ``role`` is this side (``"worker"`` or ``"coordinator"``), which fixes the direction
        labels so a message cannot be reflected back to its sender."""
        other = "coordinator" if role == "worker" else "worker"
        self._key = key
        self._send_label = f"{role}>{other}".encode()
        self._recv_label = f"{other}>{role}".encode()
        self.max_bytes = MAX_JSON_BYTES

    def limit_attachments(self, kind: str, max_bytes: int) -> None:
        """Accept at most ``max_bytes`` of attachments in messages of type ``kind``."""
        self.attachment_limits[kind] = max_bytes

    def _tag(
        self, label: bytes, seq: int, header: bytes, body: bytes, blobs: Sequence[bytes]
    ) -> bytes:
        assert self._key is not None
        h = hmac.new(self._key, label + struct.pack(">Q", seq) + header, hashlib.sha256)
        h.update(body)
        for b in blobs:
            h.update(b)
        return h.digest()

    def send(self, msg: dict[str, Any], blobs: Sequence[bytes] = ()) -> None:
        """Send one JSON message and its attachments (tagged once authenticated)."""
        if blobs:
            msg = {**msg, "_blobs": [len(b) for b in blobs]}
        body = json.dumps(msg, separators=(",", ":")).encode()
        header = _HEADER.pack(len(body))
        try:
            with self._send_lock:
                tag = b""
                if self._key is not None:
                    tag = self._tag(self._send_label, self._send_seq, header, body, blobs)
                    self._send_seq += 1
                self.sock.sendall(header + body)
                for b in blobs:
                    self.sock.sendall(b)
                if tag:
                    self.sock.sendall(tag)
        except OSError as exc:
            raise PeerError(
                f"control channel to {self.peer}: send failed ({exc})", device=self.peer
            ) from None

    def recv(self) -> tuple[dict[str, Any], list[bytes]]:
        """Receive one message; raises :class:`PeerError` on EOF, timeout or a malformed message."""
        try:
            header = _recv_exact(self.sock, _HEADER.size)
            (n,) = _HEADER.unpack(header)
            limit = min(self.max_bytes, MAX_JSON_BYTES)
            if n > limit:
                raise PeerError(
                    f"control message from {self.peer} too large ({n} > {limit} bytes)",
                    device=self.peer,
                )
            body = _recv_exact(self.sock, n)
            msg = json.loads(body.decode())
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise PeerError(f"malformed control message from {self.peer}", device=self.peer)
            sizes = msg.pop("_blobs", [])
            if not isinstance(sizes, list) or not all(
                isinstance(s, int) and 0 <= s <= MAX_BLOB_BYTES for s in sizes
            ):
                raise PeerError(f"malformed attachment sizes from {self.peer}", device=self.peer)
            if sizes and self._key is None:
                raise PeerError(
                    f"attachment before authentication from {self.peer}", device=self.peer
                )
            allowed = self.attachment_limits.get(msg["type"], 0)
            if sum(sizes) > allowed:
                raise PeerError(
                    f"{msg['type']!r} message from {self.peer} carries {sum(sizes)} bytes of "
                    f"attachments (at most {allowed} accepted)",
                    device=self.peer,
                )
            blobs = [_recv_exact(self.sock, s) for s in sizes]
            if self._key is not None:
                tag = _recv_exact(self.sock, TAG_BYTES)
                want = self._tag(self._recv_label, self._recv_seq, header, body, blobs)
                if not hmac.compare_digest(tag, want):
                    raise PeerError(
                        f"control message from {self.peer} failed authentication "
                        "(tampered, replayed or not from the token's holder)",
                        device=self.peer,
                    )
                self._recv_seq += 1
        except (ConnectionError, OSError) as exc:
            raise PeerError(
                f"control channel to {self.peer} lost ({exc})", device=self.peer
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise PeerError(
                f"control message from {self.peer} is not JSON", device=self.peer
            ) from None
        except RecursionError:
            raise PeerError(
                f"control message from {self.peer} is nested too deeply", device=self.peer
            ) from None
        except MemoryError:
            raise PeerError(
                f"control message from {self.peer}: no memory for its attachments",
                device=self.peer,
            ) from None
        return msg, blobs

    def expect(self, kind: str) -> tuple[dict[str, Any], list[bytes]]:
        """Receive one message and insist on its type (an ``error`` message becomes a PeerError)."""
        msg, blobs = self.recv()
        if msg["type"] == "error":
            raise PeerError(f"{self.peer}: {msg.get('message', 'unknown error')}", device=self.peer)
        if msg["type"] != kind:
            raise PeerError(
                f"{self.peer}: expected {kind!r}, got {msg['type']!r}", device=self.peer
            )
        return msg, blobs

    def send_within(self, msg: dict[str, Any], timeout_s: float) -> bool:
        """Send a small message if that takes at most ``timeout_s`` (waiting for the lock
        included); ``False`` otherwise. For last words (``abort``) to a peer that may be stopped
        with its receive buffer full: a plain send would block forever. Leaves the socket with
        the timeout set, so use it only on a channel about to be closed."""
        if not self._send_lock.acquire(timeout=timeout_s):
            return False
        try:
            body = json.dumps(msg, separators=(",", ":")).encode()
            header = _HEADER.pack(len(body))
            tag = b""
            if self._key is not None:
                tag = self._tag(self._send_label, self._send_seq, header, body, ())
                self._send_seq += 1
            self.sock.settimeout(timeout_s)
            self.sock.sendall(header + body + tag)
            return True
        except OSError:
            return False
        finally:
            self._send_lock.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def store_prefix(token: str, run_id: str) -> str:
    """The run's rendezvous key prefix: derived from the shared token and the run id, so only
    the run's workers know it."""
    return (
        hmac.new(token.encode(), f"store:{run_id}".encode(), hashlib.sha256).hexdigest()[:32] + "/"
    )


def connect_coordinator(
    coordinator: str, device: str, token: str, connect_timeout_s: float
) -> Channel:
    """A worker's authenticated channel to the coordinator at ``HOST:PORT``, retrying the
    connection for up to ``connect_timeout_s`` (the coordinator may still be starting)."""
    if not (math.isfinite(connect_timeout_s) and connect_timeout_s > 0):
        raise InputError(
            f"--connect-timeout must be a finite number of seconds > 0 (got {connect_timeout_s})"
        )
    host, port = parse_hostport(coordinator, what="--coordinator")
    deadline = time.monotonic() + connect_timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout_s)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PeerError(
                    f"cannot reach coordinator {coordinator} ({exc.strerror or exc})", device=device
                ) from None
            time.sleep(0.2)
    sock.settimeout(HANDSHAKE_TIMEOUT_S)  # a coordinator that stalls the handshake is given up
    chan = Channel(sock, peer=f"coordinator {coordinator}")
    authenticate_coordinator(chan, token, device)
    sock.settimeout(None)  # the coordinator may wait for other workers before sending the setup
    return chan


def authenticate_coordinator(chan: Channel, token: str, device: str) -> None:
    """Worker side of the handshake: prove we hold ``token`` and check the coordinator does.

    Raises :class:`PeerError` if the coordinator cannot prove it holds the token, so a worker
    never executes anything for an unauthenticated party.
    """
    w = secrets.token_hex(NONCE_BYTES)
    chan.send({"type": "hello", "device": device, "nonce": w})
    msg, _ = chan.expect("challenge")
    c = msg.get("nonce")
    if not isinstance(c, str) or len(c) != 2 * NONCE_BYTES:
        raise PeerError(f"malformed challenge from {chan.peer}", device=chan.peer)
    chan.send({"type": "proof", "mac": mac(token, "worker", c, w, device)})
    welcome, _ = chan.expect("welcome")
    expected = mac(token, "coordinator", w, c, device)
    if not hmac.compare_digest(expected, str(welcome.get("mac", ""))):
        raise PeerError(
            f"coordinator {chan.peer} failed authentication (wrong token)", device=chan.peer
        )
    chan.secure(session_key(token, w, c, device), "worker")


def authenticate_worker(chan: Channel, token: str) -> str:
    """Coordinator side of the handshake; returns the device name the worker serves.

    Raises :class:`PeerError` (after telling the worker) if its proof is wrong.
    """
    msg, _ = chan.expect("hello")
    device = msg.get("device")
    w = msg.get("nonce")
    if not isinstance(device, str) or not isinstance(w, str) or len(w) != 2 * NONCE_BYTES:
        raise PeerError(f"malformed hello from {chan.peer}", device=chan.peer)
    c = secrets.token_hex(NONCE_BYTES)
    chan.send({"type": "challenge", "nonce": c})
    proof, _ = chan.expect("proof")
    if not hmac.compare_digest(mac(token, "worker", c, w, device), str(proof.get("mac", ""))):
        with contextlib.suppress(PeerError):
            chan.send({"type": "error", "message": "authentication failed"})
        raise PeerError(
            f"worker {chan.peer} claiming device {device!r} failed authentication", device=device
        )
    chan.send({"type": "welcome", "mac": mac(token, "coordinator", w, c, device)})
    chan.secure(session_key(token, w, c, device), "coordinator")
    chan.peer = device
    return device


def parse_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; one-line :class:`InputError` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


# Shortest shared token accepted: 32 characters (e.g. 16 random bytes in hex) keep the HMAC key
# out of reach of guessing.
MIN_TOKEN_CHARS = 32


def check_token(token: str, where: str) -> str:
    """``token`` if it is long enough to be a secret, else one :class:`InputError`."""
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(
            f"{where}: the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            '(e.g. python -c "import secrets; print(secrets.token_hex(32))")'
        )
    return token


def read_token(path: str | None, fallback: str | None = None) -> str:
    """The shared token from ``path`` (first line, stripped; ``-`` reads standard input, how
    local workers get it, out of their environment) or ``fallback``."""
    if path is None:
        if not fallback:
            raise InputError("no token: pass --token-file or set COINFER_TOKEN")
        return check_token(fallback, "COINFER_TOKEN")
    try:
        if path == "-":
            token = sys.stdin.readline().strip()
        else:
            with open(path) as f:
                token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read token file ({exc})") from None
    if not token:
        raise InputError(f"{path}: token file is empty")
    return check_token(token, path)


def gloo_ifname_for(host: str) -> str | None:
    """Name of the local network interface holding address ``host`` (for ``GLOO_SOCKET_IFNAME``)."""
    if host in ("", "0.0.0.0"):
        return None
    try:
        addr = socket.gethostbyname(host)
    except OSError:
        raise InputError(f"cannot resolve bind address {host!r}") from None
    if addr.startswith("127."):
        return "lo"
    siocgifaddr = 0x8915  # Linux ioctl: get an interface's IPv4 address
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(res[20:24]) == addr:
                return name
    finally:
        s.close()
    raise InputError(f"no local interface has address {host!r}")


def set_bind_address(host: str) -> None:
    """Make gloo listen on the interface of ``host`` (default: loopback only)."""
    name = gloo_ifname_for(host)
    if name is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = name


__all__ = [
    "Channel",
    "authenticate_coordinator",
    "authenticate_worker",
    "connect_coordinator",
    "gloo_ifname_for",
    "mac",
    "parse_hostport",
    "read_token",
    "session_key",
    "set_bind_address",
    "store_prefix",
]
