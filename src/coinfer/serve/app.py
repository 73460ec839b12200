"""The HTTP routes over a :class:`~.service.Service` (FastAPI).

``POST /v1/infer`` (JSON or safetensors, see :mod:`.codecs`), ``GET /healthz``, ``GET /v1/plan``
``GET /metrics`` (Prometheus text), and the live dashboard: ``GET /`` (the page),
``/dashboard/...`` (its scripts), ``GET /v1/live`` (server-sent snapshots, :mod:`.live`) and
``GET /v1/live.json`` (one snapshot). Every answer carries ``X-Request-Id`` (the client's,
when it sent a sane one, else a fresh one) and every error is one JSON line
``{"error": "..."}`` with its status — never a traceback, never a hang:

- 400 unparseable body, 401 missing/wrong API key, 404/405 unknown route or method,
  413 body or batch too large, 415 unknown content type, 422 breaks the input contract,
  429 queue full (``Retry-After``, seconds), 503 session failed / shutting down / no result
  within the request timeout, 500 a bug (named by its exception type only).

The body is read in chunks against a limit (the largest legal request; ``Content-Length`` is
checked first but not trusted), so an oversized upload is cut off, not buffered. ``/healthz``
needs no key (load balancers probe it), nor does the dashboard page and its static files
(they hold no data); everything else does when the server has one — the live routes also as
``?key=`` (see :mod:`.auth`).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..errors import PeerError
from . import codecs, live
from .auth import authorised
from .batcher import QueueFull, Unavailable

# A client's request id is echoed only if it looks like an id (bounded, no control or
# separator characters that could split a log line or a header).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
PUBLIC_PATHS = frozenset({"/healthz"})
# The dashboard: its page and static files are public (no data in them); the live routes
# take the key as ``?key=`` too, since a browser's EventSource cannot send headers.
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
LIVE_PATHS = frozenset({"/v1/live", "/v1/live.json"})


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == "/" or path.startswith("/dashboard/")


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Any) -> FastAPI:
    """The FastAPI application serving ``service`` (no lifespan: the caller owns start/stop)."""
    app = FastAPI(
        title="coinfer",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the API is documented in docs/serving.md; nothing to browse here
    )
    metrics = service.metrics
    key = service.options.api_key

    @app.middleware("http")
    async def request_id_and_key(request: Request, call_next: Any) -> Response:
        given = request.headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.rid = rid
        path = request.url.path
        query = request.query_params if path in LIVE_PATHS else None
        if not _public(path) and not authorised(request.headers, key, query):
            if request.url.path == "/v1/infer":
                metrics.received.inc()
                metrics.outcome("unauthorized")
            response: Response = _error(
                401,
                "missing or wrong API key (send Authorization: Bearer KEY or X-API-Key: KEY)",
                {"WWW-Authenticate": "Bearer"},
            )
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # a bug: name it, never show a traceback
                response = _error(500, f"internal error ({type(exc).__name__})")
        response.headers["X-Request-Id"] = rid
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok, doc = service.health()
        return JSONResponse(doc, status_code=200 if ok else 503)

    @app.get("/v1/plan")
    async def plan() -> JSONResponse:
        return JSONResponse(service.plan_doc())

    @app.get("/metrics")
    async def scrape() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    history = live.History(service).start()

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")

    @app.get("/v1/live.json")
    async def live_json() -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(live.snapshot, service, history))

    @app.get("/v1/live")
    async def live_stream(request: Request) -> StreamingResponse:
        return StreamingResponse(
            live.events(service, history, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        metrics.received.inc()
        status, response = await _infer(service, request)
        if status != 200:
            metrics.outcome(
                "rejected" if status == 429 else "failed" if status >= 500 else "invalid"
            )
        return response

    return app


async def _infer(service: Any, request: Request) -> tuple[int, Response]:
    """One inference request -> ``(status, response)``; counts only a completion."""
    metrics = service.metrics
    t0 = time.perf_counter()
    if service.closing:
        return 503, _error(503, "the server is shutting down")
    try:
        form = codecs.request_form(request.headers.get("content-type"))
        try:
            body = await _read_body(request, service.max_body_bytes)
        except _TooLarge:
            return 413, _error(413, f"body larger than {service.max_body_bytes} bytes")
        inputs = await asyncio.to_thread(
            codecs.decode, body, form, service.contract, service.max_request_samples
        )
    except codecs.BadInput as exc:
        return exc.status, _error(exc.status, str(exc))
    try:
        fut = service.batcher.submit(inputs)
    except QueueFull as exc:
        if not math.isfinite(exc.retry_after_s):
            return 413, _error(413, str(exc))
        retry = max(1, math.ceil(exc.retry_after_s))
        return 429, JSONResponse(
            {"error": f"{exc}; retry in {exc.retry_after_s:.2f} s",
             "retry_after_s": round(exc.retry_after_s, 3)},
            status_code=429, headers={"Retry-After": str(retry)},
        )  # fmt: skip
    except Unavailable as exc:
        return 503, _error(503, str(exc))
    timeout = service.options.request_timeout_s
    try:
        # shielded: a client that hangs up must not cancel the batcher's future
        outputs = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
    except (Unavailable, PeerError) as exc:
        return 503, _error(503, str(exc))
    except TimeoutError:
        return 503, _error(503, f"no result within {timeout:g} s")
    out_form = codecs.response_form(form, request.headers.get("accept"))
    payload, media = await asyncio.to_thread(codecs.encode, outputs, out_form)
    elapsed = time.perf_counter() - t0
    metrics.latency.observe(elapsed)
    metrics.outcome("completed")
    metrics.samples.inc(int(inputs[0].shape[0]))
    slo = service.options.slo_s
    if slo is not None and elapsed <= slo:
        metrics.goodput.inc()
    return 200, Response(payload, media_type=media)


__all__ = ["LIVE_PATHS", "PUBLIC_PATHS", "create_app"]
