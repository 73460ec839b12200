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

Hand-over. :meth:`Session.switch` (and :meth:`Session.admit`, which re-plans with a device
taken back in) moves the stream to another plan without stopping it and without re-running
anything: the new epoch's workers start beside the running ones; once all are ready, requests
not yet fed go to the new epoch, and the old one finishes what it holds, then leaves.

The runtime does not plan: ``replan(alive_devices)`` comes from the caller (the CLI passes the
planner it was asked to use), returning the new plan and the instance it was made for.

Why one module: the caller's side (submit, inject, admit, close) and the three ways an epoch
ends (close, fail-over, hand-over) all read and move the same state under one lock — the open
requests, which epoch is current, what each epoch was fed — and each transition must leave it
consistent for the others; the mechanics of one epoch's workers are in :mod:`.epoch`, the
report's types in :mod:`.session_report`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import secrets
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..core.adapt import Replan as ReplanRecord
from ..core.online import OnlineEstimate
from ..core.plans import Plan
from ..errors import InputError, PeerError
from . import supervision as sv
from .control import check_token
from .epoch import Epoch, EpochFailed, await_ready, warm_cache
from .interrupts import shielded
from .prepare import prepare_run
from .protocol import Done, End, Error, Go, Heartbeat, Ready, Result, Stats, encode
from .session_report import Handover, Recovery, SessionReport
from .stages import decode_tensors, encode_tensors
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
# Telemetry records kept in memory (the newest; a file gets all of them).
TELEMETRY_KEEP = 10_000
# Epochs a session may start after failures before it gives up (each drops a device).
MAX_RECOVERIES = 8
# Priority of the thread that prepares contingencies after a fail-over: measured, at normal
# priority its ~0.4 s of CPU per device came out of the recovered pipeline's first seconds.
CONTINGENCY_NICE = 10
# A session's worker stopped (SIGSTOP) this long has failed: half a run's grace, because here
# the stream is waiting for it (a fixed run only has to name it).
SESSION_STOPPED_GRACE_S = 0.5

Replan = Callable[[tuple[str, ...]], tuple[Plan, Any]]


@dataclass
class _Request:
    rid: int
    blob: bytes  # the inputs as safetensors, encoded once (re-runs send the same bytes)
    future: Future[list[torch.Tensor]]
    submit_s: float


# A worker whose setup could not be sent may be dying: how long to wait for its exit status.
DEATH_WAIT_S = 0.5


def _death_of(proc: Any, reason: str) -> str:
    """``reason``, or the stronger evidence of ``proc``'s death if it ends within
    :data:`DEATH_WAIT_S`: a lost channel alone only restarts the same plan, a dead worker is
    failed over (measured: under load the channel breaks before the exit is reaped)."""
    deadline = time.monotonic() + DEATH_WAIT_S
    while proc is not None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc is None or proc.poll() is None:
        return reason
    return sv.exit_evidence(proc.returncode)


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
    parameter_cache
        Keep every running epoch's stages built in the zygote, so a later epoch with the same
        stages (a scaled replica) forks them ready (:mod:`.zygote`). Off by default: warming
        costs the zygote ~0.2 s of CPU per stage, which a fail-over's forks would queue behind.
    telemetry_path
        Append every worker's telemetry (every half second) here as JSON lines (compute times,
        utilisation, per-link bytes and achieved bandwidth); also kept in :attr:`telemetry`.
    probe_s
        Every this many seconds each worker probes the emulated links it sends (almost)
        nothing over (0 = never), so the telemetry — and a controller re-planning on it —
        also sees links the plan does not use: whether a link it left has recovered, or one it
        would route through has degraded too (:meth:`~.transport.Transport.probe`).

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
        telemetry_path: str | None = None,
        log: Callable[[str], None] | None = None,
        parameter_cache: bool = False,
        probe_s: float = 0.0,
    ):
        if not (probe_s >= 0 and math.isfinite(probe_s)):
            raise InputError(
                f"probe interval must be a finite number of seconds >= 0, got {probe_s!r}"
            )
        self.probe_s = probe_s
        self.model_spec = model_spec
        self.parameter_cache = parameter_cache
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
        self._telemetry: deque[dict[str, Any]] = deque(maxlen=TELEMETRY_KEEP)
        self._telemetry_file = open(telemetry_path, "a") if telemetry_path else None  # noqa: SIM115
        self._priced: dict[int, tuple[Plan, Any]] = {}
        self._estimates: dict[int, OnlineEstimate] = {}  # per epoch, fed by its telemetry
        # the next epoch for each device that may fail, planned and prepared ahead (see
        # _prepare_contingencies): a fail-over then starts workers at once
        self._contingency: dict[str, tuple[Epoch, Epoch]] = {}
        self._contingency_lock = threading.Lock()
        self.say: Callable[[str], None] = log or (lambda _m: None)
        self.token = getattr(cluster, "token", None) or secrets.token_hex(32)
        check_token(self.token, f"{getattr(cluster, 'origin', 'cluster')}: field 'token'")
        self._lock = threading.Lock()
        self._pending: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._closing = threading.Event()
        self._aborting = threading.Event()
        self._broken: str | None = None
        self._failed: list[str] = []
        self._recoveries: list[Recovery] = []
        self._handovers: list[Handover] = []
        self._handover_q: queue.Queue[tuple[Plan, Any, str, float, int]] = queue.Queue()
        self._successor: tuple[threading.Thread, list[Any], str, float, int] | None = None
        self._replans: list[ReplanRecord] = []
        self._numbers = itertools.count(1)  # epoch numbers after the first
        self._running: set[int] = set()  # successor epochs started (Go sent) before their drive
        self._faults: dict[str, float] = {}  # device -> injected at (session clock)
        # per completed request, 16 bytes (an endless stream's only per-request memory)
        self._submit_s = array("d")
        self._done_s = array("d")
        self._duplicated = 0
        self._lost = 0
        self._t0 = time.monotonic()
        self._origin_unix = time.time()  # bandwidth traces' time 0, for every epoch
        self._epoch = self._new_epoch(0, plan, instance)
        self._draining: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.report: SessionReport | None = None

    # -- the caller's side ---------------------------------------------------------------
    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # Ctrl-C, SIGTERM or an error in the caller's block: stop now, clean up
            self.abort()

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
        blob = encode_tensors(xs)
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

    def switch(
        self,
        plan: Plan,
        instance: Any = None,
        reason: str = "switch",
        replan: ReplanRecord | None = None,
    ) -> None:
        """Move the stream to ``plan`` without stopping it and without re-running anything
        (see the module docstring); returns at once, the hand-over is in the report (and
        ``replan``, a live re-plan's record, in its ``replans`` with the epoch that took over)."""
        index = -1
        if replan is not None:
            with self._lock:
                self._replans.append(replan)
                index = len(self._replans) - 1
        self._handover_q.put((plan, instance, reason, self.now(), index))

    @property
    def source(self) -> str:
        """The device that feeds the current plan (after a fail-over of the source: another)."""
        return self._epoch.source

    @property
    def epoch(self) -> int:
        """The current epoch's number (telemetry records carry it)."""
        return self._epoch.number

    @property
    def cache_info(self) -> dict[str, int]:
        """Stages (and their weight bytes) the zygote holds for later epochs' forks."""
        z = self._zygote
        return (
            {"stages": len(z.cached), "bytes": z.cached_bytes} if z else {"stages": 0, "bytes": 0}
        )

    @property
    def handovers(self) -> tuple[Handover, ...]:
        """The hand-overs so far (asked, taken over, drained), as the report will list them."""
        return tuple(self._handovers)

    @property
    def switching(self) -> bool:
        """A hand-over is asked for or under way (its successor starting)."""
        return self._successor is not None or not self._handover_q.empty()

    @property
    def alive(self) -> tuple[str, ...]:
        """The cluster's devices not known to have failed."""
        return tuple(d for d in self.cluster.device_names if d not in self._failed)

    def measured(self) -> tuple[int, Any, dict[Any, float], dict[str, float]] | None:
        """The current epoch's measurements so far: ``(epoch, the instance it is priced on,
        link bandwidths in bytes/s by (src, dst), device scales measured/priced)``; ``None``
        before its first telemetry."""
        ep = self._epoch
        est = self._estimates.get(ep.number)
        if est is None:
            return None
        return ep.number, ep.prep.instance, dict(est.link_Bps), dict(est.device_scale)

    def admit(self, device: str) -> None:
        """Take ``device`` (back) into the session: re-plan over the live devices and it, and
        switch to that plan."""
        if device not in self.cluster.device_names:
            raise InputError(
                f"unknown device {device!r} (devices: {', '.join(self.cluster.device_names)})"
            )
        if self.replan is None:
            raise InputError("admitting a device needs a replan function")
        self._failed = [d for d in self._failed if d != device]
        alive = tuple(d for d in self.cluster.device_names if d not in self._failed)
        plan, instance = self.replan(alive)
        self.switch(plan, instance, reason=f"admit {device}")

    def abort(self) -> SessionReport:
        """Stop at once: kill the workers, fail every open request (counted as lost), clean
        up (signals are held meanwhile, so a second Ctrl-C cannot cut the clean-up short)."""
        with shielded():
            self._aborting.set()
            return self.close(timeout_s=10.0)

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
    ) -> Epoch:
        from ..schedule.scheduler import schedule as make_schedule

        sched = make_schedule(plan, instance, CYCLE, self.microbatch) if instance else None
        prep = prepare_run(
            self.model_spec, self.cluster, plan, requests=CYCLE * self.microbatch,
            microbatch=self.microbatch, input_shape=self.input_shape, instance=instance,
            schedule=sched, partition=self.partition, max_pieces=self.max_pieces,  # type: ignore[arg-type]
            depth=self.depth, timeout_s=self.timeout_s, use_cgroup=self.use_cgroup,
            local_cpus=len(os.sched_getaffinity(0)), stream=True, epoch=number,
            alive=[d for d in self.cluster.device_names if d not in failed],
            probe_s=self.probe_s,
        )  # fmt: skip
        self._priced[number] = (plan, prep.instance)
        return Epoch(number, plan, prep, prep.schedule.window or 1, self._origin_unix)

    def priced(self, epoch: int) -> tuple[Plan, Any]:
        """The plan epoch ``epoch`` ran and the instance it is priced on (a report's
        recoveries and hand-overs name their epoch)."""
        return self._priced[epoch]

    def _supervise(self) -> None:
        ep: Epoch | None = self._epoch
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
                    nxt = self._drive(ep, ready=ep.number in self._running)
                except EpochFailed as failure:
                    ep = self._recover(ep, failure)
                    continue
                if nxt is None:
                    ep.stop(kill=False)
                    return
                ep = nxt  # handed over; the old epoch drains on its own thread
        finally:
            for t in self._draining:
                t.join(self.timeout_s)
            if self._zygote is not None:
                self._zygote.close()
            if self._telemetry_file is not None:
                self._telemetry_file.close()

    def _start_epoch(self, ep: Epoch) -> Epoch | None:
        """Start the first epoch; a device that fails while it starts is failed over like one
        that fails later (``None``: the session is broken, every request fails)."""
        try:
            ep.start(self.token, self.timeout_s, self.netns, self.say, self._zygote)
            return ep
        except PeerError as exc:
            why = _death_of(ep.procs.get(exc.device or ""), str(exc))
            ep.stop(kill=True)
            if self.replan is None or exc.device not in ep.prep.names:
                raise
            return self._recover(ep, EpochFailed({exc.device: why}, self.now()))
        except BaseException:
            ep.stop(kill=True)
            raise

    def _prepare_contingencies(self, ep: Epoch) -> None:
        """In the background as the epoch starts: cache its stages in the zygote (a later epoch
        with the same stages — a scaled replica — forks them ready), then plan and prepare the
        epoch that would follow the loss of each device of ``ep`` (planning plus preparing costs
        ~0.3 s for ResNet-18 — a sixth of the recovery budget — and needs nothing the failure
        tells us but which device it was)."""
        with self._contingency_lock:
            self._contingency = {}
        devices = tuple(ep.prep.names)
        failed = tuple(self._failed)

        def work() -> None:
            if ep.number > 0:  # after a fail-over: the new pipeline's first seconds come first
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONTINGENCY_NICE)
            if self.parameter_cache and self._zygote is not None and not self.netns:
                warm_cache(ep.prep, self._zygote)  # later epochs with these stages fork them
            if self.replan is None:
                return
            for d in devices:
                if self._closing.is_set() or self._epoch is not ep:
                    return
                alive = tuple(x for x in self.cluster.device_names if x not in failed and x != d)
                try:
                    assert self.replan is not None
                    plan, instance = self.replan(alive)
                    nxt = self._new_epoch(next(self._numbers), plan, instance, (*failed, d))
                except Exception:
                    continue  # planned again (and reported) if that failure happens
                with self._contingency_lock:
                    if self._epoch is ep:
                        self._contingency[d] = (ep, nxt)

        threading.Thread(target=work, name="contingency", daemon=True).start()

    def _drive(self, ep: Epoch, ready: bool = False) -> Epoch | None:
        """Run one epoch until the session closes (``None``), hands over to a successor (which
        is returned; ``ready``: it runs already), or a worker fails (raises)."""
        assert ep.events is not None
        peers = ep.peers
        stopped_since: dict[str, float] = {}
        suspects: dict[str, str] = {}
        first: list[float] = []
        phase = "run" if ready else "setup"
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
            if self._aborting.is_set():
                ep.stop(kill=True)
                return None
            now = time.monotonic()
            # a dead or stopped process is conclusive: act at once; other signs (errors, a lost
            # channel) wait a moment for the evidence that names the device at fault
            if first and (
                self.now() - first[0] >= FAILOVER_GRACE_S
                or any(sv.is_conclusive(w) for w in suspects.values())
            ):
                raise EpochFailed(suspects, first[0])
            if not first and phase == "setup" and now > deadline:
                slow = [d for d, p in peers.items() if p.ready is None]
                note(slow[0] if slow else next(iter(peers)), "not ready within the timeout")
            if phase == "run" and not first and not ended:
                successor = self._handover_step(ep)
                if successor is not None:
                    return successor
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
                    sv.say_bye(peers)
                    reports = sv.collect_reports(peers)
                    self.report = self._make_report(reports.trace, reports.emulation)
                    return None
            sv.check_health(peers, stopped_since, time.time(), note, SESSION_STOPPED_GRACE_S)
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
                    tensors = decode_tensors(blobs[0])
                    rid = ep.wire.pop(msg.message)
                except Exception as exc:
                    note(dev, f"sent a malformed result for message {msg.message}: {exc}"[:200])
                    continue
                ep.received += 1
                progress = time.monotonic()
                self._complete(rid, tensors)
            elif isinstance(msg, Stats):
                self._record_stats(ep, dev, msg)
            elif isinstance(msg, Done):
                peer.done = msg
            elif isinstance(msg, Error):
                note(dev, msg.message)
            elif isinstance(msg, tuple) and peer.done is None:
                note(dev, "control channel lost")
            elif isinstance(msg, Heartbeat):
                pass

    def _handover_step(self, ep: Epoch) -> Epoch | None:
        """Start a requested successor in the background; once it runs, hand the stream over
        to it (returned) and let ``ep`` drain on a thread of its own."""
        if self._successor is None:
            if self._handover_q.empty() or self._closing.is_set():
                return None
            plan, instance, reason, asked, note = self._handover_q.get()
            box: list[Any] = []

            def start() -> None:
                try:
                    nxt = self._new_epoch(next(self._numbers), plan, instance, self._failed)
                    nxt.start(self.token, self.timeout_s, self.netns, self.say, self._zygote)
                    box.append(nxt)
                    await_ready(nxt, self.timeout_s)
                except BaseException as exc:
                    if box:
                        box[0].stop(kill=True)
                    box[:] = [exc]

            t = threading.Thread(target=start, name="successor", daemon=True)
            t.start()
            self._successor = (t, box, reason, asked, note)
            return None
        t, box, reason, asked, note = self._successor
        if t.is_alive():
            return None
        self._successor = None
        if not box or isinstance(box[0], BaseException):
            why = str(box[0]) if box else "did not start"
            self.say(f"hand-over ({reason}) failed: {why}")
            self._handovers.append(Handover(reason, -1, asked, None, None, (), why))
            return None
        nxt: Epoch = box[0]
        with self._lock:
            nxt.to_send = ep.to_send  # not yet fed: the new epoch takes them, in order
            ep.to_send = deque()
            self._epoch = nxt
            if note >= 0:
                self._replans[note] = replace(self._replans[note], epoch=nxt.number)
        self._running.add(nxt.number)
        for p in ep.peers.values():
            p.chan.send(encode(End(ep.sent)))
        index = len(self._handovers)
        self._handovers.append(
            Handover(reason, nxt.number, asked, self.now(), None, tuple(nxt.prep.names))
        )
        self.say(f"epoch {nxt.number} takes over ({reason}); epoch {ep.number} drains")
        drain = threading.Thread(target=self._drain, args=(ep, index), daemon=True)
        self._draining.append(drain)
        drain.start()
        self._prepare_contingencies(nxt)
        return nxt

    def _drain(self, ep: Epoch, index: int) -> None:
        """Let a handed-over epoch finish its requests, then end it; if it fails meanwhile,
        its unfinished requests go to the current epoch (first in line)."""
        assert ep.events is not None
        deadline = time.monotonic() + self.timeout_s
        stopped_since: dict[str, float] = {}
        trouble: dict[str, str] = {}
        while not all(p.done for p in ep.peers.values()):
            if self._aborting.is_set():
                ep.stop(kill=True)
                return
            sv.check_health(ep.peers, stopped_since, time.time(), trouble.setdefault)
            if trouble or time.monotonic() > deadline:
                ep.stop(kill=True)
                rids = [ep.wire[m] for m in sorted(ep.wire)]
                with self._lock:
                    self._epoch.to_send.extendleft(reversed(rids))
                self.say(f"epoch {ep.number} failed while draining; {len(rids)} requests moved")
                return
            try:
                dev, msg, blobs = ep.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(msg, Result) and msg.epoch == ep.number and msg.message in ep.wire:
                self._complete(ep.wire.pop(msg.message), decode_tensors(blobs[0]))
                ep.received += 1
            elif isinstance(msg, Done):
                ep.peers[dev].done = msg
            elif isinstance(msg, Error):
                trouble[dev] = msg.message
            elif isinstance(msg, tuple) and ep.peers[dev].done is None:
                trouble[dev] = "control channel lost"
        sv.say_bye(ep.peers)
        ep.stop(kill=False)
        self._handovers[index] = replace(self._handovers[index], drained_s=self.now())

    def _record_stats(self, ep: Epoch, device: str, st: Stats) -> None:
        """One worker's telemetry interval, as a JSON-ready record (kept, and written to the
        telemetry file as one line when the session has one)."""
        window = max(st.window_s, 1e-9)
        rec = {
            "t_s": self.now(),
            "epoch": ep.number,
            "device": device,
            "window_s": st.window_s,
            "computes": st.computes,
            "compute_ms": 1e3 * st.compute_busy_s / st.computes if st.computes else None,
            "utilisation": st.compute_busy_s / window,
            "queue": st.queue_s / window,
            "cpu_s": st.compute_cpu_s,
            "links": {
                peer: {
                    "transfers": n,
                    "bytes": nbytes,
                    "busy_s": busy,
                    "achieved_Bps": nbytes / busy if busy > 0 else None,
                }
                for peer, (n, nbytes, busy) in st.links.items()
            },
        }
        self._telemetry.append(rec)
        est = self._estimates.get(ep.number)
        if est is None and ep.prep.instance is not None:
            est = self._estimates[ep.number] = OnlineEstimate(ep.prep.instance, ep.plan.stages)
        if est is not None:
            est.observe(rec)
        if self._telemetry_file is not None:
            self._telemetry_file.write(json.dumps(rec) + "\n")
            self._telemetry_file.flush()

    def estimate(self) -> Any:
        """The current plan's instance corrected by the telemetry so far (an
        :class:`~coinfer.core.online.OnlineEstimate`'s ``current()``): what a re-planner should
        price with. The instance as given until the first report arrives."""
        ep = self._epoch
        est = self._estimates.get(ep.number)
        return est.current() if est is not None else ep.prep.instance

    @property
    def telemetry(self) -> list[dict[str, Any]]:
        """The most recent telemetry records (one per worker per half second; see ``Stats``)."""
        return list(self._telemetry)

    def _feed(self, ep: Epoch) -> None:
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
            self._recoveries[-1] = replace(last, first_result_s=done)
        req.future.set_result(outputs)

    def _resumed(self, ep: Epoch) -> None:
        if self._recoveries and self._recoveries[-1].epoch == ep.number:
            self._recoveries[-1] = replace(self._recoveries[-1], resumed_s=self.now())

    def _recover(self, ep: Epoch, failure: EpochFailed) -> Epoch | None:
        """End the failed epoch and start the next over the surviving devices, re-submitting
        every unfinished request; ``None`` when that is impossible (the session is broken)."""
        ep.stop(kill=True)
        ranked = sorted(failure.suspects, key=lambda d: -sv.evidence_rank(failure.suspects[d]))
        device = ranked[0]
        reason = failure.suspects[device]
        # no device is known to have failed (a stall, or only errors reported): start the same
        # plan again rather than drop a device at random (bounded by MAX_RECOVERIES)
        same = sv.evidence_rank(reason) == 0
        self.say(f"epoch {ep.number}: device {device} failed ({reason})")
        while True:
            nxt: Epoch | None = None
            ready: tuple[Epoch, Epoch] | None = None
            if not same:
                self._failed.append(device)
            alive = tuple(d for d in self.cluster.device_names if d not in self._failed)
            why = None
            if self.replan is None:
                why = "no fail-over (no replan)"
            elif len(self._recoveries) >= MAX_RECOVERIES or not alive:
                why = "no device left to fail over to"
            if same and why is None:
                plan_now, inst_now = ep.plan, ep.prep.instance
                same = False  # once: a failure while it restarts drops the device it names
                try:
                    nxt = self._new_epoch(next(self._numbers), plan_now, inst_now, self._failed)
                except Exception as exc:
                    why = f"restarting the plan failed: {exc}"
            else:
                with self._contingency_lock:
                    ready = (
                        self._contingency.pop(device, None)
                        if len(self._failed) == len(set(self._failed))
                        else None
                    )
                    self._contingency = {}
            if why is None and ready is not None and ready[0] is ep:
                nxt = ready[1]
            elif why is None and nxt is None:
                assert self.replan is not None
                try:
                    plan, instance = self.replan(alive)
                    nxt = self._new_epoch(next(self._numbers), plan, instance, self._failed)
                except Exception as exc:
                    why = f"re-planning over {', '.join(alive)} failed: {exc}"
            if why is not None:
                self._broken = f"device {device}: {reason}; {why}"
                self._fail_open()
                return None
            assert nxt is not None
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
            handovers=tuple(self._handovers),
            submit_s=tuple(self._submit_s),
            done_s=tuple(self._done_s),
            plan=self._epoch.plan.to_dict(),
            trace=trace,
            emulation=emu,
            error=self._broken,
            replans=tuple(self._replans),
        )


__all__ = ["CYCLE", "Handover", "Recovery", "Session", "SessionReport"]
