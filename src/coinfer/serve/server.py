"""Run the app on uvicorn, and stop it cleanly.

The listening socket is bound *before* the session starts, so a port in use or an address
this machine does not have is one :class:`InputError` line, not a started cluster and a
uvicorn log. Shutdown on SIGINT or SIGTERM: uvicorn stops accepting, waits for the requests
in flight (their micro-batches still run: the batcher and the session are untouched until
then), then :meth:`Service.close` finishes anything admitted and closes the session, whose
workers exit. Signals arriving during that clean-up are held (``runtime.interrupts.shielded``).

Unlike uvicorn's own signal capture, a signal that stopped the server is not re-raised after
it: a server asked to stop that stopped cleanly has done what it was asked (exit 0); the
signal is reported in :attr:`Server.stopped_by`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..errors import InputError

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: any free one); one-line errors."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"--host {host}: cannot resolve ({exc.strerror or exc})") from None
    family, kind, proto, _, addr = infos[0]
    # the protocol number matters: asyncio sets TCP_NODELAY only on sockets whose ``proto``
    # is IPPROTO_TCP, and without it every keep-alive response waited ~40 ms for the
    # client's delayed ACK (headers and body are two writes; measured here)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn's server with a signal capture that does not re-raise (module docstring)."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._stop) for s in _STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop(self, signum: int, _frame: Any) -> None:
        if self.stopped_by is None:
            self.stopped_by = signum
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        self.should_exit = True


def make_server(app: Any, *, graceful_s: float = 30.0, log_level: str = "warning") -> Server:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind(...)])``)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",  # nothing serves websockets (and importing wsproto would delay the start)
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_s),
        server_header=False,
    )
    return Server(config)


__all__ = ["Server", "bind", "make_server", "url_of"]
