"""The worker: one process per device, executing its part of a :class:`~coinfer.core.schedules.Schedule`.

Life of a worker (one run per process, so every run starts with fresh data-plane state):

1. connect to the coordinator, run the mutual HMAC handshake (:mod:`.control`);
2. receive ``setup`` (JSON) with its stage's weights (safetensors bytes) and, on the source, the
   inputs; apply the device emulation; rebuild its stage from code; join the gloo group;
3. answer ``ready``, wait for ``go``, execute, stream ``result`` messages (source only), send
   ``done`` with the measured trace, and exit on ``bye`` (or at once on ``abort``).

Threads while executing (compute never waits for the wire unless a bounded queue is full):

- *receiver*: walks the device's ``recv`` actions in order, keeps up to ``depth`` receives posted
  ahead into pre-allocated buffers, hands finished inputs to the compute loop (bounded queue);
- *compute* (main thread): ``compute`` then ``send`` — a send only enqueues for the peer's sender
  thread (:class:`~.transport.Transport`), so the next compute starts at once;
- *client* (the source device only): feeds request inputs in the schedule's closed-loop order and
  collects outputs, streaming each to the coordinator (its ledger marks the request done);
- *heartbeat* and *control reader*: liveness for the coordinator, ``abort``/``bye`` handling.

Any failure is reported as one ``error`` message naming this device and the peer involved, then
the process exits: the coordinator owns the decision (fail the run's open requests).

Why one module: the receiver, the compute loop, the client and the relays share one executor's
state (the unrolled action lists, the posted receives, the mailbox, the trace) and hand work to
each other through it; what a session adds on top (cycles unrolled until an end learned late,
submissions) is in :mod:`.streaming`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from ..core.schedules import Action
from ..errors import CoinferError, PeerError
from . import emulation, media, processes
from .control import Channel, connect_coordinator, set_bind_address, store_prefix
from .liveness import HEARTBEAT_S, control_reader, heartbeat, wait_for_setup
from .mailbox import Mailbox
from .protocol import (
    Done,
    End,
    Error,
    Ready,
    Result,
    Setup,
    Stats,
    Submit,
    encode,
    expect,
)
from .sendorder import link_orders, message_id
from .stages import (
    StageSpec,
    as_tuple,
    build_stage_module,
    decode_inputs,
    encode_tensors,
    load_stage_weights,
)
from .streaming import STREAM_TRACE_KEEP, STREAM_WAIT_S, StreamEnd, Submissions, unrolled
from .transport import (
    PROBE_BYTES,
    PROBE_MESSAGE,
    LinkShape,
    PendingRecv,
    Transport,
    WireTensorSpec,
    init_process_group,
)

# Seconds between a session's telemetry reports (Stats) from each worker: short enough that a
# step (believed after two samples, core.online) is seen within about a second; ~10 computes per
# report at the testbed's 20 req/s still give a usable mean.
STATS_S = 0.5
# Receives posted ahead / messages queued per peer: 2 is enough to overlap one transfer with one
# compute on each side (double buffering); more only adds memory and queueing delay.
DEFAULT_DEPTH = 2
# Receives posted ahead of the compute loop. A sender's transfer completes only once the receiver
# has posted the matching receive, so a busy receiver with few posts holds the *link* (and then,
# through the send queue, the sender's compute) — measured on the demo's pico plan: d2->d0 took a
# median 42 ms instead of 14 while d0 was computing. The cost model and the simulator let data
# land whenever the link is free, so receives are posted this far ahead (a few activations of
# memory) and the link, not the receiver's schedule, sets the transfer time.
RECV_AHEAD = 8


class _Executor:
    """Runs one device's actions; all state for one run, no globals."""

    def __init__(
        self,
        setup: Setup,
        stage: torch.nn.Module | None,
        inputs: dict[int, list[torch.Tensor]],
        chan: Channel,
        emu: emulation.Emulation | None = None,
    ):
        self.device = setup.device
        self.names = list(setup.names)
        self.rank_of = {n: i for i, n in enumerate(self.names)}
        self.rank = setup.rank
        self.num_stages = setup.num_stages
        self.timeout_s = setup.timeout_s
        self.depth = setup.depth
        self.contracts = [[WireTensorSpec.from_list(m) for m in c] for c in setup.contracts]
        self.actions = [Action.parse(a) for a in setup.actions]
        self.client = [Action.parse(a) for a in setup.client_actions]
        self.relays: dict[str, list[tuple[int, int, str, str]]] = {}
        for request, stage_in, prev, nxt, flow in setup.relays:
            self.relays.setdefault(flow, []).append((int(request), int(stage_in), prev, nxt))
        self.last_device = {int(r): d for r, d in setup.last_device.items()}
        # a streaming session: one cycle of work, repeated until End (see .streaming)
        self.stream = setup.stream
        self.cycle = setup.cycle if setup.stream else 0
        self.window = max(1, setup.window)
        self.epoch = setup.epoch
        self.probe_s = setup.probe_s
        self.end = StreamEnd()
        self.submissions = Submissions(self.contracts[0], self.end)
        self.wait_s = STREAM_WAIT_S if setup.stream else self.timeout_s
        # what each helper thread waits on (a request id): once the session's end is known, a
        # thread waiting on a request past it is idle for good and need not be joined
        self.waiting_on: dict[str, int] = {}
        self.stage = stage
        self.emulation = emu or emulation.Emulation("none", 1, None)
        self.inputs = inputs
        self.chan = chan
        links = {self.rank_of[n]: LinkShape.from_dict(s) for n, s in setup.links.items()}
        on_air = sorted({s.medium for s in links.values() if s.medium is not None})
        clocks = {m: media.MediumClock(media.clock_path(setup.run_id, m)) for m in on_air}
        self.transport = Transport(
            self.rank,
            self.names,
            links,
            depth=self.depth,
            timeout_s=self.timeout_s,
            on_error=self.fail,
            label=self._label,
            thread_init=emulation.exempt_this_thread,
            clocks=clocks,
            keep_events=STREAM_TRACE_KEEP if setup.stream else None,
            orders={
                self.rank_of[peer]: order
                for peer, order in link_orders(
                    setup.send_order, self.cycle, self.num_stages
                ).items()
            },
        )
        self.mailbox = Mailbox()
        keep = STREAM_TRACE_KEEP if setup.stream else None
        self.events: deque[dict[str, Any]] = deque(maxlen=keep)
        self.arrivals: deque[list[Any]] = deque(maxlen=keep)  # [src device, request, stage, time]
        self.busy_s = 0.0
        # when each received input was ready for the compute loop (its queueing starts there)
        self._ready_at: dict[int, float] = {}
        self._ev_lock = threading.Lock()
        self.failed = threading.Event()

    def _label(self, message: int) -> str:
        request, stage = divmod(message, self.num_stages + 2)
        target = "the output" if stage - 1 == self.num_stages else f"the input of stage {stage - 1}"
        return f"{target} of request {request}"

    # -- reporting -------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """Report the first failure to the coordinator and end the process (never hang)."""
        if self.failed.is_set():
            return
        self.failed.set()
        msg = str(exc) if isinstance(exc, CoinferError) else f"{type(exc).__name__}: {exc}"
        peer = getattr(exc, "device", None)
        with contextlib.suppress(Exception):
            self.chan.send(encode(Error(msg, device=self.device, peer=peer)))
        os._exit(processes.EXIT_AFTER_ERROR)

    def _event(
        self,
        resource: str,
        kind: str,
        request: int,
        start: float,
        end: float,
        stage: int,
        **extra: Any,
    ) -> None:
        with self._ev_lock:
            self.events.append(
                {
                    "resource": resource,
                    "kind": kind,
                    "request": request,
                    "start_s": start,
                    "end_s": end,
                    "stage": stage,
                    **extra,
                }
            )

    def _arrived(self, src: str, request: int, stage: int) -> None:
        """When a remote message fully arrived (the end of its link transfer, receiver's clock)."""
        if src != self.device:
            with self._ev_lock:
                self.arrivals.append([src, request, stage, time.time()])

    # -- sending ---------------------------------------------------------------------------
    def _send(
        self, peer: str, request: int, stage_in: int, tensors: Sequence[torch.Tensor]
    ) -> None:
        """Deliver the input of ``stage_in`` for ``request`` to ``peer`` (local or remote)."""
        if peer == self.device:
            self.mailbox.put((request, stage_in), list(tensors))
            return
        self.transport.send(
            self.rank_of[peer],
            message_id(request, stage_in, self.num_stages),
            tensors,
            self.contracts[stage_in],
        )

    def _post(self, peer: str, request: int, stage_in: int) -> PendingRecv | None:
        if peer == self.device:
            return None
        return self.transport.post_recv(
            self.rank_of[peer],
            message_id(request, stage_in, self.num_stages),
            self.contracts[stage_in],
        )

    def _wait(self, pending: PendingRecv | None, request: int, stage_in: int) -> list[torch.Tensor]:
        if pending is None:
            return self.mailbox.get((request, stage_in), self.wait_s)
        return pending.wait(self.wait_s)

    # -- the work, unrolled (one pass for a run, cycle after cycle for a session) --------------
    def _actions(self, kind: str | None = None) -> Iterator[Action]:
        acts = self.actions if kind is None else [a for a in self.actions if a.kind == kind]
        return self._unroll(acts)

    def _unroll(self, acts: Sequence[Action]) -> Iterator[Action]:
        """``acts`` for every request this run or session has (see :func:`.streaming.unrolled`)."""
        return unrolled(
            acts,
            self.cycle,
            lambda a: a.request,
            lambda a, off: replace(a, request=a.request + off),
            self.end,
        )

    def _relay_steps(
        self, steps: Sequence[tuple[int, int, str, str]]
    ) -> Iterator[tuple[int, int, str, str]]:
        return unrolled(
            steps, self.cycle, lambda st: st[0], lambda st, off: (st[0] + off, *st[1:]), self.end
        )

    def _last_hop(self, request: int) -> str:
        return self.last_device[request % self.cycle if self.cycle else request]

    # -- roles -----------------------------------------------------------------------------
    def _receiver(
        self, ready: queue.Queue[tuple[int, list[torch.Tensor]]], slots: threading.Semaphore
    ) -> None:
        """Keep up to ``depth`` receives posted; hand finished inputs to the compute loop.

        A slot is taken per posted receive and given back when the compute loop takes the input,
        so at most ``depth`` inputs are buffered, and this thread never blocks on a full queue:
        it is always waiting on the oldest receive, so the recorded arrival time is when the data
        actually landed (the link check relies on it).
        """
        emulation.exempt_this_thread()
        try:
            recvs = self._actions("recv")
            nxt = next(recvs, None)
            posted: list[tuple[Action, PendingRecv | None]] = []
            while nxt is not None or posted:
                while nxt is not None and slots.acquire(blocking=not posted):
                    posted.append((nxt, self._post(str(nxt.peer), nxt.request, nxt.stage)))
                    nxt = next(recvs, None)
                a, pend = posted.pop(0)
                tensors = self._wait(pend, a.request, a.stage)
                self._arrived(str(a.peer), a.request, a.stage)
                self._ready_at[a.request] = time.time()
                ready.put((a.request, tensors))
        except BaseException as exc:
            self.fail(exc)

    def _worker(self) -> None:
        """Compute loop: inputs in recv order == compute order (request-major action lists)."""
        if not self.actions:
            return
        if self.stage is None:
            raise PeerError(f"device {self.device} has stage actions but no stage")
        ready: queue.Queue[tuple[int, list[torch.Tensor]]] = queue.Queue()  # bounded by ``slots``
        slots = threading.Semaphore(max(self.depth, RECV_AHEAD))
        threading.Thread(
            target=self._receiver, args=(ready, slots), name="receiver", daemon=True
        ).start()
        pending_out: tuple[int, tuple[torch.Tensor, ...]] | None = None
        for a in self._actions():
            if a.kind == "compute":
                got = self._next_input(ready, a)
                if got is None:
                    return  # the session ended before this request
                request, xs = got
                slots.release()  # the input is the compute loop's now: post the next receive
                if request != a.request:
                    raise PeerError(
                        f"device {self.device}: got request {request}, schedule expects {a.request}"
                    )
                t0 = time.time()
                wait = max(t0 - self._ready_at.pop(request, t0), 0.0)
                c0 = self.emulation.compute_cpu_s()
                with torch.inference_mode():
                    outs = as_tuple(self.stage(*xs))
                cpu = self.emulation.compute_cpu_s() - c0
                pad = self.emulation.pad_s(cpu, time.time() - t0)
                if pad > 0:
                    time.sleep(pad)  # the device's fluid rate (see Emulation.pad_s)
                t1 = time.time()
                self.busy_s += t1 - t0
                self._event(
                    self.device, "compute", a.request, t0, t1, a.stage,
                    cpu_s=cpu, pad_s=pad, wait_s=wait,
                )  # fmt: skip
                pending_out = (a.request, outs)
            elif a.kind == "send":
                if pending_out is None or pending_out[0] != a.request:
                    raise PeerError(
                        f"device {self.device}: schedule sends request {a.request} before computing it"
                    )
                self._send(str(a.peer), a.request, a.stage + 1, pending_out[1])
                pending_out = None

    def _next_input(
        self, ready: queue.Queue[tuple[int, list[torch.Tensor]]], a: Action
    ) -> tuple[int, list[torch.Tensor]] | None:
        """The next received input; ``None`` once the session's end lies at or before ``a``.
        A run bounds the wait by its timeout; a session may idle (the coordinator watches)."""
        waited = 0.0
        while True:
            try:
                return ready.get(timeout=0.2)
            except queue.Empty:
                waited += 0.2
            if not self.end.admits(a.request):
                return None
            if not self.stream and waited > self.timeout_s + 1:
                raise PeerError(
                    f"device {self.device}: no input for request {a.request} within {self.timeout_s:.0f} s",
                    device=str(a.peer) if a.peer else None,
                )

    def _client(self) -> None:
        """The source's client: release inputs in the schedule's order, stream outputs back."""
        emulation.exempt_this_thread()
        try:
            k = self.num_stages
            pending: dict[int, PendingRecv | None] = {}
            released: dict[int, float] = {}
            for a in self.client:
                if a.kind == "send":
                    last = self._last_hop(a.request)
                    pending[a.request] = self._post(last, a.request, k)
                    released[a.request] = time.time()
                    self._send(str(a.peer), a.request, 0, self.inputs.pop(a.request))
                else:
                    outs = self._wait(pending.pop(a.request), a.request, k)
                    self._arrived(self._last_hop(a.request), a.request, k)
                    self._report(a.request, released.pop(a.request), outs)
        except BaseException as exc:
            self.fail(exc)

    def _report(self, request: int, released: float, outs: Sequence[torch.Tensor]) -> None:
        """Stream one output to the coordinator (its ledger marks the request done)."""
        done = time.time()
        self.chan.send(encode(Result(request, released, done, self.epoch)), [encode_tensors(outs)])

    def on_control(self, msg: Any, blobs: list[bytes]) -> None:
        """A session's ``submit`` (the source's next inputs) or ``end`` (its length)."""
        if isinstance(msg, Submit):
            if not self.stream or len(blobs) != 1:
                raise PeerError(f"device {self.device}: unexpected submission")
            self.submissions.add(msg.message, blobs[0])
        elif isinstance(msg, End):
            self.end.set(msg.messages)

    def _stream_client(self) -> None:
        """The source's client in a session: release submitted inputs in order, at most
        ``window`` in flight (the same closed loop as a run's client order), and stream each
        output back as it arrives; a second thread collects so a release never waits for one."""
        emulation.exempt_this_thread()
        slots = threading.Semaphore(self.window)
        flying: queue.Queue[tuple[int, PendingRecv | None, float] | None] = queue.Queue()
        k = self.num_stages

        def collect() -> None:
            emulation.exempt_this_thread()
            self.waiting_on["collector"] = -1
            try:
                while (item := flying.get()) is not None:
                    request, pend, released = item
                    self.waiting_on["collector"] = request
                    outs = self._wait(pend, request, k)
                    self._arrived(self._last_hop(request), request, k)
                    self._report(request, released, outs)
                    slots.release()
                self.waiting_on.pop("collector", None)
            except BaseException as exc:
                self.fail(exc)

        self.waiting_on["client"] = -1
        collector = threading.Thread(target=collect, name="collector", daemon=True)
        collector.start()
        try:
            for a in self._unroll([a for a in self.client if a.kind == "send"]):
                self.waiting_on["client"] = a.request
                xs = self.submissions.take(a.request)
                if xs is None:
                    break
                slots.acquire()  # the collector gives one back per output
                pend = self._post(self._last_hop(a.request), a.request, k)
                released = time.time()
                self._send(str(a.peer), a.request, 0, xs)
                flying.put((a.request, pend, released))
            self.waiting_on.pop("client", None)
            flying.put(None)
            collector.join()
        except BaseException as exc:
            self.fail(exc)

    def _relay(self, steps: Sequence[tuple[int, int, str, str]], name: str) -> None:
        """Forward one flow's messages (store and forward, tag unchanged) in the sender's order,
        with up to ``RECV_AHEAD`` receives posted so the incoming link never waits for us."""
        emulation.exempt_this_thread()
        self.waiting_on[name] = -1  # busy until it waits on a request past the session's end
        try:
            todo = self._relay_steps(steps)
            step = next(todo, None)
            posted: list[tuple[tuple[int, int, str, str], PendingRecv | None]] = []
            while step is not None or posted:
                while step is not None and len(posted) < max(self.depth, RECV_AHEAD):
                    posted.append((step, self._post(step[2], step[0], step[1])))
                    step = next(todo, None)
                (request, stage_in, prev, nxt), pend = posted.pop(0)
                self.waiting_on[name] = request
                tensors = self._wait(pend, request, stage_in)
                self._arrived(prev, request, stage_in)
                self._send(nxt, request, stage_in, tensors)
            self.waiting_on.pop(name, None)
        except BaseException as exc:
            self.fail(exc)

    def stats_since(self, t0: float, t1: float) -> Stats:
        """What this device did in ``(t0, t1]``: the live telemetry of a session."""
        with self._ev_lock:
            comp = [e for e in self.events if e["kind"] == "compute" and t0 < e["end_s"] <= t1]
        links: dict[str, list[float]] = {}
        for ev in self.transport.events:
            if ev.kind == "send" and t0 < ev.end_s <= t1:
                row = links.setdefault(self.names[ev.peer], [0, 0.0, 0.0])
                row[0] += 1
                row[1] += ev.nbytes
                row[2] += ev.end_s - ev.start_s if ev.hold_s is None else ev.hold_s
        return Stats(
            t1, t1 - t0, len(comp), sum(e["end_s"] - e["start_s"] for e in comp),
            sum(e.get("cpu_s", 0.0) for e in comp),
            {p: (int(r[0]), r[1], r[2]) for p, r in links.items()},
            sum(e.get("wait_s", 0.0) for e in comp),
        )  # fmt: skip

    def _report_stats(self, stop: threading.Event) -> None:
        """A session's telemetry: every :data:`STATS_S`, what the last interval measured."""
        emulation.exempt_this_thread()
        last = time.time()
        while not stop.wait(STATS_S):
            now = time.time()
            try:
                self.chan.send(encode(self.stats_since(last, now)))
            except PeerError:
                return
            last = now

    def _probe_links(self, stop: threading.Event, every_s: float) -> None:
        """A session's link probes: every ``every_s``, each emulated link that carried less
        than a probe's bytes since the last round gets one (:meth:`Transport.probe`)."""
        emulation.exempt_this_thread()
        last = time.time()
        while not stop.wait(every_s):
            now = time.time()
            sent: dict[int, int] = {}
            for ev in self.transport.events:  # the stream's own traffic (not the probes)
                if ev.kind == "send" and ev.end_s > last and ev.message != PROBE_MESSAGE:
                    sent[ev.peer] = sent.get(ev.peer, 0) + ev.nbytes
            for peer in self.transport.links:
                if peer != self.rank and sent.get(peer, 0) < PROBE_BYTES:
                    self.transport.probe(peer)
            last = now

    def run(self) -> None:
        """Stage work on this thread, the client (source only) and relays beside it; then drain
        the sends. In a session, a helper left waiting on a request past the end is idle for
        good (its receive was posted before the end was known) and is not waited for."""
        helpers = [
            threading.Thread(
                target=self._relay, args=(steps, f"relay {flow}"), name=f"relay {flow}", daemon=True
            )
            for flow, steps in self.relays.items()
        ]
        if self.client:
            client = self._stream_client if self.stream else self._client
            helpers.append(threading.Thread(target=client, name="client", daemon=True))
        for t in helpers:
            t.start()
        stats_stop = threading.Event()
        if self.stream:
            threading.Thread(
                target=self._report_stats, args=(stats_stop,), name="stats", daemon=True
            ).start()
            if self.probe_s > 0:
                threading.Thread(
                    target=self._probe_links, args=(stats_stop, self.probe_s), name="probes",
                    daemon=True,
                ).start()  # fmt: skip
        self._worker()
        for t in helpers:
            while t.is_alive():
                t.join(0.1)
                if self.stream and not any(
                    self.end.admits(r) for r in list(self.waiting_on.values())
                ):
                    break
        stats_stop.set()
        self.transport.flush()


# Bytes a safetensors blob adds to its tensors' data (its JSON header), at most: a message's
# attachments may exceed the contract's tensor bytes by this and no more.
SAFETENSORS_SLACK = 64 * 1024


def model_code_refused(spec: str) -> str | None:
    """Why this worker will not import ``spec`` without ``--allow-model-code`` (``None``: a
    built-in model, fine)."""
    from ..zoo import ZOO

    if spec in ZOO:
        return None
    module = spec.rpartition(":")[0]
    if module.startswith("coinfer.") and not module.endswith(".py") and "/" not in module:
        return None
    return (
        f"model {spec!r} would import code on this worker; start the worker with "
        "--allow-model-code to allow it"
    )


def serve(
    coordinator: str,
    device: str,
    token: str,
    *,
    bind: str = "127.0.0.1",
    connect_timeout_s: float = 30.0,
    allow_model_code: bool = False,
) -> None:
    """Serve one run as ``device`` for the coordinator at ``HOST:PORT``; returns when it ends.

    ``allow_model_code``: rebuild stages of any model the setup names (``module:factory`` or
    ``file.py:factory`` imports and runs that code); without it only the built-in zoo and
    coinfer's own modules are accepted.

    Raises :class:`PeerError` if the coordinator is unreachable or fails authentication.
    """
    chan = connect_coordinator(coordinator, device, token, connect_timeout_s)
    raw, blobs = wait_for_setup(chan)
    setup: Setup = expect(raw, Setup, peer=chan.peer)
    if setup.stage is not None and not allow_model_code:
        refused = model_code_refused(str(setup.stage.spec.get("model", "")))
        if refused:
            with contextlib.suppress(Exception):
                chan.send(encode(Error(refused, device=device)))
            raise PeerError(refused, device=device)
    # no second setup; a session's submissions are one micro-batch of the first cut
    chan.limit_attachments("setup", 0)
    first_cut = sum(WireTensorSpec.from_list(m).nbytes for m in setup.contracts[0])
    chan.limit_attachments("submit", first_cut + SAFETENSORS_SLACK if setup.stream else 0)
    # beat, and listen, from now on: building the stage and forming the group can take seconds,
    # and a worker (or a coordinator) stopped or stuck there must be noticed as quickly as one
    # stopped mid-run
    stop, go, bye = threading.Event(), threading.Event(), threading.Event()
    executor: list[_Executor] = []  # set once built; a session's submissions go to it

    def on_control(msg: Any, blobs: list[bytes]) -> None:
        if not executor:
            raise PeerError(f"device {device}: {msg.type!r} before the run started")
        executor[0].on_control(msg, blobs)

    threading.Thread(target=heartbeat, args=(chan, stop), name="heartbeat", daemon=True).start()
    threading.Thread(
        target=control_reader, args=(chan, go, bye, on_control), name="control", daemon=True
    ).start()
    emu = emulation.Emulation("none", torch.get_num_threads(), None)
    try:
        # the device's thread count before any torch work: a warm-up at the default count would
        # leave an OpenMP pool thread behind (measured: 0.3-1 s of CPU per run, outside the quota)
        torch.set_num_threads(setup.emulate.threads)
        pool = emulation.start_intra_op_pool()  # k threads: all k go under the quota below
        blob_iter = iter(blobs)
        stage = None
        if setup.stage is not None:
            if setup.stage.cache_key is not None:  # forked with the stage ready (zygote cache)
                from .param_cache import cached_stage

                stage = cached_stage(setup.stage.cache_key)
                if stage is None:
                    raise PeerError(f"device {device}: stage not in the zygote's parameter cache")
            else:
                stage = build_stage_module(StageSpec.from_dict(setup.stage.spec), setup.stage.index)
                load_stage_weights(stage, next(blob_iter))
            stage.eval()
            # warm-up: first-call allocations and kernel selection stay out of the timings
            inputs_meta = [WireTensorSpec.from_list(x) for x in setup.contracts[setup.stage.index]]
            with torch.inference_mode():
                stage(*(m.empty().zero_() for m in inputs_meta))
        inputs = decode_inputs(next(blob_iter)) if setup.is_source and not setup.stream else {}
        set_bind_address(bind)
        store_host, store_port = setup.store
        init_process_group(setup.rank, len(setup.names), store_host, store_port, setup.timeout_s,
                           prefix=store_prefix(token, setup.run_id))  # fmt: skip
        # After the group exists: gloo's I/O threads stay outside the quota (see emulation).
        emu = emulation.apply(
            device,
            setup.run_id,
            cpu_quota=setup.emulate.cpu_quota,
            threads=setup.emulate.threads,
            use_cgroup=setup.use_cgroup,
            cpu=setup.emulate.cpu,
            cpus=setup.emulate.cpus,
            pool=pool,
        )
        ex = _Executor(setup, stage, inputs, chan, emu)
        executor.append(ex)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            detail = str(exc) if isinstance(exc, CoinferError) else f"{type(exc).__name__}: {exc}"
            chan.send(encode(Error(f"setup failed: {detail}", device=device)))
        emulation.release(emu)
        raise
    ready = {**emu.to_dict(), "freq": setup.emulate.freq}
    chan.send(encode(Ready(ready, time.time(), torch.get_num_threads())))
    if not go.wait(setup.timeout_s):
        os._exit(6)
    t0 = time.time()
    try:
        ex.run()
    except BaseException as exc:
        if os.environ.get("COINFER_DEBUG"):
            traceback.print_exc()
        ex.fail(exc)
    busy = ex.busy_s
    for tev in ex.transport.events:  # link busy intervals, as measured by the sender
        if tev.kind == "send" and tev.message != PROBE_MESSAGE:  # probes are telemetry only
            request, stage = divmod(tev.message, ex.num_stages + 2)
            ex._event(
                f"{device}->{ex.names[tev.peer]}",
                "transfer",
                request,
                tev.start_s,
                tev.end_s,
                stage - 1,
                nbytes=tev.nbytes,
            )
    wall = time.time() - t0
    helpers = emulation.helper_cpu_s(emu.compute_cpu_s())  # all but the compute threads
    chan.send(encode(Done(tuple(ex.events), tuple(map(tuple, ex.arrivals)), busy, wall, helpers)))
    bye.wait(setup.timeout_s)
    stop.set()
    emulation.release(emu)
    # Skip interpreter teardown: gloo's destructors may block on peers that already left.
    os._exit(0)


__all__ = ["DEFAULT_DEPTH", "HEARTBEAT_S", "message_id", "serve"]
