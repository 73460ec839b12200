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
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from ..core.schedules import Action
from ..errors import CoinferError, PeerError
from . import emulation
from .control import Channel, authenticate_coordinator, parse_hostport
from .stages import StageSpec, as_tuple, build_stage, load_stage_weights
from .transport import (
    LinkShape,
    PendingRecv,
    TensorMeta,
    Transport,
    init_process_group,
    set_bind_address,
)

# Seconds between heartbeats; the coordinator declares a silent worker dead after
# coordinator.HEARTBEAT_TIMEOUT_S (several missed beats, so a busy CPU does not trip it).
HEARTBEAT_S = 0.5
# Receives posted ahead / messages queued per peer: 2 is enough to overlap one transfer with one
# compute on each side (double buffering); more only adds memory and queueing delay.
DEFAULT_DEPTH = 2


def message_id(request: int, stage: int, num_stages: int) -> int:
    """Wire id of the input of ``stage`` for ``request`` (stage ``num_stages`` = the output)."""
    return request * (num_stages + 2) + stage + 1


class _Mailbox:
    """Same-process hand-offs (the source's client <-> its own stage work), keyed by (request, stage)."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._cond = threading.Condition()

    def put(self, key: tuple[int, int], tensors: list[torch.Tensor]) -> None:
        with self._cond:
            self._items[key] = tensors
            self._cond.notify_all()

    def get(self, key: tuple[int, int], timeout_s: float) -> list[torch.Tensor]:
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._items, timeout=timeout_s):
                raise PeerError(f"local hand-off of request {key[0]} stage {key[1]} timed out")
            return self._items.pop(key)


class _Executor:
    """Runs one device's actions; all state for one run, no globals."""

    def __init__(
        self,
        setup: dict[str, Any],
        stage: torch.nn.Module | None,
        inputs: dict[int, list[torch.Tensor]],
        chan: Channel,
    ):
        self.device: str = setup["device"]
        self.names: list[str] = list(setup["names"])
        self.rank_of = {n: i for i, n in enumerate(self.names)}
        self.rank = int(setup["rank"])
        self.num_stages = int(setup["num_stages"])
        self.timeout_s = float(setup["timeout_s"])
        self.depth = int(setup.get("depth", DEFAULT_DEPTH))
        self.contracts = [[TensorMeta.from_list(m) for m in c] for c in setup["contracts"]]
        self.actions = [Action.parse(a) for a in setup["actions"]]
        self.client = [Action.parse(a) for a in setup.get("client_actions", [])]
        self.last_device = dict(
            zip(
                (int(r) for r in setup.get("last_device", {})),
                setup.get("last_device", {}).values(),
                strict=True,
            )
        )
        self.stage = stage
        self.inputs = inputs
        self.chan = chan
        links = {self.rank_of[n]: LinkShape.from_dict(s) for n, s in setup.get("links", {}).items()}
        self.transport = Transport(
            self.rank,
            self.names,
            links,
            depth=self.depth,
            timeout_s=self.timeout_s,
            on_error=self.fail,
            label=self._label,
        )
        self.mailbox = _Mailbox()
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[list[Any]] = []  # [src device, request, stage, time]
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
            self.chan.send({"type": "error", "device": self.device, "peer": peer, "message": msg})
        os._exit(3)

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
            return self.mailbox.get((request, stage_in), self.timeout_s)
        return pending.wait(self.timeout_s)

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
        try:
            recvs = [a for a in self.actions if a.kind == "recv"]
            posted: list[tuple[Action, PendingRecv | None]] = []
            i = 0
            while i < len(recvs) or posted:
                while i < len(recvs) and slots.acquire(blocking=not posted):
                    a = recvs[i]
                    posted.append((a, self._post(str(a.peer), a.request, a.stage)))
                    i += 1
                a, pend = posted.pop(0)
                tensors = self._wait(pend, a.request, a.stage)
                self._arrived(str(a.peer), a.request, a.stage)
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
        slots = threading.Semaphore(self.depth)
        threading.Thread(
            target=self._receiver, args=(ready, slots), name="receiver", daemon=True
        ).start()
        pending_out: tuple[int, tuple[torch.Tensor, ...]] | None = None
        for a in self.actions:
            if a.kind == "compute":
                try:
                    request, xs = ready.get(timeout=self.timeout_s + 1)
                except queue.Empty:
                    raise PeerError(
                        f"device {self.device}: no input for request {a.request} within {self.timeout_s:.0f} s",
                        device=str(a.peer) if a.peer else None,
                    ) from None
                slots.release()  # the input is the compute loop's now: post the next receive
                if request != a.request:
                    raise PeerError(
                        f"device {self.device}: got request {request}, schedule expects {a.request}"
                    )
                t0 = time.time()
                with torch.inference_mode():
                    outs = as_tuple(self.stage(*xs))
                self._event(self.device, "compute", a.request, t0, time.time(), a.stage)
                pending_out = (a.request, outs)
            elif a.kind == "send":
                if pending_out is None or pending_out[0] != a.request:
                    raise PeerError(
                        f"device {self.device}: schedule sends request {a.request} before computing it"
                    )
                self._send(str(a.peer), a.request, a.stage + 1, pending_out[1])
                pending_out = None

    def _client(self) -> None:
        """The source's client: release inputs in the schedule's order, stream outputs back."""
        try:
            from safetensors.torch import save

            k = self.num_stages
            pending: dict[int, PendingRecv | None] = {}
            released: dict[int, float] = {}
            for a in self.client:
                if a.kind == "send":
                    last = self.last_device[a.request]
                    pending[a.request] = self._post(last, a.request, k)
                    released[a.request] = time.time()
                    self._send(str(a.peer), a.request, 0, self.inputs.pop(a.request))
                else:
                    outs = self._wait(pending.pop(a.request), a.request, k)
                    self._arrived(self.last_device[a.request], a.request, k)
                    done = time.time()
                    blob = save({f"t{j}": t.contiguous() for j, t in enumerate(outs)})
                    self.chan.send(
                        {
                            "type": "result",
                            "message": a.request,
                            "t_release": released.pop(a.request),
                            "t_done": done,
                        },
                        [blob],
                    )
        except BaseException as exc:
            self.fail(exc)

    def run(self) -> None:
        """Stage work on this thread, the client (source only) beside it; then drain the sends."""
        client = None
        if self.client:
            client = threading.Thread(target=self._client, name="client", daemon=True)
            client.start()
        self._worker()
        if client is not None:
            client.join()
        self.transport.flush()


def _heartbeat(chan: Channel, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            chan.send({"type": "hb", "t": time.time()})
        except PeerError:
            os._exit(4)  # the coordinator is gone: nothing left to serve


def _reader(chan: Channel, go: threading.Event, bye: threading.Event) -> None:
    while True:
        try:
            msg, _ = chan.recv()
        except PeerError:
            os._exit(4)
        kind = msg["type"]
        if kind == "go":
            go.set()
        elif kind == "ping":
            with contextlib.suppress(PeerError):
                chan.send({"type": "pong", "t": msg.get("t"), "tw": time.time()})
        elif kind == "bye":
            bye.set()
            return
        elif kind == "abort":
            os._exit(5)


def _decode_inputs(blob: bytes) -> dict[int, list[torch.Tensor]]:
    from safetensors.torch import load

    flat = load(blob)
    out: dict[int, list[torch.Tensor]] = {}
    for key in sorted(flat, key=lambda s: tuple(int(x) for x in s[1:].split("_"))):
        r, j = (int(x) for x in key[1:].split("_"))
        out.setdefault(r, []).append(flat[key])
        assert len(out[r]) == j + 1
    return out


def serve(
    coordinator: str,
    device: str,
    token: str,
    *,
    bind: str = "127.0.0.1",
    connect_timeout_s: float = 30.0,
) -> None:
    """Serve one run as ``device`` for the coordinator at ``HOST:PORT``; returns when it ends.

    Raises :class:`PeerError` if the coordinator is unreachable or fails authentication.
    """
    host, port = parse_hostport(coordinator, what="--coordinator")
    deadline = time.time() + connect_timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout_s)
            break
        except OSError as exc:
            if time.time() > deadline:
                raise PeerError(
                    f"cannot reach coordinator {coordinator} ({exc.strerror or exc})", device=device
                ) from None
            time.sleep(0.2)
    chan = Channel(sock, peer=f"coordinator {coordinator}")
    authenticate_coordinator(chan, token, device)
    sock.settimeout(None)  # the coordinator may wait for other workers before sending the setup
    setup, blobs = chan.expect("setup")
    emu = emulation.Emulation("none", torch.get_num_threads(), None)
    try:
        emu_cfg = setup.get("emulate") or {}
        emu = emulation.apply(
            device,
            str(setup["run_id"]),
            cpu_quota=emu_cfg.get("cpu_quota"),
            threads=int(emu_cfg.get("threads", 1)),
            use_cgroup=bool(setup.get("use_cgroup", True)),
            cpu=emu_cfg.get("cpu"),
        )
        blob_iter = iter(blobs)
        stage = None
        if setup.get("stage") is not None:
            stage = build_stage(
                StageSpec.from_dict(setup["stage"]["spec"]), int(setup["stage"]["index"])
            )
            load_stage_weights(stage, next(blob_iter))
            stage.eval()
        inputs = _decode_inputs(next(blob_iter)) if setup.get("client_actions") else {}
        if (
            stage is not None
        ):  # warm-up: first-call allocations and kernel selection stay out of the timings
            with torch.inference_mode():
                stage(
                    *(
                        m.empty().zero_()
                        for m in (
                            TensorMeta.from_list(x)
                            for x in setup["contracts"][setup["stage"]["index"]]
                        )
                    )
                )
        set_bind_address(bind)
        store_host, store_port = setup["store"]
        init_process_group(
            int(setup["rank"]),
            len(setup["names"]),
            store_host,
            int(store_port),
            float(setup["timeout_s"]),
        )
        ex = _Executor(setup, stage, inputs, chan)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            detail = str(exc) if isinstance(exc, CoinferError) else f"{type(exc).__name__}: {exc}"
            chan.send({"type": "error", "device": device, "message": f"setup failed: {detail}"})
        emulation.release(emu)
        raise
    go, bye, stop = threading.Event(), threading.Event(), threading.Event()
    chan.send(
        {
            "type": "ready",
            "emulation": emu.to_dict(),
            "tw": time.time(),
            "threads": torch.get_num_threads(),
        }
    )
    threading.Thread(target=_reader, args=(chan, go, bye), name="control", daemon=True).start()
    threading.Thread(target=_heartbeat, args=(chan, stop), name="heartbeat", daemon=True).start()
    if not go.wait(float(setup["timeout_s"])):
        os._exit(6)
    t0 = time.time()
    try:
        ex.run()
    except BaseException as exc:
        if os.environ.get("COINFER_DEBUG"):
            traceback.print_exc()
        ex.fail(exc)
    busy = sum(e["end_s"] - e["start_s"] for e in ex.events if e["kind"] == "compute")
    for tev in ex.transport.events:  # link busy intervals, as measured by the sender
        if tev.kind == "send":
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
    chan.send(
        {
            "type": "done",
            "events": ex.events,
            "arrivals": ex.arrivals,
            "busy_s": busy,
            "wall_s": time.time() - t0,
        }
    )
    bye.wait(float(setup["timeout_s"]))
    stop.set()
    emulation.release(emu)
    # Skip interpreter teardown: gloo's destructors may block on peers that already left.
    os._exit(0)


__all__ = ["DEFAULT_DEPTH", "HEARTBEAT_S", "message_id", "serve"]
