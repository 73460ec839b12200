"""What the live dashboard shows: one JSON-ready snapshot of a serving server, and its stream.

Everything comes from what the server already measures — nothing here times anything itself:

- devices and links: the cluster (names, nominal link bandwidth, media) read through
  ``service.session.cluster`` (``serve`` may not import ``coinfer.cluster``), with each
  device's newest telemetry record: its busy fraction of that half second; per link the bytes
  sent over the interval (``rate_Bps``: what the link carried), the fraction of it the link
  was busy, and bytes over busy seconds (``achieved_Bps``: its speed while sending);
- the rolling Gantt: every telemetry record of the last :data:`GANTT_S` seconds as one bar per
  device lane, covering the interval it measured and saying how busy the device was in it.
  Workers report busy seconds per interval, not which request they computed when, so no
  per-request bars are drawn: they would be invented;
- throughput and latency over time: :class:`History` reads the request counters and the
  latency histogram once a second and keeps the differences for :data:`HISTORY_S` seconds.
  Mean latency per second is exact (sum over count); p50/p95 are interpolated inside the
  histogram's buckets (like Prometheus' ``histogram_quantile``), so they are estimates;
- events: the service's ``scaling_events`` (when it has them) and the plan changes the
  history saw (the service's fail-over / hand-over counts going up).

Times are seconds on the session's clock (``session.now()``), the clock of the telemetry.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

# Seconds of throughput / latency history kept (one point per second).
HISTORY_S = 120
# Seconds of telemetry the rolling Gantt shows (four lanes x two records a second: small).
GANTT_S = 20.0
# A device whose newest record is older than this (four 0.5 s intervals) reports nothing now.
STALE_S = 2.0
# The header's throughput and latency cover this many seconds (as the batcher's throughput).
RECENT_S = 10
# Seconds between two snapshots of the stream.
STREAM_PERIOD_S = 1.0
# A stream ends after this long and the browser's EventSource reconnects (``retry``): uvicorn
# waits for open responses at shutdown and the service is marked closing only after that, so
# a stream that never ended would hold a stopping server for its whole graceful timeout.
STREAM_MAX_S = 5.0
RETRY_MS = 500
# Events listed at most (newest kept).
MAX_EVENTS = 50


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN/Infinity, and
    a browser's ``JSON.parse`` rejects them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def _samples(metric: Any) -> Iterable[Any]:
    """The samples of a prometheus-client metric (its public ``collect()``); none if absent."""
    if metric is None:
        return ()
    try:
        return [s for family in metric.collect() for s in family.samples]
    except Exception:  # a stand-in without metrics: nothing to read
        return ()


def read_counters(metrics: Any) -> dict[str, Any]:
    """Totals so far: requests by outcome, samples, latency sum/count and histogram buckets."""
    out: dict[str, Any] = {"completed": 0.0, "rejected": 0.0, "failed": 0.0, "samples": 0.0}
    out.update(lat_sum=0.0, lat_count=0.0, buckets=[])
    for s in _samples(getattr(metrics, "outcomes", None)):
        name = s.labels.get("outcome")
        if s.name.endswith("_total") and name in ("completed", "rejected", "failed"):
            out[name] = float(s.value)
    for s in _samples(getattr(metrics, "samples", None)):
        if s.name.endswith("_total"):
            out["samples"] = float(s.value)
    for s in _samples(getattr(metrics, "latency", None)):
        if s.name.endswith("_sum"):
            out["lat_sum"] = float(s.value)
        elif s.name.endswith("_count"):
            out["lat_count"] = float(s.value)
        elif s.name.endswith("_bucket"):
            out["buckets"].append((float(s.labels["le"]), float(s.value)))
    out["buckets"].sort()
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram ``buckets`` ``[(upper bound, count)]``,
    interpolated linearly inside its bucket; the last finite bound when it falls in ``+Inf``;
    ``None`` without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cum in buckets:
        if cum >= rank and cum > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (cum - below)
        if not math.isinf(bound):
            lower = bound
        below = cum
    return lower


def _rates(t0: float, old: dict[str, Any], t1: float, new: dict[str, Any]) -> dict[str, Any]:
    """Per-second rates and latency between two counter readings (:func:`read_counters`)."""
    dt = max(t1 - t0, 1e-6)
    n = new["lat_count"] - old["lat_count"]
    before = dict(old["buckets"])
    diff = [(b, c - before.get(b, 0.0)) for b, c in new["buckets"]]
    p50, p95 = quantile(0.5, diff), quantile(0.95, diff)
    out = {f"{k}_ps": (new[k] - old[k]) / dt for k in ("samples", "rejected", "failed")}
    return {
        "rps": (new["completed"] - old["completed"]) / dt, **out,
        "mean_ms": 1e3 * (new["lat_sum"] - old["lat_sum"]) / n if n > 0 else None,
        "p50_ms": 1e3 * p50 if p50 is not None else None,
        "p95_ms": 1e3 * p95 if p95 is not None else None,
    }  # fmt: skip


def _now(service: Any) -> float:
    """The session's clock, or the newest telemetry time for a session without one."""
    session = getattr(service, "session", None)
    now = getattr(session, "now", None)
    if callable(now):
        return float(now())
    tel = getattr(session, "telemetry", None) or []
    return max((float(r.get("t_s", 0.0)) for r in tel), default=0.0)


class History:
    """Throughput and latency per second over the last :data:`HISTORY_S` seconds, sampled
    from the service's counters (:meth:`sample`, once a second by :meth:`start`'s thread), and
    the plan changes seen meanwhile."""

    def __init__(self, service: Any, *, keep: int = HISTORY_S):
        self.service = service
        self.points: deque[dict[str, Any]] = deque(maxlen=keep)
        self._raw: deque[tuple[float, dict[str, Any]]] = deque(maxlen=keep + 1)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._seen = (getattr(service, "failovers", 0), getattr(service, "handovers", 0))
        self._alive = set(getattr(getattr(service, "session", None), "alive", ()) or ())
        self._lost: set[str] = set()  # lost since the last fail-over event: named by the next
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, t_s: float | None = None) -> None:
        """Add one point: the rates since the previous sample (none at the first)."""
        s = self.service
        has_clock = callable(getattr(getattr(s, "session", None), "now", None))
        t = t_s if t_s is not None else _now(s) if has_clock else time.monotonic()
        raw = read_counters(getattr(s, "metrics", None))
        b = getattr(s, "batcher", None)
        with self._lock:
            if self._raw:
                self.points.append({
                    "t_s": round(t, 3), **_rates(*self._raw[-1], t, raw),
                    "queue": b.queued_samples if b is not None else None,
                    "inflight": b.inflight if b is not None else None,
                })  # fmt: skip
            self._raw.append((t, raw))
            self._note_replans(t)

    def _note_replans(self, t: float) -> None:
        s = self.service
        now = (getattr(s, "failovers", 0), getattr(s, "handovers", 0))
        alive = set(getattr(getattr(s, "session", None), "alive", ()) or ())
        # a device is marked lost when its failure is detected, the plan changes after the
        # re-plan: remember the loss until the fail-over it caused is seen
        self._lost |= self._alive - alive
        for kind, old, new in zip(("failover", "handover"), self._seen, now, strict=True):
            if new > old:
                plan = _plan_part(s).get("stages", [])
                where = " | ".join("+".join(st["devices"]) for st in plan)
                lost = ",".join(sorted(self._lost)) if kind == "failover" else ""
                self._lost = set() if kind == "failover" else self._lost
                self.events.append({"t_s": round(t, 3), "kind": kind, "count": new - old,
                                    "device": lost or None,
                                    "reason": f"plan now {where}" if where else ""})  # fmt: skip
        self._seen, self._alive = now, alive

    def recent(self, seconds: int = RECENT_S) -> dict[str, Any]:
        """Requests/s and latency quantiles over the last ``seconds`` seconds sampled."""
        with self._lock:
            if len(self._raw) < 2:
                return {"rps": None, "p50_ms": None, "p95_ms": None, "mean_ms": None}
            old = self._raw[max(0, len(self._raw) - 1 - seconds)]
            return _rates(*old, *self._raw[-1])

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.points)

    def start(self, period_s: float = 1.0) -> History:
        """Sample every ``period_s`` on a daemon thread until :meth:`stop` or the service
        closes. A failing sample is kept in :attr:`error` (shown), never raised."""

        def run() -> None:
            while not self._stop.wait(period_s) and not getattr(self.service, "closing", False):
                try:
                    self.sample()
                    self.error = None
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"

        if self._thread is None:
            self.sample()
            self._thread = threading.Thread(target=run, name="live-history", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def _plan_part(service: Any) -> dict[str, Any]:
    try:
        doc = service.plan_doc()
    except Exception:
        return {}
    plan = doc.get("plan") or {}
    return {**plan, **{k: doc.get(k) for k in ("source", "microbatch", "window", "model")}}


def latest_records(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each device's newest record, the newest epoch's first (a hand-over's old workers may
    still report for a moment)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        dev = r.get("device")
        old = out.get(dev)
        if old is None or r.get("epoch", 0) >= old.get("epoch", 0):
            out[dev] = r
    return out


def device_view(rec: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """A device's last interval: busy fraction, computes and mean compute time; ``stale`` when
    it has not reported for :data:`STALE_S`."""
    if rec is None:
        return {"util": None, "computes": None, "compute_ms": None, "stale": True}
    window = _finite(rec.get("window_s")) or 0.0
    util = _finite(rec.get("utilisation"))
    if util is None and window > 0 and rec.get("compute_ms") is not None:
        util = (_finite(rec["compute_ms"]) or 0.0) * 1e-3 * (rec.get("computes") or 0) / window
    return {
        "util": util,
        "computes": rec.get("computes"),
        "compute_ms": _finite(rec.get("compute_ms")),
        "stale": now - float(rec.get("t_s", now)) > STALE_S,
        "epoch": rec.get("epoch", 0),
    }


def link_view(st: dict[str, Any], window_s: float) -> dict[str, Any]:
    """One direction's last interval: bytes/s carried, busy fraction, speed while busy."""
    nbytes = _finite(st.get("bytes")) or 0.0
    busy = _finite(st.get("busy_s")) or 0.0
    return {
        "bytes": nbytes,
        "transfers": st.get("transfers", 0),
        "rate_Bps": nbytes / window_s if window_s > 0 else None,
        "busy": busy / window_s if window_s > 0 else None,
        "achieved_Bps": nbytes / busy if busy > 0 else None,
    }


def _topology(session: Any, names: list[str]) -> tuple[list[dict], list[dict]]:
    """Devices and directed links of the cluster (its nominal figures), duck-typed."""
    cluster = getattr(session, "cluster", None)
    devices = [
        {"name": d.name, "kind": getattr(d, "kind", None), "gflops": getattr(d, "gflops", None)}
        for d in getattr(cluster, "devices", ())
    ] or [{"name": n, "kind": None, "gflops": None} for n in names]
    links = [
        {"src": lk.src, "dst": lk.dst, "nominal_Bps": _finite(lk.bandwidth_Bps),
         "latency_ms": 1e3 * (_finite(getattr(lk, "latency_s", 0.0)) or 0.0),
         "medium": getattr(lk, "medium", None)}
        for lk in getattr(cluster, "all_links", getattr(cluster, "links", ()))
    ]  # fmt: skip
    return devices, links


def snapshot(service: Any, history: History | None = None) -> dict[str, Any]:
    """Everything the dashboard draws, JSON-ready (see the module docstring)."""
    session = getattr(service, "session", None)
    now = _now(service)
    plan = _plan_part(service)
    records = list(getattr(session, "telemetry", None) or [])
    recent: list[dict[str, Any]] = []
    for r in reversed(records):  # in time order: walk back from the newest
        if float(r.get("t_s", 0.0)) < now - GANTT_S:
            break
        recent.append(r)
    recent.reverse()
    latest = latest_records(recent)
    alive = set(getattr(session, "alive", ()) or ())
    stage_of = {d: k for k, st in enumerate(plan.get("stages", [])) for d in st["devices"]}
    devices, links = _topology(session, sorted({*alive, *stage_of}))
    for d in devices:
        d.update(device_view(latest.get(d["name"]), now))
        d["alive"] = d["name"] in alive if alive else True
        d["stage"] = stage_of.get(d["name"])
    by_pair = {(lk["src"], lk["dst"]): lk for lk in links}
    for dev, rec in latest.items():
        stale = now - float(rec.get("t_s", now)) > STALE_S
        for peer, st in (rec.get("links") or {}).items():
            lk = by_pair.get((dev, peer))
            if lk is None:  # a hop the cluster does not list (a relay): still real traffic
                lk = by_pair[(dev, peer)] = {"src": dev, "dst": peer, "nominal_Bps": None}
                links.append(lk)
            if not stale:
                lk.update(link_view(st, _finite(rec.get("window_s")) or 0.0))
    bars = [
        {"device": r.get("device"), "end_s": float(r["t_s"]),
         "start_s": float(r["t_s"]) - (_finite(r.get("window_s")) or 0.0),
         "util": _finite(r.get("utilisation")), "computes": r.get("computes"),
         "compute_ms": _finite(r.get("compute_ms")), "epoch": r.get("epoch", 0)}
        for r in recent
    ]  # fmt: skip
    ok, health = _health(service)
    b = getattr(service, "batcher", None)
    sps, mbps = b.throughput() if b is not None else (None, None)
    head = history.recent() if history is not None else {}
    events = [dict(e) for e in getattr(service, "scaling_events", None) or []]
    events += list(history.events) if history is not None else []
    events.sort(key=lambda e: _finite(e.get("t_s")) or 0.0)
    return _clean({
        "t_s": now,
        "model": getattr(service, "model", None),
        "status": health.get("status", "ok" if ok else "failed"),
        "error": health.get("error") or (history.error if history is not None else None),
        "summary": {
            "devices_alive": len(alive) if alive else len(devices), "devices_total": len(devices),
            "rps": head.get("rps"), "samples_ps": sps, "microbatches_ps": mbps,
            "p50_ms": head.get("p50_ms"),
            "p95_ms": head.get("p95_ms"), "mean_ms": head.get("mean_ms"),
            "queue_samples": b.queued_samples if b is not None else None,
            "queue_capacity": getattr(service, "capacity", None),
            "inflight": b.inflight if b is not None else None,
            "failovers": getattr(service, "failovers", 0),
            "handovers": getattr(service, "handovers", 0),
        },
        "plan": plan,
        "devices": devices,
        "links": links,
        "gantt": {"window_s": GANTT_S, "bars": bars},
        "history": history.to_list() if history is not None else [],
        "events": events[-MAX_EVENTS:],
    })  # fmt: skip


def _health(service: Any) -> tuple[bool, dict[str, Any]]:
    try:
        return service.health()
    except Exception as exc:
        return False, {"status": "unknown", "error": f"{type(exc).__name__}: {exc}"}


async def events(
    service: Any,
    history: History | None,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    period_s: float | None = None,
    max_s: float | None = None,
) -> AsyncIterator[str]:
    """Server-sent events: one snapshot (``data:`` line) every ``period_s``
    (:data:`STREAM_PERIOD_S`), until the client leaves, the service closes, or ``max_s``
    (:data:`STREAM_MAX_S`) passed."""
    period_s = STREAM_PERIOD_S if period_s is None else period_s
    end = time.monotonic() + (STREAM_MAX_S if max_s is None else max_s)
    first = True
    while not getattr(service, "closing", False) and not await disconnected():
        snap = await asyncio.to_thread(snapshot, service, history)  # the loop keeps serving
        doc = json.dumps(snap, allow_nan=False, separators=(",", ":"))
        yield (f"retry: {RETRY_MS}\n" if first else "") + f"data: {doc}\n\n"
        first = False
        if time.monotonic() + period_s > end:
            return
        await asyncio.sleep(period_s)


__all__ = [
    "GANTT_S",
    "HISTORY_S",
    "STREAM_MAX_S",
    "History",
    "device_view",
    "events",
    "link_view",
    "quantile",
    "read_counters",
    "snapshot",
]
