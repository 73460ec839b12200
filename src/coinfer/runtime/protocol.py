"""The control messages between the coordinator and a worker, as typed values.

Each message is a frozen dataclass with a ``type`` tag; :func:`encode` turns one into the JSON
object the control channel (:mod:`.control`) carries, and :func:`decode` turns a received object
back into the right class, validating every field (pydantic, lax: JSON lists become tuples). A
message from the network is never trusted: a missing or mistyped field is a :class:`PeerError`
naming the peer, the message type and the field, never a ``KeyError`` deep inside a worker.

The mutual HMAC handshake that precedes these messages (``hello`` / ``challenge`` / ``proof`` /
``welcome``) stays in :mod:`.control`: it is the authentication layer, not the run protocol.

Bulk data never travels as JSON: a ``setup`` is followed by binary blobs (the stage's weights,
and the source's inputs) and a ``result`` by one blob (the outputs), all safetensors.

Flow of one run::

    coordinator                                   worker
        ── Setup (+ weights, + inputs) ──────────►
        ◄───────────────────────────────── Ready
        ── Go ───────────────────────────────────►
        ◄──────────── Heartbeat (every 0.5 s), Result (+ outputs, source only)
        ── Submit (+ inputs) ... End (streaming session, source / all) ──►
        ◄───────────────────────────────── Done
        ── Bye ──────────────────────────────────►    (Abort at any time ends the worker)
    any side: Error (a one-line reason; the coordinator decides what fails)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError

from ..errors import PeerError

# JSON forms of the setup's nested parts: a tensor contract is ``[shape, dtype]`` (see
# :class:`~.transport.WireTensorSpec`), a link shape ``{"bandwidth_Bps", "latency_s"}``.
WireContract = tuple[tuple[tuple[int, ...], str], ...]


@dataclass(frozen=True)
class EmulateConfig:
    """How the worker emulates its device: CPU quota (cores, already scaled by the DVFS level
    ``freq`` the plan chose for it), intra-op threads, pinned CPU (a one-thread device packed by
    the runtime) or CPUs (a SoC's core group: its cores' host CPUs, from the cluster file)."""

    cpu_quota: float | None = None
    threads: int = 1
    cpu: int | None = None
    freq: float = 1.0
    cpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StageAssignment:
    """Which stage the worker rebuilds from code: the recipe (:class:`~.stages.StageSpec` as a
    dict) and the stage's index. ``cache_key``: a worker forked from the session's zygote takes
    the stage, weights loaded, from the zygote's parameter cache under this key instead (no
    weights follow the setup)."""

    spec: dict[str, Any]
    index: int
    cache_key: str | None = None


@dataclass(frozen=True)
class Setup:
    """Everything a worker needs for one run (sent once, before any tensor moves)."""

    type: ClassVar[str] = "setup"
    run_id: str
    device: str
    rank: int
    names: tuple[str, ...]
    store: tuple[str, int]
    timeout_s: float
    depth: int
    num_stages: int
    contracts: tuple[WireContract, ...]
    actions: tuple[str, ...]
    # per peer: LinkShape.to_dict() (bandwidth, latency, medium, trace as (times, bytes/s))
    links: dict[
        str, dict[str, float | str | tuple[tuple[float, ...], tuple[float, ...]] | None]
    ] = field(default_factory=dict)
    emulate: EmulateConfig = field(default_factory=EmulateConfig)
    use_cgroup: bool = True
    stage: StageAssignment | None = None
    # the source device only: its client's actions and, per request, the device that returns it
    client_actions: tuple[str, ...] = ()
    last_device: dict[int, str] = field(default_factory=dict)
    # relay steps this device forwards: (request, input stage, previous hop, next hop, flow)
    relays: tuple[tuple[int, int, str, str, str], ...] = ()
    # per peer, the message ids it receives from this device, one tuple per receiving thread in
    # the order that thread posts them (one cycle in a session; see .sendorder)
    send_order: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    # A streaming session (see runtime.session): ``actions``/``relays``/``last_device`` describe
    # requests ``0..cycle-1`` and repeat for every later cycle (request + c * cycle); inputs come
    # as ``Submit`` messages, at most ``window`` in flight, until ``End`` says how many there are.
    stream: bool = False
    cycle: int = 0
    window: int = 0
    epoch: int = 0
    # a session: probe every emulated link this device sends nothing big over, this often
    # (seconds; 0 = never), so its telemetry covers the links the stream has left (transport)
    probe_s: float = 0.0

    @property
    def is_source(self) -> bool:
        return bool(self.client_actions)


@dataclass(frozen=True)
class Ready:
    """The worker has its stage, its emulation and its data-plane group; ``tw`` is its clock."""

    type: ClassVar[str] = "ready"
    emulation: dict[str, Any]
    tw: float
    threads: int


@dataclass(frozen=True)
class Go:
    type: ClassVar[str] = "go"


@dataclass(frozen=True)
class Heartbeat:
    type: ClassVar[str] = "hb"
    t: float


@dataclass(frozen=True)
class Result:
    """Micro-batch ``message`` came back to the source (outputs in the blob); worker clock times.
    ``epoch`` is the session epoch it ran in: a result from an older epoch is dropped."""

    type: ClassVar[str] = "result"
    message: int
    t_release: float
    t_done: float
    epoch: int = 0


@dataclass(frozen=True)
class Submit:
    """A streaming session's next micro-batch (its inputs in the blob), for the source only;
    messages are numbered ``0, 1, 2, ...`` within an epoch and sent in that order."""

    type: ClassVar[str] = "submit"
    message: int


@dataclass(frozen=True)
class Stats:
    """A session's live telemetry from one worker, over the ``window_s`` seconds before ``t``
    (its clock): stage computes finished and their busy / CPU seconds, and per peer it sent to
    the transfers finished, their bytes and link-busy seconds (``[n, bytes, busy_s]``; the
    link's hold, not a slow receiver's back-pressure, where the transport emulates the link);
    ``queue_s``: the seconds those computes' inputs waited, received, for the stage — over
    ``window_s`` it is the stage's mean queue (Little's law)."""

    type: ClassVar[str] = "stats"
    t: float
    window_s: float
    computes: int
    compute_busy_s: float
    compute_cpu_s: float
    links: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    queue_s: float = 0.0


@dataclass(frozen=True)
class End:
    """A streaming session closes after ``messages`` micro-batches: finish them, report, wait
    for ``bye``."""

    type: ClassVar[str] = "end"
    messages: int


@dataclass(frozen=True)
class Done:
    """The worker's measurements: trace events, input arrival times, compute-busy seconds, and
    the CPU seconds its communication threads used outside the device's quota."""

    type: ClassVar[str] = "done"
    events: tuple[dict[str, Any], ...]
    arrivals: tuple[tuple[str, int, int, float], ...]
    busy_s: float
    wall_s: float
    helper_cpu_s: float = 0.0


@dataclass(frozen=True)
class Bye:
    type: ClassVar[str] = "bye"


@dataclass(frozen=True)
class Abort:
    type: ClassVar[str] = "abort"


@dataclass(frozen=True)
class Error:
    """A failure, in one line; ``device`` / ``peer`` name who saw it and whom it involved."""

    type: ClassVar[str] = "error"
    message: str
    device: str | None = None
    peer: str | None = None


Message = (
    Setup | Ready | Go | Heartbeat | Result | Submit | Stats | End | Done | Bye | Abort | Error
)
MESSAGES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (Setup, Ready, Go, Heartbeat, Result, Submit, Stats, End, Done, Bye, Abort, Error)
}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {k: TypeAdapter(v) for k, v in MESSAGES.items()}


def encode(msg: Message) -> dict[str, Any]:
    """The JSON object for ``msg`` (its fields plus ``"type"``)."""
    return {"type": msg.type, **asdict(msg)}


def decode(data: Any, *, peer: str = "peer") -> Message:
    """The typed message in ``data``; :class:`PeerError` naming ``peer`` and the field if bad."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise PeerError(f"{peer}: malformed control message (no 'type')", device=peer)
    kind = data["type"]
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        raise PeerError(f"{peer}: unknown control message type {kind!r}", device=peer)
    body = {k: v for k, v in data.items() if k != "type"}
    known = {f.name for f in fields(MESSAGES[kind])}
    extra = sorted(set(body) - known)
    if extra:
        raise PeerError(f"{peer}: {kind!r} message has unknown field {extra[0]!r}", device=peer)
    try:
        return adapter.validate_python(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(message)"
        raise PeerError(
            f"{peer}: bad {kind!r} message: field {where!r}: {err['msg']}", device=peer
        ) from None


def expect(data: Any, cls: type[Any], *, peer: str = "peer") -> Any:
    """:func:`decode` and require the message to be a ``cls`` (e.g. the first message a worker
    receives must be a :class:`Setup`)."""
    msg = decode(data, peer=peer)
    if isinstance(msg, Error):
        raise PeerError(f"{peer}: {msg.message}", device=peer)
    if not isinstance(msg, cls):
        raise PeerError(f"{peer}: expected {cls.type!r}, got {msg.type!r}", device=peer)
    return msg


__all__ = [
    "MESSAGES",
    "Abort",
    "Bye",
    "Done",
    "EmulateConfig",
    "End",
    "Error",
    "Go",
    "Heartbeat",
    "Message",
    "Ready",
    "Result",
    "Setup",
    "StageAssignment",
    "Stats",
    "Submit",
    "decode",
    "encode",
    "expect",
]
