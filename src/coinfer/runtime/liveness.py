"""A worker's two control-channel threads: the heartbeat it sends and the reader of the
coordinator's ``go`` / ``bye`` / ``abort``. Both live outside the device's CPU quota (they are
not the device's compute) and end the process when the coordinator is gone: nothing is left to
serve.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PeerError
from . import emulation
from .control import Channel
from .protocol import Abort, Bye, End, Error, Go, Heartbeat, Submit, decode, encode

# Seconds between heartbeats; the coordinator declares a silent worker dead after
# coordinator.HEARTBEAT_TIMEOUT_S (several missed beats, so a busy CPU does not trip it).
HEARTBEAT_S = 0.5
# A worker that hears nothing from the coordinator (which beats every HEARTBEAT_S) for this
# long exits: the coordinator is stopped, gone or cut off, and nothing is left to serve.
COORDINATOR_SILENCE_S = 10.0


def heartbeat(chan: Channel, stop: threading.Event) -> None:
    emulation.exempt_this_thread()
    while not stop.wait(HEARTBEAT_S):
        try:
            chan.send(encode(Heartbeat(time.time())))
        except PeerError:
            os._exit(4)  # the coordinator is gone: nothing left to serve


def wait_for_setup(chan: Channel) -> tuple[dict[str, Any], list[bytes]]:
    """The first message that is not a heartbeat (the coordinator beats while it waits for the
    other workers to connect); a coordinator silent for :data:`COORDINATOR_SILENCE_S` is a
    :class:`PeerError`, not an endless wait."""
    while True:
        readable, _, _ = select.select([chan.sock], [], [], COORDINATOR_SILENCE_S)
        if not readable:
            raise PeerError(
                f"{chan.peer} sent nothing for {COORDINATOR_SILENCE_S:.0f} s before the setup"
            )
        raw, blobs = chan.recv()
        if raw.get("type") != Heartbeat.type:
            return raw, blobs


def control_reader(
    chan: Channel,
    go: threading.Event,
    bye: threading.Event,
    on_message: Callable[[Any, list[bytes]], None] | None = None,
) -> None:
    """Handle the coordinator's messages until ``bye``: ``go``, ``abort`` and silence here;
    anything else (a streaming session's ``submit`` / ``end``) goes to ``on_message``, whose
    exception (a malformed submission) ends the process like a lost coordinator."""
    emulation.exempt_this_thread()
    while True:
        readable, _, _ = select.select([chan.sock], [], [], COORDINATOR_SILENCE_S)
        if not readable:
            os._exit(7)  # the coordinator went silent (stopped or cut off)
        try:
            raw, blobs = chan.recv()
            msg = decode(raw, peer=chan.peer)
        except PeerError:
            os._exit(4)  # the coordinator is gone or speaks nonsense: nothing left to serve
        if isinstance(msg, (Submit, End)) and on_message is not None:
            try:
                on_message(msg, blobs)
            except Exception as exc:  # a bad submission: report it, then stop serving
                with contextlib.suppress(PeerError):
                    chan.send(encode(Error(f"{type(exc).__name__}: {exc}"[:300])))
                os._exit(4)
        elif isinstance(msg, Go):
            go.set()
        elif isinstance(msg, Bye):
            bye.set()
            return
        elif isinstance(msg, Abort):
            os._exit(5)


__all__ = ["COORDINATOR_SILENCE_S", "HEARTBEAT_S", "control_reader", "heartbeat", "wait_for_setup"]
