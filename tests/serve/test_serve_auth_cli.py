"""Who may call the server, and ``coinfer serve``'s refusals: one line, exit code 2, before
any worker starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coinfer.errors import InputError
from coinfer.serve.auth import authorised, is_loopback, presented_key, resolve_key

KEY = "0123456789abcdef0123"


def test_loopback_addresses_and_names():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("192.168.1.10")
    assert not is_loopback("no-such-host.invalid")


def test_a_key_is_required_off_loopback_only():
    assert resolve_key("127.0.0.1", None, {}) is None
    assert resolve_key("127.0.0.1", KEY, {}) == KEY  # given: enforced on loopback too
    assert resolve_key("0.0.0.0", None, {"COINFER_API_KEY": KEY}) == KEY
    with pytest.raises(InputError, match="not a loopback address"):
        resolve_key("0.0.0.0", None, {})
    with pytest.raises(InputError, match="at least 16"):
        resolve_key("0.0.0.0", "short", {})
    with pytest.raises(InputError, match=r"\$COINFER_API_KEY"):
        resolve_key("0.0.0.0", None, {"COINFER_API_KEY": " padded-key-with-spaces "})


def test_presented_keys_and_comparison():
    assert presented_key({"authorization": f"Bearer {KEY}"}) == KEY
    assert presented_key({"authorization": f"bearer  {KEY} "}) == KEY
    assert presented_key({"x-api-key": KEY}) == KEY
    assert presented_key({"authorization": f"Basic {KEY}"}) is None
    assert authorised({}, None)
    assert authorised({"x-api-key": KEY}, KEY)
    assert not authorised({"x-api-key": KEY + "x"}, KEY)
    assert not authorised({}, KEY)


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "COINFER_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "coinfer", "serve", "coinfer.zoo.tiny:tiny_mlp", *args],
        capture_output=True, text=True, timeout=120, env={**base, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host", "0.0.0.0"), "error: --host 0.0.0.0 is not a loopback address"),
        (("--scaling", "maybe"), "error: --scaling must be on or off"),
        (("--slo-ms", "-3"), "error: --slo-ms must be a number of milliseconds > 0"),
        (("--microbatch", "0"), "error: --microbatch must be >= 1"),
        (("--microbatch", "4", "--queue-limit", "2"), "error: --queue-limit 2 must hold"),
        (("--port", "70000"), "error: --port must be in 0..65535"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(args, message):
    res = _serve(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr


def test_serve_refuses_a_port_in_use():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _serve("--port", str(port))
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in res.stderr


def test_the_bound_socket_is_tcp_so_responses_are_not_delayed():
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP; without it a
    keep-alive response waited ~40 ms for the client's delayed ACK (measured)."""
    import socket

    from coinfer.serve.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert url_of(sock).startswith("http://127.0.0.1:")
    finally:
        sock.close()
