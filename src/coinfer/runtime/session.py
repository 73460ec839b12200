"""Streaming sessions: submit requests at any time, get results in order, lose none to a failure.

A :class:`Session` keeps one pipeline of workers running and feeds it: ``submit(inputs)``
returns a :class:`~concurrent.futures.Future` at once; the coordinator forwards submissions to
the source device in order (at most ``FEED_AHEAD`` windows ahead of the results, so no worker
buffers an unbounded backlog); the source releases them into the pipeline with the schedule's
closed-loop window; each output resolves its future and is not kept.

Fail-over. Every request has an id and the coordinator holds its inputs until its result is
back, so whatever happens to the workers, the ledger knows exactly what is unfinished. The
workers of one plan form an *epoch*; every result carries its epoch and the coordinator only
accepts results of the current one for requests still open, so no request completes twice.
When a worker dies, is stopped or goes silent (:func:`~.supervision.check_health`), the
session ends the epoch (kills its workers: a gloo group does not survive a member's loss), asks
``replan`` for a plan over the surviving devices, starts a new epoch with it and re-submits every
unfinished request, oldest first. Outputs are those of the unsplit model whichever epoch
computed them (each stage is rebuilt from the same weights).

The runtime does not plan: ``replan(alive_devices)`` comes from the caller (the CLI passes the
planner it was asked to use), returning the new plan and the instance it was made for.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.plans import Plan
from ..errors import InputError, PeerError
from . import emulation, media, processes
from . import supervision as sv
from .control import check_token
from .coordinator import _FileRendezvous, _listen, _network
from .prepare import Prepared, prepare_run
from .protocol import Bye, Done, End, Error, Go, Heartbeat, Ready, Result, Submit, encode
from .zygote import Zygote

# Requests in one cycle of a session's schedule: replicated stages pick their replica by a
# weighted round-robin that repeats every cycle (shares exact within 1/CYCLE of the weights).
CYCLE = 60
# Submissions forwarded to the source beyond the results received, in windows: enough that the
# source never waits for the coordinator, few enough that its memory stays bounded.
FEED_AHEAD = 2
# After the first failure signal, collect the others this long before naming the failed device
# (a dying worker makes its peers report errors too). Shorter than a run's: it delays recovery.
FAILOVER_GRACE_S = 0.3
# Epochs a session may start after failures before it gives up (each drops a device).
MAX_RECOVERIES = 8

Replan = Callable[[tuple[str, ...]], tuple[Plan, Any]]


@dataclass(frozen=True)
class Recovery:
    """One fail-over, on the session's clock (seconds since it started)."""

    device: str
    reason: str
    epoch: int  # the epoch that took over
    detected_s: float
    resumed_s: float  # the new epoch's workers are running
    first_result_s: float | None
    rerun: int  # unfinished requests submitted again
    devices: tuple[str, ...]  # the new plan's devices
    fault_s: float | None = None  # when the fault was injected, if it was

    def to_dict(self) -> dict[str, Any]:
        since = self.fault_s if self.fault_s is not None else self.detected_s
        return {
            "device": self.device,
            "reason": self.reason,
            "epoch": self.epoch,
            "fault_s": self.fault_s,
            "detected_s": self.detected_s,
            "detected_after_s": None if self.fault_s is None else self.detected_s - self.fault_s,
            "resumed_s": self.resumed_s,
            "first_result_s": self.first_result_s,
            "first_result_after_s": (
                None if self.first_result_s is None else self.first_result_s - since
            ),
            "rerun": self.rerun,
            "devices": list(self.devices),
        }


@dataclass(frozen=True)
class SessionReport:
    """What a closed session did. Times are seconds since the session started."""

    submitted: int
    completed: int
    lost: int
    duplicated: int
    microbatch: int
    recoveries: tuple[Recovery, ...]
    submit_s: tuple[float, ...]  # per completed request, in completion order
    done_s: tuple[float, ...]
    plan: dict[str, Any]
    trace: list[dict[str, Any]] = field(default_factory=list)  # last epoch, most recent events
    emulation: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    @property
    def latencies_s(self) -> list[float]:
        return [d - s for s, d in zip(self.submit_s, self.done_s, strict=True)]

    def throughput_rps(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Samples per second completed between ``start_s`` and ``end_s`` (default: from the
        first submission to the last result)."""
        if not self.done_s:
            return 0.0
        t0 = min(self.submit_s) if start_s is None else start_s
        t1 = max(self.done_s) if end_s is None else end_s
        n = sum(1 for t in self.done_s if t0 < t <= t1)
        return n * self.microbatch / (t1 - t0) if t1 > t0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "microbatch": self.microbatch,
            "throughput_rps": self.throughput_rps(),
            "latency_p50_s": pct(0.5),
            "latency_p95_s": pct(0.95),
            "recoveries": [r.to_dict() for r in self.recoveries],
            "plan": self.plan,
            "emulation": self.emulation,
            "error": self.error,
        }


@dataclass
class _Request:
    rid: int
    blob: bytes  # the inputs as safetensors, encoded once (re-runs send the same bytes)
    future: Future[list[torch.Tensor]]
    submit_s: float


class _EpochFailed(Exception):
    def __init__(self, suspects: dict[str, str], first_s: float):
        super().__init__("; ".join(f"{d}: {w}" for d, w in suspects.items()))
        self.suspects = suspects
        self.first_s = first_s


class _Epoch:
    """One plan's workers: started, fed, watched, and ended (cleanly or by killing them)."""

    def __init__(self, number: int, plan: Plan, prep: Prepared, window: int):
        self.number = number
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
        sv.limit_result_attachments(self.peers, sum(m.nbytes for m in self.prep.contracts[-1]))
        payloads = {}
        for d in self.prep.names:
            where = (
                (self.store.address, 0)
                if isinstance(self.store, _FileRendezvous)
                else (self.peers[d].chan.sock.getsockname()[0], self.store.port)
            )
            setup = self.prep.setup_for(d, self.run_id, where, shapes)
            payloads[d] = (encode(setup), list(self.prep.blobs[d]))
        sv.send_setups(self.peers, payloads, timeout_s)
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


class Session:
    """A running pipeline that takes requests at any time (see the module docstring).

    Parameters
    ----------
    model_spec, cluster, plan
        As for :func:`~.coordinator.run`; every worker is a local process.
    microbatch
        Samples per submitted request (its inputs' batch dimension).
    instance
        The instance ``plan`` was made for (schedule window, replica weights, routes).
    replan
        ``replan(alive_devices) -> (plan, instance)`` for fail-over; ``None``: a failure fails
        every open request (their futures raise :class:`PeerError`).
    timeout_s
        Bound on a stall: requests in flight and no result for this long is a failure.

    Usage::

        with Session("resnet18", cluster, plan, instance=inst, replan=rp) as s:
            futures = [s.submit(x) for x in batches]
            outputs = [f.result() for f in futures]
        print(s.report.to_dict())
    """

    def __init__(
        self,
        model_spec: str,
        cluster: Any,
        plan: Plan,
        *,
        microbatch: int = 1,
        input_shape: Sequence[int] | None = None,
        instance: Any = None,
        replan: Replan | None = None,
        netns: bool = False,
        timeout_s: float = 60.0,
        partition: str = "graph",
        max_pieces: int | None = None,
        depth: int = 2,
        use_cgroup: bool = True,
        log: Callable[[str], None] | None = None,
    ):
        self.model_spec = model_spec
        self.cluster = cluster
        self.microbatch = microbatch
        self.input_shape = input_shape
        self.replan = replan
        self.netns = netns
        self.timeout_s = timeout_s
        self.partition = partition
        self.max_pieces = max_pieces
        self.depth = depth
        self.use_cgroup = use_cgroup
        self._zygote: Zygote | None = None
        # the next epoch for each device that may fail, planned and prepared ahead (see
        # _prepare_contingencies): a fail-over then starts workers at once
        self._contingency: dict[str, tuple[Plan, _Epoch]] = {}
        self._contingency_lock = threading.Lock()
        self.say: Callable[[str], None] = log or (lambda _m: None)
        self.token = getattr(cluster, "token", None) or secrets.token_hex(32)
        check_token(self.token, f"{getattr(cluster, 'origin', 'cluster')}: field 'token'")
        self._lock = threading.Lock()
        self._pending: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._closing = threading.Event()
        self._broken: str | None = None
        self._failed: list[str] = []
        self._recoveries: list[Recovery] = []
        self._faults: dict[str, float] = {}  # device -> injected at (session clock)
        self._submit_s: list[float] = []
        self._done_s: list[float] = []
        self._duplicated = 0
        self._lost = 0
        self._t0 = time.monotonic()
        self._epoch = self._new_epoch(0, plan, instance)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.report: SessionReport | None = None

    # -- the caller's side ---------------------------------------------------------------
    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> float:
        """Seconds since the session started (the clock of its report)."""
        return time.monotonic() - self._t0

    def start(self) -> None:
        """Start the first epoch's workers; returns once they run (raises if they cannot)."""
        self._thread = threading.Thread(target=self._supervise, name="session", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        if self._broken is not None:
            raise PeerError(self._broken)

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices of the current plan."""
        return self._epoch.prep.names

    @property
    def plan(self) -> Plan:
        return self._epoch.plan

    @property
    def instance(self) -> Any:
        """The instance the current plan is priced on (after a fail-over: the survivors')."""
        return self._epoch.prep.instance

    @property
    def window(self) -> int:
        """Requests the source keeps in flight (the schedule's closed-loop window)."""
        return self._epoch.window

    @property
    def check_threads(self) -> int:
        """The workers' intra-op thread count (check outputs with it: same float sums)."""
        return self._epoch.prep.check_threads

    def submit(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> Future[list[torch.Tensor]]:
        """Queue one request (the model's inputs, batch dimension = ``microbatch``); its future
        resolves with the outputs, in submission order."""
        from safetensors.torch import save

        xs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        contract = self._epoch.prep.contracts[0]
        if len(xs) != len(contract):
            raise InputError(f"the model takes {len(contract)} inputs, got {len(xs)}")
        for j, (t, m) in enumerate(zip(xs, contract, strict=True)):
            m.check(t, f"input {j}")
        if self._closing.is_set():
            raise InputError("the session is closed")
        fut: Future[list[torch.Tensor]] = Future()
        if self._broken is not None:
            fut.set_exception(PeerError(self._broken))
            return fut
        blob = save({f"t{j}": t.contiguous() for j, t in enumerate(xs)})
        with self._lock:
            rid = next(self._ids)
            self._pending[rid] = _Request(rid, blob, fut, self.now())
            self._epoch.to_send.append(rid)
        return fut

    def inject(self, kind: str, device: str) -> None:
        """Fault injection (tests, benchmarks): ``kill`` (SIGKILL) or ``stop`` (SIGSTOP) the
        worker of ``device`` in the current epoch; the session records when."""
        sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}.get(kind)
        if sig is None:
            raise InputError(f"fault must be kill or stop, got {kind!r}")
        proc = self._epoch.procs.get(device)
        if proc is None:
            raise InputError(
                f"device {device!r} runs no worker now (current: {', '.join(self.devices)})"
            )
        self._faults.setdefault(device, self.now())
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    def close(self, timeout_s: float | None = None) -> SessionReport:
        """Finish every submitted request, stop the workers and return the report. Requests
        that cannot finish (no device left, or ``timeout_s`` passed) are failed and counted
        as lost."""
        if self.report is not None:
            return self.report
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            open_requests = list(self._pending.values())
            self._pending.clear()
        for req in open_requests:
            self._lost += 1
            if not req.future.done():
                req.future.set_exception(
                    PeerError(self._broken or f"request {req.rid} did not complete")
                )
        if self._thread is not None and self._thread.is_alive():
            self._epoch.stop(kill=True)
        if self.report is None:
            self.report = self._make_report([], {})
        return self.report

    # -- the supervisor's side -----------------------------------------------------------
    def _new_epoch(
        self, number: int, plan: Plan, instance: Any, failed: Sequence[str] = ()
    ) -> _Epoch:
        from ..schedule.scheduler import schedule as make_schedule

        sched = make_schedule(plan, instance, CYCLE, self.microbatch) if instance else None
        prep = prepare_run(
            self.model_spec, self.cluster, plan, requests=CYCLE * self.microbatch,
            microbatch=self.microbatch, input_shape=self.input_shape, instance=instance,
            schedule=sched, partition=self.partition, max_pieces=self.max_pieces,  # type: ignore[arg-type]
            depth=self.depth, timeout_s=self.timeout_s, use_cgroup=self.use_cgroup,
            local_cpus=len(os.sched_getaffinity(0)), stream=True, epoch=number,
            alive=[d for d in self.cluster.device_names if d not in failed],
        )  # fmt: skip
        return _Epoch(number, plan, prep, prep.schedule.window or 1)

    def _supervise(self) -> None:
        ep: _Epoch | None = self._epoch
        try:
            if not self.netns:  # namespaced workers are spawned into their namespace
                self._zygote = Zygote(self.token)
            ep = self._start_epoch(ep)
        except BaseException as exc:
            self._start_error = exc
        finally:
            self._started.set()
        try:
            while ep is not None and self._start_error is None:
                try:
                    self._drive(ep)
                    ep.stop(kill=False)
                    return
                except _EpochFailed as failure:
                    ep = self._recover(ep, failure)
        finally:
            if self._zygote is not None:
                self._zygote.close()

    def _start_epoch(self, ep: _Epoch) -> _Epoch | None:
        """Start the first epoch; a device that fails while it starts is failed over like one
        that fails later (``None``: the session is broken, every request fails)."""
        try:
            ep.start(self.token, self.timeout_s, self.netns, self.say, self._zygote)
            return ep
        except PeerError as exc:
            ep.stop(kill=True)
            if self.replan is None or exc.device not in ep.prep.names:
                raise
            return self._recover(ep, _EpochFailed({exc.device: str(exc)}, self.now()))
        except BaseException:
            ep.stop(kill=True)
            raise

    def _prepare_contingencies(self, ep: _Epoch) -> None:
        """Plan and prepare, in the background as the epoch starts, the epoch that would follow
        the loss of each device of ``ep`` (planning plus preparing costs ~0.3 s for ResNet-18 —
        a sixth of the recovery budget — and needs nothing the failure tells us but which
        device it was)."""
        if self.replan is None:
            return
        with self._contingency_lock:
            self._contingency = {}
        devices = tuple(ep.prep.names)
        failed = tuple(self._failed)

        def work() -> None:
            for d in devices:
                if self._closing.is_set() or self._epoch is not ep:
                    return
                alive = tuple(x for x in self.cluster.device_names if x not in failed and x != d)
                try:
                    assert self.replan is not None
                    plan, instance = self.replan(alive)
                    nxt = self._new_epoch(ep.number + 1, plan, instance, (*failed, d))
                except Exception:
                    continue  # planned again (and reported) if that failure happens
                with self._contingency_lock:
                    if self._epoch is ep:
                        self._contingency[d] = (plan, nxt)

        threading.Thread(target=work, name="contingency", daemon=True).start()

    def _drive(self, ep: _Epoch) -> None:
        """Run one epoch until the session closes (returns) or a worker fails (raises)."""
        from safetensors.torch import load

        assert ep.events is not None
        peers = ep.peers
        stopped_since: dict[str, float] = {}
        suspects: dict[str, str] = {}
        first: list[float] = []
        phase = "setup"
        ended = False
        progress = time.monotonic()

        def note(device: str, what: str) -> None:
            if device not in suspects or (sv.is_death(what) and not sv.is_death(suspects[device])):
                suspects[device] = what
            elif sv.is_conclusive(what) and suspects[device] == "control channel lost":
                suspects[device] = what  # the process behind the lost channel is gone: conclusive
            if not first:
                first.append(self.now())

        for p in peers.values():
            p.last_seen = time.time()
        deadline = time.monotonic() + self.timeout_s
        while True:
            now = time.monotonic()
            # a dead or stopped process is conclusive: act at once; other signs (errors, a lost
            # channel) wait a moment for the evidence that names the device at fault
            if first and (
                self.now() - first[0] >= FAILOVER_GRACE_S
                or any(sv.is_conclusive(w) for w in suspects.values())
            ):
                raise _EpochFailed(suspects, first[0])
            if not first and phase == "setup" and now > deadline:
                slow = [d for d, p in peers.items() if p.ready is None]
                note(slow[0] if slow else next(iter(peers)), "not ready within the timeout")
            if phase == "run" and not first:
                self._feed(ep)
                flying = ep.sent - ep.received
                if flying and now - progress > self.timeout_s:
                    note(ep.source, f"no result for {self.timeout_s:.0f} s")
                elif not flying:
                    progress = now
                if not ended and self._closing.is_set() and not ep.to_send and not flying:
                    with self._lock:
                        idle = not ep.to_send
                    if idle:
                        for p in peers.values():
                            p.chan.send(encode(End(ep.sent)))
                        ended = True
                if ended and all(p.done for p in peers.values()):
                    for p in peers.values():
                        with contextlib.suppress(PeerError):
                            p.chan.send(encode(Bye()))
                    reports = sv.collect_reports(peers)
                    self.report = self._make_report(reports.trace, reports.emulation)
                    return
            sv.check_health(peers, stopped_since, time.time(), note)
            try:
                dev, msg, blobs = ep.events.get(timeout=0.02)
            except queue.Empty:
                continue
            peer = peers[dev]
            if isinstance(msg, Ready):
                peer.ready = msg
                if phase == "setup" and all(p.ready for p in peers.values()):
                    for p in peers.values():
                        p.chan.send(encode(Go()))
                    phase = "run"
                    self._resumed(ep)
                    self._prepare_contingencies(ep)
            elif isinstance(msg, Result):
                if msg.epoch != ep.number:
                    continue  # a result of an ended epoch: its request was re-run
                try:
                    outs = load(blobs[0])
                    rid = ep.wire.pop(msg.message)
                    tensors = [outs[f"t{j}"] for j in range(len(outs))]
                except Exception as exc:
                    note(dev, f"sent a malformed result for message {msg.message}: {exc}"[:200])
                    continue
                ep.received += 1
                progress = time.monotonic()
                self._complete(rid, tensors)
            elif isinstance(msg, Done):
                peer.done = msg
            elif isinstance(msg, Error):
                note(dev, msg.message)
            elif isinstance(msg, tuple) and peer.done is None:
                note(dev, "control channel lost")
            elif isinstance(msg, Heartbeat):
                pass

    def _feed(self, ep: _Epoch) -> None:
        """Forward submissions to the source, at most ``FEED_AHEAD`` windows ahead."""
        while ep.sent - ep.received < FEED_AHEAD * ep.window:
            with self._lock:
                if not ep.to_send:
                    return
                rid = ep.to_send.popleft()
                req = self._pending.get(rid)
            if req is None:
                continue
            ep.wire[ep.sent] = rid
            ep.feed.put((ep.sent, req.blob))
            ep.sent += 1

    def _complete(self, rid: int, outputs: list[torch.Tensor]) -> None:
        with self._lock:
            req = self._pending.pop(rid, None)
        if req is None:
            self._duplicated += 1  # already completed: dropped, never delivered twice
            return
        done = self.now()
        self._submit_s.append(req.submit_s)
        self._done_s.append(done)
        if self._recoveries and self._recoveries[-1].first_result_s is None:
            last = self._recoveries[-1]
            self._recoveries[-1] = _with(last, first_result_s=done)
        req.future.set_result(outputs)

    def _resumed(self, ep: _Epoch) -> None:
        if self._recoveries and self._recoveries[-1].epoch == ep.number:
            self._recoveries[-1] = _with(self._recoveries[-1], resumed_s=self.now())

    def _recover(self, ep: _Epoch, failure: _EpochFailed) -> _Epoch | None:
        """End the failed epoch and start the next over the surviving devices, re-submitting
        every unfinished request; ``None`` when that is impossible (the session is broken)."""
        ep.stop(kill=True)
        ranked = sorted(failure.suspects, key=lambda d: -sv.evidence_rank(failure.suspects[d]))
        device = ranked[0]
        reason = failure.suspects[device]
        self.say(f"epoch {ep.number}: device {device} failed ({reason})")
        while True:
            self._failed.append(device)
            alive = tuple(d for d in self.cluster.device_names if d not in self._failed)
            why = None
            if self.replan is None:
                why = "no fail-over (no replan)"
            elif len(self._recoveries) >= MAX_RECOVERIES or not alive:
                why = "no device left to fail over to"
            with self._contingency_lock:
                ready = (
                    self._contingency.pop(device, None)
                    if len(self._failed) == len(set(self._failed))
                    else None
                )
                self._contingency = {}
            if why is None and ready is not None and ready[1].number == ep.number + 1:
                nxt = ready[1]
            elif why is None:
                assert self.replan is not None
                try:
                    plan, instance = self.replan(alive)
                    nxt = self._new_epoch(ep.number + 1, plan, instance, self._failed)
                except Exception as exc:
                    why = f"re-planning over {', '.join(alive)} failed: {exc}"
            if why is not None:
                self._broken = f"device {device}: {reason}; {why}"
                self._fail_open()
                return None
            with self._lock:
                nxt.to_send = deque(sorted(self._pending))
                rerun = len(nxt.to_send)
                self._epoch = nxt
            self._recoveries.append(
                Recovery(
                    device,
                    reason,
                    nxt.number,
                    failure.first_s,
                    -1.0,
                    None,
                    rerun,
                    tuple(nxt.prep.names),
                    self._faults.get(device),
                )
            )
            try:
                nxt.start(self.token, self.timeout_s, self.netns, self.say, self._zygote)
                return nxt
            except PeerError as exc:  # a device failed while the new epoch started
                nxt.stop(kill=True)
                device = exc.device or nxt.source
                reason = str(exc)
                ep = nxt

    def _fail_open(self) -> None:
        with self._lock:
            open_requests = list(self._pending.values())
            self._pending.clear()
        for req in open_requests:
            self._lost += 1
            req.future.set_exception(PeerError(self._broken or "session failed"))

    def _make_report(self, trace: list[dict[str, Any]], emu: dict[str, Any]) -> SessionReport:
        with self._lock:
            submitted = next(self._ids)
            self._ids = itertools.count(submitted)
        return SessionReport(
            submitted=submitted,
            completed=len(self._done_s),
            lost=self._lost,
            duplicated=self._duplicated,
            microbatch=self.microbatch,
            recoveries=tuple(self._recoveries),
            submit_s=tuple(self._submit_s),
            done_s=tuple(self._done_s),
            plan=self._epoch.plan.to_dict(),
            trace=trace,
            emulation=emu,
            error=self._broken,
        )


def _with(rec: Recovery, **changes: Any) -> Recovery:
    from dataclasses import replace

    return replace(rec, **changes)


__all__ = ["CYCLE", "Recovery", "Session", "SessionReport"]
