"""The event-trace format shared by the simulator, the runtime and the Gantt chart.

One :class:`TraceEvent` is one busy interval of one resource: a device computing a stage of a
request, or a directed link carrying one hop of a transfer. The simulator produces them, the
runtime measures them (same class, same JSON / CSV), and :func:`coinfer.report.gantt` draws
either. Resource names: a device's name, or ``"u->v"`` for the directed link from ``u`` to ``v``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError, read_text

# Fraction of requests dropped at each end when measuring steady-state throughput: the first
# ones see an empty pipeline (fill), the last ones an emptying one (drain).
STEADY_TRIM = 0.2
# Below this many requests there is no steady state to isolate; use all completions.
MIN_STEADY_REQUESTS = 10

EventKind = Literal["compute", "transfer"]
EVENT_FIELDS = ("resource", "kind", "request", "start_s", "end_s", "stage")


def link_name(src: str, dst: str) -> str:
    """Resource name of the directed link ``src -> dst`` in traces and charts."""
    return f"{src}->{dst}"


def medium_name(medium: str) -> str:
    """Resource name of a shared medium in traces and charts (``"wifi<->"``: both directions)."""
    return f"{medium}<->"


def is_link(resource: str) -> bool:
    """True if ``resource`` names a network resource (a link ``"u->v"`` or a medium ``"m<->"``)
    rather than a device."""
    return "->" in resource


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """``resource`` was busy with ``kind`` work for ``request`` from ``start_s`` to ``end_s``.

    ``stage`` is the pipeline stage computed (compute) or the stage whose input is carried
    (transfer; ``num_stages`` = the output going back to the source); ``None`` if unknown.
    """

    resource: str
    kind: EventKind
    request: int
    start_s: float
    end_s: float
    stage: int | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceEvent:
        try:
            kind = str(data["kind"])
            if kind not in ("compute", "transfer"):
                raise ValueError(f"kind {kind!r} is not compute|transfer")
            stage = data.get("stage")
            ev = cls(
                resource=str(data["resource"]),
                kind=kind,  # type: ignore[arg-type]
                request=int(data["request"]),
                start_s=float(data["start_s"]),
                end_s=float(data["end_s"]),
                stage=None if stage in (None, "") else int(stage),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"trace event {dict(data)!r}: missing or malformed field ({exc})"
            ) from None
        if ev.end_s < ev.start_s:
            raise InputError(
                f"trace event on {ev.resource!r} ends before it starts ({ev.start_s} > {ev.end_s})"
            )
        return ev


def events_to_json(events: Iterable[TraceEvent]) -> str:
    """JSON array of events (the format both the simulator and the runtime write)."""
    return json.dumps([e.to_dict() for e in events])


def events_from_json(text: str, *, origin: str = "trace") -> tuple[TraceEvent, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{origin}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{origin}: a trace must be a JSON array of events")
    return tuple(TraceEvent.from_dict(d) for d in data)


def events_to_csv(events: Sequence[TraceEvent]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EVENT_FIELDS)
    w.writeheader()
    for e in events:
        w.writerow(e.to_dict())
    return buf.getvalue()


def load_events(path: str | Path) -> tuple[TraceEvent, ...]:
    """Read events from a ``.json`` or ``.csv`` file."""
    p = Path(path)
    text = read_text(p, "trace")
    if p.suffix.lower() == ".csv":
        return tuple(TraceEvent.from_dict(row) for row in csv.DictReader(io.StringIO(text)))
    return events_from_json(text, origin=str(p))


def steady_period(completion_s: Sequence[float]) -> float:
    """Seconds per request in steady state (module docstring); inf for no completions."""
    c = sorted(completion_s)
    n = len(c)
    if n == 0:
        return math.inf
    if n == 1:
        return c[0]
    if n < MIN_STEADY_REQUESTS:
        lo, hi = 0, n - 1
    else:
        trim = int(n * STEADY_TRIM)
        lo, hi = trim, n - 1 - trim
    # Least-squares slope of completion time against completion rank: exact for an evenly spaced
    # stream, and robust when replicas finish in (near-)simultaneous bursts, where the plain
    # (c[hi] - c[lo]) / (hi - lo) over- or under-credits a partial burst at either end (it read
    # up to 9 % optimistic on 4-replica plans). On a staircase of bursts of B the slope errs by
    # about 1 % at 60 requests and less with more.
    ranks = np.arange(lo, hi + 1, dtype=float)
    times = np.asarray(c[lo : hi + 1], dtype=float)
    rc = ranks - ranks.mean()
    return float(np.dot(rc, times - times.mean()) / np.dot(rc, rc))
