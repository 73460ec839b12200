"""Open-loop load generator for ``coinfer serve``: fire each request of an arrival trace at its
time, record what became of it, scrape ``/metrics`` every second.

Open loop: request ``i`` is sent at ``trace.times[i]`` whatever happened to the others (one
asyncio task per request on one ``httpx.AsyncClient``), so a slow server faces the queue a real
population of clients would build — a closed loop would slow its clients down with it and hide
the overload. Latency runs from the request's *arrival* (its time in the trace) to its answer:
if this generator itself falls behind, the lag counts against the server rather than vanishing
(no coordinated omission), and each record keeps its send time so the lag is visible
(``send_lag_p99_s`` in the summary).

Per request: arrival, send and completion times (seconds from the trace's 0), HTTP status,
latency, and on a 429 the ``Retry-After`` it carried — a 429 is not retried (the trace, not
the server, decides when requests come) and counts as rejected. Outcomes: ``completed`` (200),
``rejected`` (429), ``failed`` (5xx), ``error`` (any other status, or the connection broke),
``timeout`` (no answer within the bound). ``completed + rejected + failed + error + timeout ==
sent``, always; ``lost = sent - completed - rejected - failed`` is what got no answer at all.

Bounded: at most ``max_requests`` (default 5,000; the rest of the trace is not sent and is
reported as ``truncated``) and ``trace duration + grace_s`` (default 60 s) of wall clock, after
which whatever is still out is cancelled and counted as ``timeout``.

Request bodies follow ``GET /v1/plan``'s ``inputs`` (batch 1, random values): JSON for small
inputs, safetensors (the server's ``application/octet-stream`` form: ``input_0``, ...) above
:data:`JSON_MAX_NUMBERS` numbers per sample. A pool of :data:`BODY_POOL` bodies is made once
and cycled: 5,000 fresh ResNet inputs would be 3 GB and cost this process more CPU than the
server gets on a 2-core machine.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 \\
        --trace poisson:rate=10,duration=30,seed=1 --slo-ms 2000 --out run.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from coinfer.simulate.arrivals import ArrivalTrace, make_trace

DEFAULT_MAX_REQUESTS = 5_000
DEFAULT_GRACE_S = 60.0
SCRAPE_INTERVAL_S = 1.0
# Numbers per sample above which a body goes as safetensors: a 3x224x224 image is ~3 MB of
# JSON text, whose printing here and parsing in the server would cost more CPU than the model.
JSON_MAX_NUMBERS = 4096
BODY_POOL = 8
# Concurrent connections: above what an overloaded testbed server holds in flight (its queue
# plus the pipeline: a few hundred samples), below the file-descriptor limit.
MAX_CONNECTIONS = 512
# Seconds between the client's start and the trace's time 0: the event loop and the first
# connections are set up before the first request is due.
LEAD_S = 0.2
OUTCOMES = ("completed", "rejected", "failed", "error", "timeout")


@dataclass(frozen=True)
class Body:
    """One request body and its ``Content-Type``."""

    content: bytes
    content_type: str


@dataclass(frozen=True)
class RequestRecord:
    """What became of one request; times in seconds from the trace's 0 (``None``: never)."""

    index: int
    arrival_s: float
    send_s: float | None
    done_s: float | None
    status: int | None
    outcome: str
    retry_after_s: float | None = None
    error: str | None = None

    @property
    def latency_s(self) -> float | None:
        """Arrival (the trace's time) to the answer: the latency a client of the trace saw."""
        return None if self.done_s is None else self.done_s - self.arrival_s

    @property
    def send_lag_s(self) -> float | None:
        """How late this generator sent it (its own lag, not the server's)."""
        return None if self.send_s is None else self.send_s - self.arrival_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "arrival_s": self.arrival_s,
            "send_s": self.send_s,
            "done_s": self.done_s,
            "status": self.status,
            "outcome": self.outcome,
            "latency_s": self.latency_s,
            "retry_after_s": self.retry_after_s,
            "error": self.error,
        }


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), ``None`` for no data."""
    return float(np.percentile(xs, q)) if len(xs) else None


@dataclass
class LoadResult:
    """One load test: the trace, every request's record and the ``/metrics`` time series."""

    url: str
    trace: ArrivalTrace
    slo_s: float | None
    form: str
    records: list[RequestRecord]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    truncated: int = 0
    started_unix: float = 0.0
    wall_s: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.records if r.outcome == outcome)

    def summary(self) -> dict[str, Any]:
        """The headline numbers. ``goodput_rps`` is requests answered within the SLO per second
        of the trace's duration (the same denominator for every server facing this trace, so
        ratios between servers are ratios of counts); ``throughput_rps`` is completions per
        second from the first send to the last completion."""
        done = [r for r in self.records if r.outcome == "completed"]
        lat = [r.latency_s for r in done if r.latency_s is not None]
        lags = [r.send_lag_s for r in self.records if r.send_lag_s is not None]
        counts = {o: self.count(o) for o in OUTCOMES}
        sent = len(self.records)
        good = None if self.slo_s is None else sum(1 for x in lat if x <= self.slo_s)
        sends = [r.send_s for r in self.records if r.send_s is not None]
        ends = [r.done_s for r in done if r.done_s is not None]
        span = (max(ends) - min(sends)) if ends and sends else 0.0
        dur = self.trace.duration_s
        return {
            "trace": self.trace.spec,
            "sent": sent,
            **counts,
            "lost": sent - counts["completed"] - counts["rejected"] - counts["failed"],
            "unaccounted": sent - sum(counts.values()),
            "truncated": self.truncated,
            "latency_mean_s": statistics.fmean(lat) if lat else None,
            "latency_p50_s": percentile(lat, 50),
            "latency_p95_s": percentile(lat, 95),
            "latency_p99_s": percentile(lat, 99),
            "latency_max_s": max(lat) if lat else None,
            "slo_s": self.slo_s,
            "goodput": good,
            "goodput_rps": None if good is None or dur <= 0 else good / dur,
            "throughput_rps": len(done) / span if span > 0 else None,
            "span_s": span,
            "send_lag_p99_s": percentile(lags, 99),
            "send_lag_max_s": max(lags) if lags else None,
            "scrapes": sum(1 for m in self.metrics if "metrics" in m),
            "wall_s": self.wall_s,
        }

    def to_dict(self, *, records: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url,
            "trace": {"name": self.trace.name, "params": dict(self.trace.params)},
            "form": self.form,
            "started_unix": self.started_unix,
            "summary": self.summary(),
            "plan": self.plan,
            "metrics": self.metrics,
        }
        if records:
            out["records"] = [r.to_dict() for r in self.records]
        return out


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _sample(shape: Sequence[int], dtype_name: str, gen: Any) -> Any:
    """A random batch-1 tensor of ``shape`` (without the batch) and dtype: normal floats,
    small integers (token ids of any vocabulary), random booleans."""
    import torch

    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown input dtype {dtype_name!r} in /v1/plan")
    full = (1, *shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, full, generator=gen).bool()
    if dtype.is_floating_point:
        return torch.randn(full, generator=gen).to(dtype)
    return torch.randint(0, 100, full, generator=gen).to(dtype)


def choose_form(inputs: Sequence[dict[str, Any]], form: str = "auto") -> str:
    """``json`` or ``safetensors``: ``auto`` picks safetensors above JSON_MAX_NUMBERS a sample."""
    if form != "auto":
        return form
    numbers = sum(math.prod(int(s) for s in spec["shape"][1:]) for spec in inputs)
    return "safetensors" if numbers > JSON_MAX_NUMBERS else "json"


def build_bodies(
    inputs: Sequence[dict[str, Any]], form: str, count: int = BODY_POOL, seed: int = 0
) -> list[Body]:
    """``count`` request bodies of one sample each for the model inputs of ``GET /v1/plan``
    (``[{"shape": ["n", ...], "dtype": ...}, ...]``) in ``form`` (``json`` | ``safetensors``)."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(seed)
    bodies = []
    for _ in range(count):
        xs = [_sample(spec["shape"][1:], spec["dtype"], gen) for spec in inputs]
        if form == "safetensors":
            named = {f"input_{j}": x for j, x in enumerate(xs)}
            bodies.append(Body(save(named), "application/octet-stream"))
        else:
            doc = json.dumps({"inputs": [x.tolist() for x in xs]}).encode()
            bodies.append(Body(doc, "application/json"))
    return bodies


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{label=value,...}": value}``, without histogram buckets and
    ``_created`` timestamps (kept: ``_sum`` and ``_count``, every counter and gauge)."""
    from prometheus_client.parser import text_string_to_metric_families

    flat: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            flat[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return flat


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _outcome(status: int) -> str:
    if status == 200:
        return "completed"
    if status == 429:
        return "rejected"
    return "failed" if status >= 500 else "error"


async def _one(
    client: httpx.AsyncClient, i: int, arrival: float, send: float, body: Body, clock: Any
) -> RequestRecord:
    """Send request ``i`` and record its answer (a transport error is an ``error`` record;
    httpx's own timeout a ``timeout`` one)."""
    try:
        r = await client.post("/v1/infer", content=body.content,
                              headers={"Content-Type": body.content_type})  # fmt: skip
    except httpx.TimeoutException as exc:
        return RequestRecord(i, arrival, send, None, None, "timeout", error=type(exc).__name__)
    except httpx.HTTPError as exc:
        return RequestRecord(
            i, arrival, send, None, None, "error", error=f"{type(exc).__name__}: {exc}"[:200]
        )
    done = clock()
    retry = _retry_after(r) if r.status_code == 429 else None
    err = None if r.status_code == 200 else r.text[:200]
    return RequestRecord(i, arrival, send, done, r.status_code, _outcome(r.status_code), retry, err)


async def _scrape(
    client: httpx.AsyncClient, clock: Any, stop: asyncio.Event, out: list[dict[str, Any]],
    interval_s: float,
) -> None:  # fmt: skip
    """``GET /metrics`` every ``interval_s`` until ``stop`` (and once more then): the time
    series scaling events and the queue are read from."""
    while True:
        t = clock()
        try:
            r = await client.get("/metrics", timeout=5.0)
            if r.status_code == 200:
                out.append({"t_s": t, "metrics": await asyncio.to_thread(parse_metrics, r.text)})
            else:
                out.append({"t_s": t, "error": f"HTTP {r.status_code}"})
        except httpx.HTTPError as exc:
            out.append({"t_s": t, "error": f"{type(exc).__name__}: {exc}"[:200]})
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (clock() - t)))


async def _dispatch(
    client: httpx.AsyncClient, times: Sequence[float], bodies: Sequence[Body], clock: Any,
    deadline: float, tasks: dict[int, asyncio.Task[RequestRecord]], sent_at: dict[int, float],
) -> None:  # fmt: skip
    """Start request ``i`` at ``times[i]`` (open loop) until the trace or the time runs out."""
    for i, t in enumerate(times):
        delay = t - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        now = clock()
        if now >= deadline:
            return
        sent_at[i] = now
        tasks[i] = asyncio.create_task(_one(client, i, t, now, bodies[i % len(bodies)], clock))


async def _run(
    url: str, trace: ArrivalTrace, *, slo_s: float | None, api_key: str | None,
    max_requests: int, grace_s: float, form: str, scrape_s: float, seed: int,
) -> LoadResult:  # fmt: skip
    headers = auth_headers(api_key)
    times = trace.times[:max_requests]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as probe:
        r = await probe.get("/v1/plan")
        r.raise_for_status()
        plan = r.json()
    chosen = choose_form(plan["inputs"], form)
    bodies = await asyncio.to_thread(build_bodies, plan["inputs"], chosen, BODY_POOL, seed)
    bound = trace.duration_s + grace_s
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=64)
    timeout = httpx.Timeout(bound, pool=None)
    loop = asyncio.get_running_loop()
    zero = loop.time() + LEAD_S

    def clock() -> float:
        return loop.time() - zero

    tasks: dict[int, asyncio.Task[RequestRecord]] = {}
    sent_at: dict[int, float] = {}
    series: list[dict[str, Any]] = []
    stop = asyncio.Event()
    started = time.time()
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as client,
        httpx.AsyncClient(base_url=url, headers=headers) as scraper,
    ):
        scraping = asyncio.create_task(_scrape(scraper, clock, stop, series, scrape_s))
        dispatcher = asyncio.create_task(
            _dispatch(client, times, bodies, clock, bound, tasks, sent_at)
        )
        await asyncio.wait({dispatcher}, timeout=max(0.0, bound - clock()))
        dispatcher.cancel()
        pending = [t for t in tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, bound - clock()))
        records = _collect(times, tasks, sent_at)
        stop.set()
        await asyncio.wait({scraping}, timeout=10.0)
        scraping.cancel()
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), scraping, return_exceptions=True)
    return LoadResult(
        url=url, trace=trace, slo_s=slo_s, form=chosen, records=records, metrics=series,
        plan=plan, truncated=len(trace.times) - len(times), started_unix=started,
        wall_s=time.time() - started,
    )  # fmt: skip


def _collect(
    times: Sequence[float], tasks: dict[int, asyncio.Task[RequestRecord]], sent_at: dict[int, float]
) -> list[RequestRecord]:
    """Every sent request's record; one still out at the bound is a ``timeout``."""
    out = []
    for i in sorted(tasks):
        t = tasks[i]
        if t.done() and not t.cancelled() and t.exception() is None:
            out.append(t.result())
        else:
            out.append(RequestRecord(i, times[i], sent_at[i], None, None, "timeout",
                                     error="no answer within the bound"))  # fmt: skip
    return out


def run_load(
    url: str,
    trace: ArrivalTrace,
    *,
    slo_s: float | None = None,
    api_key: str | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    grace_s: float = DEFAULT_GRACE_S,
    form: str = "auto",
    scrape_s: float = SCRAPE_INTERVAL_S,
    seed: int = 0,
) -> LoadResult:
    """Play ``trace`` against the server at ``url`` open-loop (see the module docstring)."""
    if max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    if form not in ("auto", "json", "safetensors"):
        raise ValueError(f"form must be auto, json or safetensors, got {form!r}")
    return asyncio.run(
        _run(url, trace, slo_s=slo_s, api_key=api_key, max_requests=max_requests,
             grace_s=grace_s, form=form, scrape_s=scrape_s, seed=seed)
    )  # fmt: skip


async def _closed(
    url: str, body: Body, concurrency: int, duration_s: float, warmup_s: float,
    api_key: str | None,
) -> dict[str, Any]:  # fmt: skip
    limits = httpx.Limits(max_connections=concurrency + 4)
    headers = {**auth_headers(api_key), "Content-Type": body.content_type}
    t0 = time.perf_counter()
    done: list[tuple[float, float, int]] = []  # (end, latency, status)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() - t0 < duration_s:
            s = time.perf_counter()
            try:
                r = await client.post("/v1/infer", content=body.content, headers=headers)
                status = r.status_code
            except httpx.HTTPError:
                status = 0  # counted as not ok; the loop goes on
            e = time.perf_counter()
            done.append((e - t0, e - s, status))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=duration_s + 60) as c:
        await asyncio.wait_for(
            asyncio.gather(*(client_loop(c) for _ in range(concurrency))), duration_s + 90
        )
    ok = [(end, lat) for end, lat, st in done if st == 200]
    window = [lat for end, lat in ok if warmup_s <= end <= duration_s]
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "completed": len(ok),
        "not_ok": len(done) - len(ok),
        "throughput_rps": len(window) / (duration_s - warmup_s),
        "latency_p50_s": percentile([lat for _, lat in ok], 50),
    }


def closed_loop(
    url: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    api_key: str | None = None,
    form: str = "auto",
) -> dict[str, Any]:
    """``concurrency`` clients each sending the next request when the last is answered, for
    ``duration_s``: the saturated throughput (completions after ``warmup_s`` per second) and
    the median latency. With ``concurrency=1``: the unloaded latency."""
    if not 0 <= warmup_s < duration_s:
        raise ValueError("need 0 <= warmup_s < duration_s")
    plan = httpx.get(f"{url}/v1/plan", headers=auth_headers(api_key), timeout=10).json()
    (body,) = build_bodies(plan["inputs"], choose_form(plan["inputs"], form), count=1)
    return asyncio.run(_closed(url, body, concurrency, duration_s, warmup_s, api_key))


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a few aligned lines for a terminal."""

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e3:.0f} ms"

    def rate(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}/s"

    return "\n".join(
        [
            f"trace      {s['trace']}",
            f"sent       {s['sent']} (truncated {s['truncated']}): completed {s['completed']}, "
            f"rejected {s['rejected']}, failed {s['failed']}, error {s['error']}, "
            f"timeout {s['timeout']}, lost {s['lost']}",
            f"latency    mean {ms(s['latency_mean_s'])}, p50 {ms(s['latency_p50_s'])}, "
            f"p95 {ms(s['latency_p95_s'])}, p99 {ms(s['latency_p99_s'])}",
            f"goodput    {s['goodput']} within {ms(s['slo_s'])} ({rate(s['goodput_rps'])}); "
            f"throughput {rate(s['throughput_rps'])}",
            f"generator  send lag p99 {ms(s['send_lag_p99_s'])}, {s['scrapes']} scrapes, "
            f"{s['wall_s']:.1f} s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--trace", required=True,
                    help="an arrival trace spec, e.g. poisson:rate=20,duration=30,seed=1")  # fmt: skip
    ap.add_argument("--slo-ms", type=float, default=None, help="latency target for goodput")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--form", default="auto", choices=("auto", "json", "safetensors"))
    ap.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    ap.add_argument("--grace-s", type=float, default=DEFAULT_GRACE_S)
    ap.add_argument("--out", default=None, help="write the whole result (JSON) here")
    args = ap.parse_args(argv)
    from coinfer.errors import InputError

    try:
        trace = make_trace(args.trace)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    slo = None if args.slo_ms is None else args.slo_ms / 1e3
    res = run_load(args.url.rstrip("/"), trace, slo_s=slo, api_key=args.api_key,
                   max_requests=args.max_requests, grace_s=args.grace_s, form=args.form)  # fmt: skip
    print(format_summary(res.summary()))
    if args.out:
        Path(args.out).write_text(json.dumps(res.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
