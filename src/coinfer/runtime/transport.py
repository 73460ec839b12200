"""The data plane: tensors between device processes over ``torch.distributed`` point-to-point.

One process per device joins a gloo process group (NCCL would slot in for GPUs). On top of the
raw ``isend``/``irecv`` this module adds what a pipeline needs:

- **shape contracts** (:class:`WireTensorSpec`): the receiver pre-allocates buffers from the cut's
  shape/dtype, and every send is checked against the same contract first — a mismatch would
  otherwise show up as a hang or silent corruption on the other side;
- **one sender thread per peer** with a bounded queue, so computing never waits for the wire
  (back-pressure only when ``depth`` messages are already queued) and each directed link carries
  one transfer at a time, as in the reference cost model;
- **link emulation** (:class:`LinkShape`): before a transfer the sender keeps the link busy for
  ``latency + bytes / bandwidth`` — works without root and adds the latency that ``tc`` cannot
  (this kernel has no netem); a hop over a shared medium first books the medium's clock
  (:mod:`.media`), so all its members' transfers take turns;
- **receives posted ahead** (:meth:`Transport.post_recv`), matched by tag, so messages from
  several peers may arrive in any order;
- **each receiving thread's order kept** (:mod:`.sendorder`): gloo finishes a large send only
  once its receive is posted, so a sender holds a message produced before its predecessor in
  the receiving thread's order instead of letting it block the link;
- **bounded waits**: every wait has a timeout, and a failure becomes a :class:`PeerError`
  naming the peer device.

- **link probes** (:meth:`Transport.probe`): a live session's controller must see a link the
  stream has left (a slow link it routed around may have recovered, a link it would route
  through may have degraded too); a probe holds the emulated link for ``PROBE_BYTES`` exactly as
  a message would, in that peer's sender queue (so it waits behind real traffic and delays what
  comes after it), and is logged as a send of message :data:`PROBE_MESSAGE` (-1, no data
  message's id), so the telemetry measures the link as it measures data. Only emulated
  dedicated links are probed: the transfer time of such a link *is* its emulated hold, and no
  bytes cross the process boundary for a probe (no receiver has to expect one); a ``tc``-shaped
  link is measured by its traffic alone, and a hop over a shared medium is not probed (every
  idle hop's probe would take airtime from all of them, and the online estimate does not
  re-estimate media).

Tags: message ``m`` (a micro-batch id) with tensors ``0..k-1`` uses tags ``m * TAGS_PER_MESSAGE + j``.

Why one module: the contracts checked before a send, the per-peer sender threads that shape and
send (or hold for a probe), the posted receives and the transfer log are one object's state —
a peer's queue, its link shape, the first failure — and every caller (worker, LLM stages, tiled
jobs) uses them together; the link's shape itself is data shared more widely (:mod:`.linkshape`).
"""

from __future__ import annotations

import datetime as _dt
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InputError, PeerError
from .linkshape import LinkShape
from .media import MediumClock
from .sendorder import HeldSends, SendOrder

# At most this many tensors cross one cut (the tag space of one message).
TAGS_PER_MESSAGE = 64
# A probe's message id in the transfer log (data ids are >= 0) and its size: big enough that its bytes take
# longer than the telemetry's floor (2 ms, core.online.MIN_WIRE_S) on a 1 Gbit/s link, small
# enough to hold a 20 Mbit/s link for ~0.1 s.
PROBE_MESSAGE = -1
PROBE_BYTES = 256 * 1024
# Sleeps shorter than this are skipped: time.sleep overshoots by ~0.1 ms here, so emulating a
# 20 µs delay would cost more than it models.
_MIN_SLEEP_S = 50e-6

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (the wire spelling)."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class WireTensorSpec:
    """The contract of one tensor crossing a cut: exact shape and dtype."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, t: torch.Tensor) -> WireTensorSpec:
        return cls(tuple(int(s) for s in t.shape), dtype_name(t.dtype))

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return _DTYPES[self.dtype]
        except KeyError:
            raise InputError(f"unsupported tensor dtype {self.dtype!r} in a cut contract") from None

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.torch_dtype).element_size()

    def empty(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.torch_dtype)

    def check(self, t: torch.Tensor, where: str) -> None:
        """Raise :class:`InputError` if ``t`` breaks the contract (named by ``where``)."""
        if tuple(t.shape) != self.shape or dtype_name(t.dtype) != self.dtype:
            raise InputError(
                f"{where}: tensor {tuple(t.shape)} {dtype_name(t.dtype)} breaks the cut contract {self.shape} {self.dtype}"
            )

    def to_list(self) -> list[Any]:
        return [list(self.shape), self.dtype]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> WireTensorSpec:
        shape, dtype = data
        if dtype not in _DTYPES:
            raise InputError(f"unsupported tensor dtype {dtype!r} in a cut contract")
        return cls(tuple(int(s) for s in shape), str(dtype))


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """One finished transfer as measured by this process (wall clock, seconds since epoch)."""

    kind: str  # "send" | "recv"
    message: int
    peer: int
    start_s: float
    end_s: float
    nbytes: int
    # how long the link itself was held: the emulated hold (latency + bytes through the link's
    # bandwidth or trace) when the transport shapes it; ``None`` when only the wall time of the
    # transfer is known (an unshaped or tc-shaped link) — there a receiver that is slow to take
    # the message (back-pressure) also counts, so telemetry of tc links reads it as link time
    hold_s: float | None = None


def init_process_group(
    rank: int,
    world_size: int,
    store_host: str,
    store_port: int,
    timeout_s: float,
    *,
    backend: str = "gloo",
    prefix: str = "",
) -> None:
    """Join the data-plane group through the coordinator's rendezvous store: ``file:<path>``
    (every worker local) or a TCP store at ``store_host:store_port``. ``prefix`` namespaces
    the keys (a secret derived from the token and run id: a stranger reaching a TCP store
    cannot guess or spoil the run's keys)."""
    base: Any
    if store_host.startswith("file:"):
        base = dist.FileStore(store_host.removeprefix("file:"), world_size)
    else:
        base = dist.TCPStore(
            store_host,
            store_port,
            world_size=None,
            is_master=False,
            timeout=_dt.timedelta(seconds=timeout_s),
        )
    store = dist.PrefixStore(prefix, base) if prefix else base
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=_dt.timedelta(seconds=timeout_s),
    )


class PendingRecv:
    """Receives of one message posted ahead; :meth:`wait` returns the filled tensors."""

    def __init__(
        self, transport: Transport, peer: int, message: int, metas: Sequence[WireTensorSpec]
    ):
        self.peer = peer
        self.message = message
        self.tensors = [m.empty() for m in metas]
        self._transport = transport
        self._works = [
            dist.irecv(t, src=peer, tag=message * TAGS_PER_MESSAGE + j)
            for j, t in enumerate(self.tensors)
        ]
        self.posted_s = time.time()

    def wait(self, timeout_s: float) -> list[torch.Tensor]:
        t0 = time.time()
        try:
            for w in self._works:
                left = max(0.001, timeout_s - (time.time() - t0))
                if not w.wait(timeout=_dt.timedelta(seconds=left)):
                    raise TimeoutError("timed out")
        except Exception as exc:  # gloo raises RuntimeError on a closed peer / timeout
            name = self._transport.peer_name(self.peer)
            raise PeerError(
                f"receiving {self._transport.label(self.message)} from {name} failed after {time.time() - t0:.1f} s: {_short(exc)}",
                device=name,
            ) from None
        end = time.time()
        nbytes = sum(t.numel() * t.element_size() for t in self.tensors)
        self._transport._record(TransferEvent("recv", self.message, self.peer, t0, end, nbytes))
        return self.tensors


def _short(exc: BaseException) -> str:
    """First line of an exception, without gloo's ``[file.cc:line]`` source prefix."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line[:200]


class _Sender(threading.Thread):
    """Drains one peer's bounded queue: emulate the link, then isend + wait."""

    def __init__(
        self,
        transport: Transport,
        peer: int,
        shape: LinkShape,
        depth: int,
        timeout_s: float,
        clock: MediumClock | None = None,
        order: SendOrder | None = None,
    ):
        super().__init__(name=f"send->{peer}", daemon=True)
        self.transport = transport
        self.peer = peer
        self.shape = shape
        self.clock = clock
        self.held = HeldSends(order)
        self.timeout_s = timeout_s
        # (message, tensors), or (PROBE_MESSAGE, bytes) for a probe; None ends the thread
        self.queue: queue.Queue[tuple[int, Any] | None] = queue.Queue(maxsize=depth)
        self.error: PeerError | None = None

    def run(self) -> None:
        if self.transport.thread_init is not None:
            self.transport.thread_init()
        while True:
            item = self.queue.get()
            if item is None:
                if self.held.held:  # a predecessor never came: the orders were wrong
                    first, n = self.transport.label(self.held.held[0]), len(self.held.held)
                    self._failed(f"{first} ({n} held) never became the next its receiver posts")
                return
            for message, payload in self.held.release(*item):
                if not self._transmit(message, payload):
                    return
            self.queue.task_done()

    def _failed(self, why: str, message: int | None = None) -> None:
        name = self.transport.peer_name(self.peer)
        what = "" if message is None else f"{self.transport.label(message)} "
        self.error = PeerError(f"sending {what}to {name} failed: {why}", device=name)
        self.transport._fail(self.error)

    def _transmit(self, message: int, tensors: Any) -> bool:
        """Hold the emulated link for one message, then send it; ``False`` after a failure."""
        probe = message == PROBE_MESSAGE
        nbytes = tensors if probe else sum(t.numel() * t.element_size() for t in tensors)
        t0 = time.time()
        delay = self.shape.delay_s(nbytes, t0)
        if self.clock is not None:  # a shared medium: wait for our turn, then hold it
            t0 = self.clock.reserve(delay)
            left = t0 + delay - time.time()
            if left >= _MIN_SLEEP_S:
                time.sleep(left)
        elif delay >= _MIN_SLEEP_S:
            time.sleep(delay)
        if probe:  # the hold is the probe: nothing goes on the wire (module docstring)
            self.transport._record(
                TransferEvent("send", message, self.peer, t0, time.time(), nbytes, delay)
            )
            return True
        try:
            works = [
                dist.isend(t, dst=self.peer, tag=message * TAGS_PER_MESSAGE + j)
                for j, t in enumerate(tensors)
            ]
            for w in works:
                left = max(0.001, self.timeout_s - (time.time() - t0))
                if not w.wait(timeout=_dt.timedelta(seconds=left)):
                    raise TimeoutError("timed out")
        except Exception as exc:
            self._failed(_short(exc), message)
            return False
        emulated = self.shape.bandwidth_Bps is not None or self.shape.trace is not None
        end = time.time()
        hold = delay if emulated else None
        self.transport._record(TransferEvent("send", message, self.peer, t0, end, nbytes, hold))
        return True


class Transport:
    """Point-to-point tensors with this process's emulated links; one instance per process.

    Parameters
    ----------
    rank, names
        This process's rank and the device name of every rank (for error messages).
    links
        Emulated link shape from this rank to each peer rank (missing = unshaped).
    depth
        Messages that may wait in one peer's send queue before ``send`` blocks (back-pressure).
    timeout_s
        Bound on any single wait; a stuck peer becomes a :class:`PeerError` after at most this.
    on_error
        Called once (from a sender thread) with the first send failure, so the owner can abort.
    label
        Names a message id in error messages (e.g. ``"the input of stage 1 of request 3"``).
    thread_init
        Called first thing in every sender thread (the worker moves it out of the CPU quota).
    clocks
        The reservation clock of every shared medium a link in ``links`` names.
    keep_events
        Keep only the most recent transfer events (a session's bounded memory); ``None``: all.
    orders
        Per peer rank, the order its receiving threads post this rank's messages in
        (:mod:`.sendorder`): a message produced early waits for its predecessor there. A peer
        without one gets its messages in the order they were queued.
    """

    def __init__(
        self,
        rank: int,
        names: Sequence[str],
        links: Mapping[int, LinkShape],
        *,
        depth: int = 2,
        timeout_s: float = 60.0,
        on_error: Callable[[PeerError], None] | None = None,
        label: Callable[[int], str] | None = None,
        thread_init: Callable[[], None] | None = None,
        clocks: Mapping[str, MediumClock] | None = None,
        keep_events: int | None = None,
        orders: Mapping[int, SendOrder] | None = None,
    ):
        self.rank = rank
        self.clocks = dict(clocks or {})
        missing = {s.medium for s in links.values() if s.medium is not None} - set(self.clocks)
        if missing:
            raise InputError(f"links over media {sorted(missing)} but no clock for them")
        self.names = tuple(names)
        self.links = dict(links)
        self.depth = depth
        self.timeout_s = timeout_s
        self.on_error = on_error
        self.label = label or (lambda m: f"message {m}")
        self.thread_init = thread_init
        self.orders = dict(orders or {})
        self._senders: dict[int, _Sender] = {}
        self._events: deque[TransferEvent] = deque(maxlen=keep_events)
        self._lock = threading.Lock()
        self._error: PeerError | None = None

    def peer_name(self, rank: int) -> str:
        return self.names[rank] if 0 <= rank < len(self.names) else f"rank {rank}"

    def _record(self, ev: TransferEvent) -> None:
        with self._lock:
            self._events.append(ev)

    def _fail(self, err: PeerError) -> None:
        with self._lock:
            first = self._error is None
            if first:
                self._error = err
        if first and self.on_error is not None:
            self.on_error(err)

    @property
    def events(self) -> list[TransferEvent]:
        with self._lock:
            return list(self._events)

    def send(
        self,
        peer: int,
        message: int,
        tensors: Sequence[torch.Tensor],
        metas: Sequence[WireTensorSpec],
    ) -> None:
        """Queue ``tensors`` for ``peer`` after checking them against ``metas``.

        Blocks while ``depth`` messages already wait for this peer (back-pressure). Raises the
        first send failure, if any happened, instead of queueing more.
        """
        if self._error is not None:
            raise self._error
        if len(tensors) != len(metas):
            raise InputError(
                f"message {message} to {self.peer_name(peer)}: {len(tensors)} tensors, contract has {len(metas)}"
            )
        if len(tensors) > TAGS_PER_MESSAGE:
            raise InputError(
                f"message {message}: {len(tensors)} tensors exceed the limit of {TAGS_PER_MESSAGE}"
            )
        for j, (t, m) in enumerate(zip(tensors, metas, strict=True)):
            m.check(t, f"message {message} tensor {j} to {self.peer_name(peer)}")
        sender = self._sender(peer)
        payload = [t.contiguous() for t in tensors]
        deadline = time.time() + self.timeout_s
        while True:
            try:
                sender.queue.put((message, payload), timeout=0.2)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error from None
                if time.time() > deadline:
                    raise PeerError(
                        f"send queue to {self.peer_name(peer)} stuck for {self.timeout_s:.0f} s",
                        device=self.peer_name(peer),
                    ) from None

    def _sender(self, peer: int) -> _Sender:
        with self._lock:  # the compute loop and relay threads may send to the same peer
            sender = self._senders.get(peer)
            if sender is None:
                shape = self.links.get(peer, LinkShape())
                clock = None if shape.medium is None else self.clocks[shape.medium]
                order = self.orders.get(peer)
                sender = _Sender(self, peer, shape, self.depth, self.timeout_s, clock, order)
                sender.start()
                self._senders[peer] = sender
            return sender

    def probe(self, peer: int, nbytes: int = PROBE_BYTES) -> bool:
        """Queue a probe of the link to ``peer`` (module docstring); ``False`` (nothing
        queued) when the link is not an emulated dedicated one, or its queue is full — then
        real traffic measures it anyway, and a probe must never make the stream wait."""
        shape = self.links.get(peer)
        if self._error is not None or shape is None or shape.medium is not None:
            return False
        if shape.bandwidth_Bps is None and shape.trace is None:
            return False
        try:
            self._sender(peer).queue.put_nowait((PROBE_MESSAGE, int(nbytes)))
        except queue.Full:
            return False
        return True

    def post_recv(self, peer: int, message: int, metas: Sequence[WireTensorSpec]) -> PendingRecv:
        """Post the receives of one message now (buffers pre-allocated from ``metas``)."""
        return PendingRecv(self, peer, message, metas)

    def flush(self) -> None:
        """Wait until every queued send has gone out (or raise the first failure)."""
        deadline = time.time() + self.timeout_s
        for s in list(self._senders.values()):
            s.queue.put(None, timeout=max(0.001, deadline - time.time()))
        for s in list(self._senders.values()):
            s.join(timeout=max(0.001, deadline - time.time()))
            if s.is_alive() and self._error is None:
                name = self.peer_name(s.peer)
                raise PeerError(
                    f"sends to {name} did not finish within {self.timeout_s:.0f} s", device=name
                )
        self._senders.clear()
        if self._error is not None:
            raise self._error


__all__ = [
    "PROBE_BYTES",
    "PROBE_MESSAGE",
    "LinkShape",
    "PendingRecv",
    "TransferEvent",
    "Transport",
    "WireTensorSpec",
    "dtype_name",
    "init_process_group",
]
