"""Watching the workers of a run: start, accept, read, heartbeat, blame, abort, reap.

The coordinator is not in the data plane; it owns one authenticated control channel per worker
and decides what a failure means. This module holds that machinery so the orchestrating
:func:`~.coordinator.run` reads as a sequence of steps:

- local processes are started and reaped by :mod:`.processes`;
- :func:`accept_workers` runs the HMAC handshake with one worker per device, rejecting strangers;
- :func:`supervise` drives a run — every worker ``Ready`` → ``Go`` → ``Result``s / ``Done`` —
  and turns any failure (a process that died, a lost channel, a missed heartbeat, an ``Error``,
  no progress within the timeout) into one :class:`PeerError` naming the device to blame and the
  requests that did not complete;
- :func:`send_setups` ships every setup in parallel, bounded; :func:`start_beats` heartbeats the
  workers from the coordinator; :func:`abort` ends the run's workers, in every case.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PeerError
from .control import HANDSHAKE_TIMEOUT_S, Channel, authenticate_worker
from .health import (
    HEARTBEAT_TIMEOUT_S,
    check_health,
    evidence_rank,
    exit_evidence,
    is_conclusive,
    is_death,
)
from .ledger import Ledger, format_ids
from .liveness import HEARTBEAT_S
from .processes import STOPPED_GRACE_S, process_stopped
from .protocol import Abort, Bye, Done, Error, Go, Heartbeat, Ready, Result, decode, encode
from .stages import decode_tensors

# After the first failure signal, wait this long to collect the others (a dying worker makes its
# peers report errors too; the grace period lets us name the one that died, not a bystander).
BLAME_GRACE_S = 1.0
# Seconds to wait for every worker to connect and authenticate (process start + torch import).
CONNECT_TIMEOUT_S = 120.0
Event = tuple[str, Any, list[bytes]]  # (device, decoded message or ("lost", reason), blobs)


@dataclass
class Peer:
    """Book-keeping for one connected worker (mutated only by the supervising thread)."""

    device: str
    chan: Channel
    last_seen: float = field(default_factory=time.time)
    ready: Ready | None = None
    done: Done | None = None
    clock_offset: float = 0.0  # coordinator clock - worker clock (see note_clock)
    proc: subprocess.Popen[bytes] | None = None
    clock_samples: int = 0

    def note_clock(self, received_s: float, sent_s: float) -> None:
        """One clock sample: a message stamped ``sent_s`` by the worker arrived at ``received_s``.

        ``received - sent`` is the clock offset plus the message's delay, which is never
        negative but can be tens of ms when the reader thread waits for a CPU; the smallest
        sample is the best estimate (as in NTP's minimum-delay filter). Every Ready and
        heartbeat is a sample, so the estimate tightens during the run; traces are moved onto
        the coordinator's clock only at the end, with the final estimate."""
        sample = received_s - sent_s
        self.clock_offset = sample if self.clock_samples == 0 else min(self.clock_offset, sample)
        self.clock_samples += 1


@dataclass(frozen=True)
class Reports:
    """What the workers reported, on the coordinator's clock."""

    trace: list[dict[str, Any]]
    busy_s: dict[str, float]
    arrivals: dict[tuple[str, str, int, int], float]  # (src, dst, request, stage) -> time
    emulation: dict[str, dict[str, Any]]


def accept_workers(
    server: socket.socket,
    token: str,
    devices: Sequence[str],
    deadline: float,
    procs: Mapping[str, subprocess.Popen[bytes]],
    beats: threading.Event | None = None,
) -> dict[str, Peer]:
    """Accept and authenticate one worker per device (rejecting strangers) before ``deadline``;
    each accepted worker is heartbeaten until ``beats`` is set (see :func:`start_beat`)."""
    peers: dict[str, Peer] = {}
    lock = threading.Lock()
    rejected: list[str] = []

    def handshake(conn: socket.socket, addr: Any) -> None:
        conn.settimeout(HANDSHAKE_TIMEOUT_S)  # a peer that stalls the handshake is dropped
        chan = Channel(conn, peer=f"{addr[0]}:{addr[1]}")
        try:
            dev = authenticate_worker(chan, token)
        except PeerError as exc:
            rejected.append(str(exc))
            chan.close()
            return
        with lock:
            if dev not in devices or dev in peers:
                rejected.append(f"unexpected or duplicate device {dev!r} from {addr[0]}")
                with contextlib.suppress(PeerError):
                    chan.send(encode(Error(f"device {dev!r} not expected in this run")))
                chan.close()
                return
            conn.settimeout(None)
            peers[dev] = Peer(dev, chan, proc=procs.get(dev))
            if beats is not None:
                start_beat(peers[dev], beats)

    server.settimeout(0.2)
    stopped_since: dict[str, float] = {}
    while True:
        with lock:
            if len(peers) == len(devices):
                return peers
        for d, p in procs.items():
            if d not in peers and p.poll() is None and process_stopped(p):
                since = stopped_since.setdefault(d, time.monotonic())
                if time.monotonic() - since >= STOPPED_GRACE_S:
                    raise PeerError(
                        f"worker for device {d} was stopped (SIGSTOP) before connecting", device=d
                    )
            else:
                stopped_since.pop(d, None)
            if p.poll() is not None and d not in peers:
                raise PeerError(
                    f"worker for device {d} exited with code {p.returncode} before connecting",
                    device=d,
                )
        if time.time() > deadline:
            missing = sorted(set(devices) - set(peers))
            extra = f" (rejected: {'; '.join(rejected[:3])})" if rejected else ""
            raise PeerError(
                f"devices {', '.join(missing)} did not connect in time{extra}", device=missing[0]
            )
        try:
            conn, addr = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=handshake, args=(conn, addr), daemon=True).start()


def limit_result_attachments(peers: Mapping[str, Peer], output_bytes: int) -> None:
    """Workers send no setups or submissions, and a result carries one micro-batch's outputs:
    refuse anything bigger before allocating it."""
    for p in peers.values():
        p.chan.limit_attachments("setup", 0)
        p.chan.limit_attachments("submit", 0)
        p.chan.limit_attachments("result", output_bytes + RESULT_SLACK_BYTES)


# What a safetensors blob adds to its tensors' bytes (its JSON header), at most.
RESULT_SLACK_BYTES = 64 * 1024


def start_beat(peer: Peer, stop: threading.Event) -> None:
    """Heartbeat one worker from the coordinator (a thread per worker, so a stopped one blocks
    only its own beat) until ``stop`` is set or its channel fails: a worker that hears nothing
    for :data:`~coinfer.runtime.liveness.COORDINATOR_SILENCE_S` exits, so a stopped or lost
    coordinator never leaves workers behind. Started as soon as the worker is accepted (it may
    wait for the others to connect)."""

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                peer.chan.send(encode(Heartbeat(time.time())))
            except PeerError:
                return

    threading.Thread(target=beat, name=f"beat->{peer.device}", daemon=True).start()


def start_readers(peers: Mapping[str, Peer]) -> queue.Queue[Event]:
    """One thread per worker turning its control messages into events on one queue."""
    events: queue.Queue[Event] = queue.Queue()

    def read(peer: Peer) -> None:
        while True:
            try:
                raw, blobs = peer.chan.recv()
                msg = decode(raw, peer=f"device {peer.device}")
            except PeerError as exc:
                events.put((peer.device, ("lost", str(exc)), []))
                return
            peer.last_seen = time.time()
            if isinstance(msg, Ready):
                peer.note_clock(peer.last_seen, msg.tw)
            elif isinstance(msg, Heartbeat):
                peer.note_clock(peer.last_seen, msg.t)
            events.put((peer.device, msg, blobs))

    for p in peers.values():
        threading.Thread(target=read, args=(p,), daemon=True).start()
    return events


def supervise(
    peers: dict[str, Peer],
    events: queue.Queue[Event],
    ledger: Ledger,
    timeout_s: float,
    say: Callable[[str], None],
    on_result: Callable[[int, int], None] | None = None,
) -> Reports:
    """Drive the run: ready -> go -> results/done; any failure -> PeerError with the open requests.

    ``timeout_s`` bounds a *stall*: it restarts at every completed request, so a long run is
    never cut short while it makes progress. ``on_result(message, completed)`` is called as each
    micro-batch's output arrives (progress display, or acting at a known point of a run).
    """
    deadline = time.time() + timeout_s
    phase = "setup"
    for p in peers.values():  # every worker has its setup now and beats from here on
        p.last_seen = time.time()
    stopped_since: dict[str, float] = {}
    suspects: dict[str, str] = {}  # device -> what we saw (process exit / lost channel / error)
    first_failure_at: float | None = None
    result_peer: Peer | None = None  # the worker that returns results (the source)

    def note(device: str, what: str) -> None:
        nonlocal first_failure_at
        suspects.setdefault(device, what)
        if first_failure_at is None:
            first_failure_at = time.time()

    while True:
        now = time.time()
        if first_failure_at is not None and now - first_failure_at >= BLAME_GRACE_S:
            break
        if (
            first_failure_at is None
            and phase == "run"
            and ledger.all_done
            and all(p.done for p in peers.values())
        ):
            break
        if first_failure_at is None and now > deadline:
            waiting = "ready" if phase == "setup" else "done"
            slow = [d for d, p in peers.items() if getattr(p, waiting) is None]
            note(
                slow[0] if slow else next(iter(peers)),
                f"no progress within the {timeout_s:.0f} s timeout",
            )
            break
        check_health(peers, stopped_since, now, note)
        try:
            dev, msg, blobs = events.get(timeout=0.05)
        except queue.Empty:
            continue
        peer = peers[dev]
        if isinstance(msg, Ready):
            peer.ready = msg
            if phase == "setup" and all(p.ready for p in peers.values()):
                for p in peers.values():
                    p.chan.send(encode(Go()))
                phase = "run"
                deadline = time.time() + timeout_s
                say("all workers ready; running")
        elif isinstance(msg, Result):
            try:  # a result the ledger cannot take (unknown, duplicate, unreadable) is the peer's fault
                ledger.complete(msg.message, msg.t_release, msg.t_done, decode_tensors(blobs[0]))
            except Exception as exc:
                note(dev, f"sent a malformed result for message {msg.message}: {str(exc)[:120]}")
                continue
            result_peer = peer  # worker clock now; moved with its final offset below
            deadline = time.time() + timeout_s  # progress: the timeout bounds a *stall*
            if on_result is not None:
                on_result(msg.message, len(ledger.completions))
        elif isinstance(msg, Done):
            peer.done = msg
        elif isinstance(msg, Error):
            note(dev, msg.message)
        elif isinstance(msg, tuple) and peer.done is None:  # ("lost", reason)
            note(dev, "control channel lost")
        elif isinstance(msg, Heartbeat):
            pass  # last_seen was updated by the reader

    if result_peer is not None:
        ledger.shift_times(result_peer.clock_offset)
    if first_failure_at is not None:
        raise blame(suspects, ledger)
    say_bye(peers)
    return collect_reports(peers)


def say_bye(peers: Mapping[str, Peer]) -> None:
    """Let every worker of a finished run (or epoch) exit; one already gone is fine."""
    for p in peers.values():
        with contextlib.suppress(PeerError):
            p.chan.send(encode(Bye()))


def blame(suspects: Mapping[str, str], ledger: Ledger) -> PeerError:
    """The error for a failed run: the device that died or went silent if any, else the first
    that reported a problem; every open request is failed in the ledger and named."""
    dead = [d for d, w in suspects.items() if is_death(w)]
    dev = dead[0] if dead else next(iter(suspects))
    what = suspects[dev]
    ids = ledger.fail_open(f"device {dev}: {what}")
    return PeerError(
        f"device {dev}: {what}; requests {format_ids(ids) or 'none'} did not complete",
        device=dev,
        requests=ids,
    )


def collect_reports(peers: Mapping[str, Peer]) -> Reports:
    """Every worker's ``Done`` report, moved onto the coordinator's clock."""
    trace: list[dict[str, Any]] = []
    busy: dict[str, float] = {}
    arrivals: dict[tuple[str, str, int, int], float] = {}
    for d, p in peers.items():
        assert p.done is not None
        off = p.clock_offset
        trace += [
            {**e, "start_s": e["start_s"] + off, "end_s": e["end_s"] + off} for e in p.done.events
        ]
        busy[d] = p.done.busy_s
        for src, request, stage, t in p.done.arrivals:
            arrivals[(src, d, request, stage)] = t + off
    emulation = {d: dict(p.ready.emulation) if p.ready else {} for d, p in peers.items()}
    for d, p in peers.items():
        if p.done is not None:  # communication load outside the quota (the testbed's headroom)
            emulation[d]["helper_cpu_s"] = p.done.helper_cpu_s
            emulation[d]["helper_cpu_share"] = p.done.helper_cpu_s / max(p.done.wall_s, 1e-9)
    return Reports(trace, busy, arrivals, emulation)


# Seconds an ``abort`` may take to reach one remote worker before its channel is just closed.
ABORT_SEND_S = 1.0


def abort(peers: Mapping[str, Peer], procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """Kill the local processes first (a stopped one can hold a send forever), then tell every
    remote worker to stop, each within :data:`ABORT_SEND_S`, and close every channel (which
    also unblocks any thread still sending a setup)."""
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGKILL)
    for p in peers.values():
        if p.proc is None:
            p.chan.send_within(encode(Abort()), ABORT_SEND_S)
        p.chan.close()


def send_setups(
    peers: Mapping[str, Peer],
    payloads: Mapping[str, tuple[dict[str, Any], Sequence[bytes]]],
    timeout_s: float,
) -> None:
    """Send every worker its setup (stage weights: megabytes) in parallel, each on its own
    thread, and return when all are delivered. A worker that dies, is stopped or does not take
    its setup within ``timeout_s`` raises :class:`PeerError` naming it; the caller aborts, which
    closes the channels and so ends any send still blocked."""
    failed: dict[str, str] = {}

    def push(d: str) -> None:
        try:
            peers[d].chan.send(*payloads[d])
        except PeerError as exc:
            failed[d] = str(exc)

    threads = {d: threading.Thread(target=push, args=(d,), daemon=True) for d in payloads}
    for t in threads.values():
        t.start()
    start = time.monotonic()
    stopped_since: dict[str, float] = {}
    while any(t.is_alive() for t in threads.values()) or failed:
        if failed:
            d, why = next(iter(failed.items()))
            raise PeerError(f"device {d}: sending its setup failed ({why})", device=d)
        now = time.monotonic()
        for d, t in threads.items():
            proc = peers[d].proc
            if not t.is_alive() or proc is None:
                continue
            if proc.poll() is not None:
                raise PeerError(
                    f"device {d}: worker process died while receiving its setup", device=d
                )
            if process_stopped(proc):
                if now - stopped_since.setdefault(d, now) >= STOPPED_GRACE_S:
                    raise PeerError(
                        f"device {d}: worker process stopped (SIGSTOP) while receiving its setup",
                        device=d,
                    )
            else:
                stopped_since.pop(d, None)
        if now - start > timeout_s:
            slow = next(d for d, t in threads.items() if t.is_alive())
            raise PeerError(
                f"device {slow}: its setup was not delivered within {timeout_s:.0f} s", device=slow
            )
        time.sleep(0.05)


__all__ = [
    "BLAME_GRACE_S",
    "CONNECT_TIMEOUT_S",
    "HEARTBEAT_TIMEOUT_S",
    "Peer",
    "Reports",
    "abort",
    "accept_workers",
    "blame",
    "check_health",
    "collect_reports",
    "evidence_rank",
    "exit_evidence",
    "is_conclusive",
    "is_death",
    "limit_result_attachments",
    "say_bye",
    "send_setups",
    "start_beat",
    "start_readers",
    "supervise",
]
