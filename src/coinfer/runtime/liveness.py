"""A worker's two control-channel threads: the heartbeat it sends and the reader of the
coordinator's ``go`` / ``bye`` / ``abort``. Both live outside the device's CPU quota (they are
not the device's compute) and end the process when the coordinator is gone: nothing is left to
serve.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import PeerError
from . import emulation
from .control import Channel
from .protocol import Abort, Bye, Go, Heartbeat, decode, encode

# Seconds between heartbeats; the coordinator declares a silent worker dead after
# coordinator.HEARTBEAT_TIMEOUT_S (several missed beats, so a busy CPU does not trip it).
HEARTBEAT_S = 0.5


def heartbeat(chan: Channel, stop: threading.Event) -> None:
    emulation.exempt_this_thread()
    while not stop.wait(HEARTBEAT_S):
        try:
            chan.send(encode(Heartbeat(time.time())))
        except PeerError:
            os._exit(4)  # the coordinator is gone: nothing left to serve


def control_reader(chan: Channel, go: threading.Event, bye: threading.Event) -> None:
    emulation.exempt_this_thread()
    while True:
        try:
            raw, _ = chan.recv()
            msg = decode(raw, peer=chan.peer)
        except PeerError:
            os._exit(4)  # the coordinator is gone or speaks nonsense: nothing left to serve
        if isinstance(msg, Go):
            go.set()
        elif isinstance(msg, Bye):
            bye.set()
            return
        elif isinstance(msg, Abort):
            os._exit(5)


__all__ = ["HEARTBEAT_S", "control_reader", "heartbeat"]
