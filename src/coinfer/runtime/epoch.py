"""One epoch of a streaming session: one plan's workers, started, fed, watched and ended.

Split from :mod:`.session` (which decides *when* epochs start and end: fail-over, hand-over)
because this is the mechanics of one set of workers: start them (forked from the zygote, or
spawned), ship their setups, feed the source its submissions on a thread of its own, and end
them cleanly or by killing them.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..core.plans import Plan
from ..errors import PeerError
from . import emulation, media, processes
from . import supervision as sv
from .coordinator import _FileRendezvous, _listen, _network, ship_setups
from .param_cache import stage_key
from .prepare import Prepared
from .protocol import Go, Ready, Submit, encode
from .zygote import Zygote


class EpochFailed(Exception):
    """The epoch's workers failed: ``suspects`` maps devices to the evidence against them."""

    def __init__(self, suspects: dict[str, str], first_s: float):
        super().__init__("; ".join(f"{d}: {w}" for d, w in suspects.items()))
        self.suspects = suspects
        self.first_s = first_s


class Epoch:
    """One plan's workers: started, fed, watched, and ended (cleanly or by killing them)."""

    def __init__(self, number: int, plan: Plan, prep: Prepared, window: int, origin_unix: float):
        self.number = number
        # the session's start: bandwidth traces run on from it across epochs
        self.origin_unix = origin_unix
        self.plan = plan
        self.prep = prep
        self.window = max(1, window)
        self.run_id = secrets.token_hex(4)
        self.procs: dict[str, Any] = {}
        self.peers: dict[str, sv.Peer] = {}
        self.beats = threading.Event()
        self.events: queue.Queue[sv.Event] | None = None
        self.to_send: deque[int] = deque()  # request ids to submit in this epoch, in order
        self.wire: dict[int, int] = {}  # message -> request id
        self.sent = 0  # messages submitted so far (the next message id)
        self.received = 0
        self.net: Any = None
        self.server: Any = None
        self.store: Any = None
        self.feed: queue.Queue[tuple[int, bytes] | None] = queue.Queue()

    @property
    def source(self) -> str:
        return self.prep.schedule.source

    def start(
        self,
        token: str,
        timeout_s: float,
        netns: bool,
        say: Callable[[str], None],
        zygote: Zygote | None = None,
    ) -> None:
        """Start (fork from ``zygote``, else spawn), authenticate and set up every worker; the
        supervisor then waits for their ``Ready`` and sends ``Go``. Raises
        :class:`PeerError` naming a device that fails."""
        emulation.sweep_abandoned()
        _FileRendezvous.sweep()
        self.net = _network(self.run_id, self.prep, netns)
        shapes = self.net.transport_shapes(self.prep.shapes) if self.net else self.prep.shapes
        self.server, self.store = _listen("127.0.0.1:0", self.net, timeout_s, local=True)
        control = self.server.getsockname()[:2]
        if zygote is not None and self.net is None:
            self.procs = dict(zygote.spawn(self.prep.names, control))
        else:
            self.procs = processes.spawn_local_workers(self.prep.names, control, token, self.net)
        say(f"epoch {self.number}: workers {', '.join(self.prep.names)} (run {self.run_id})")
        self.peers = sv.accept_workers(
            self.server, token, self.prep.names, time.time() + sv.CONNECT_TIMEOUT_S,
            self.procs, self.beats,
        )  # fmt: skip
        prep = (
            self.prep if zygote is None or self.net is not None else from_cache(self.prep, zygote)
        )
        ship_setups(prep, self.peers, self.run_id, self.store, shapes, timeout_s, self.origin_unix)
        if self.net is not None:
            self.net.follow_traces(self.prep.shapes, self.origin_unix)
        self.events = sv.start_readers(self.peers)
        threading.Thread(target=self._feeder, name=f"feed e{self.number}", daemon=True).start()

    def _feeder(self) -> None:
        """Send submissions to the source on their own thread: a stopped source blocks only
        this thread, never the supervisor that must notice it."""
        while (item := self.feed.get()) is not None:
            message, blob = item
            try:
                self.peers[self.source].chan.send(encode(Submit(message)), [blob])
            except PeerError:
                return  # the supervisor sees the lost channel

    def stop(self, kill: bool) -> None:
        """End the epoch; ``kill`` when it failed (its workers may be stopped or stuck)."""
        self.feed.put(None)
        if kill:
            sv.abort(self.peers, self.procs)
        self.beats.set()
        if self.server is not None:
            self.server.close()
        processes.reap(self.procs)
        if isinstance(self.store, _FileRendezvous):
            self.store.close()
        self.store = None
        emulation.cleanup_stale(self.run_id)
        media.cleanup(self.run_id)
        if self.net is not None:
            self.net.destroy()
            self.net = None


def from_cache(prep: Prepared, zygote: Zygote) -> Prepared:
    """``prep`` with every stage the zygote has cached named by its key, its weights not sent
    (the workers are the zygote's forks: they hold the stage already)."""
    setups, blobs = dict(prep.setups), dict(prep.blobs)
    for d, k in prep.stage_of.items():
        st = setups[d].stage
        if st is None:
            continue
        key = stage_key(st.spec, k)
        if key in zygote.cached:
            setups[d] = replace(setups[d], stage=replace(st, cache_key=key))
            blobs[d] = blobs[d][1:]  # the weights come first
    return replace(prep, setups=setups, blobs=blobs)


def warm_cache(prep: Prepared, zygote: Zygote) -> int:
    """Cache ``prep``'s stages in the zygote (those not cached yet); how many are cached."""
    done = 0
    for d, k in sorted(prep.stage_of.items(), key=lambda item: item[1]):
        st = prep.setups[d].stage
        if st is not None and prep.blobs[d]:
            done += zygote.warm(st.spec, k, prep.blobs[d][0])
    return done


def await_ready(ep: Epoch, timeout_s: float) -> None:
    """Wait for every worker of a started epoch to be ``Ready``, then send ``Go`` (a successor
    epoch, started while another serves); :class:`PeerError` if one fails or is late."""
    assert ep.events is not None
    deadline = time.monotonic() + timeout_s
    stopped_since: dict[str, float] = {}
    problems: dict[str, str] = {}
    while not all(p.ready for p in ep.peers.values()):
        sv.check_health(ep.peers, stopped_since, time.time(), problems.setdefault)
        if problems or time.monotonic() > deadline:
            dev, what = next(iter(problems.items()), (ep.source, "not ready in time"))
            raise PeerError(f"device {dev}: {what}", device=dev)
        try:
            dev, msg, _ = ep.events.get(timeout=0.05)
        except queue.Empty:
            continue
        if isinstance(msg, Ready):
            ep.peers[dev].ready = msg
        elif not isinstance(msg, tuple) and getattr(msg, "type", "") == "error":
            problems[dev] = msg.message
        elif isinstance(msg, tuple):
            problems[dev] = "control channel lost"
    for p in ep.peers.values():
        p.chan.send(encode(Go()))


__all__ = ["Epoch", "EpochFailed", "await_ready", "from_cache", "warm_cache"]
