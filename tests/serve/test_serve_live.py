"""The dashboard's data (:mod:`coinfer.serve.live`) over a stand-in service: utilisation and
link bandwidth derived from telemetry records, a bounded history, events, JSON that a browser
parses (no NaN); and the routes: the snapshot stream ends when the service closes, when the
client leaves, and on its own (so a stopping server never waits for an open dashboard); the
key is taken from ``?key=`` on the live routes only."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.testclient import TestClient

from coinfer.serve import live
from coinfer.serve.app import create_app
from coinfer.serve.server import bind, make_server, url_of

KEY = "k" * 32


def _link(src, dst, mbps, medium=None):
    return SimpleNamespace(
        src=src, dst=dst, bandwidth_Bps=mbps * 125_000.0, latency_s=0.002, medium=medium
    )


class FakeSession:
    def __init__(self, telemetry=None, now=10.0):
        names = ("a", "b", "c", "d")
        self.cluster = SimpleNamespace(
            devices=tuple(SimpleNamespace(name=n, kind="cpu", gflops=10.0) for n in names),
            all_links=tuple(_link(u, v, 100) for u in names for v in names if u != v),
        )
        self.alive = names
        self.telemetry = list(telemetry or [])
        self.t = now

    def now(self):
        return self.t


class FakeMetrics:
    """The counters :class:`~coinfer.serve.metrics.ServeMetrics` keeps (same names), alone."""

    def __init__(self):
        reg = CollectorRegistry()
        self.outcomes = Counter("coinfer_requests", "", ["outcome"], registry=reg)
        self.samples = Counter("coinfer_samples_completed", "", registry=reg)
        self.received = Counter("coinfer_requests_received", "", registry=reg)
        self.latency = Histogram(
            "coinfer_request_latency_seconds", "", buckets=(0.01, 0.025, 0.05, 0.1), registry=reg
        )

    def outcome(self, name):
        self.outcomes.labels(name).inc()

    def render(self):
        return b""


class FakeService:
    """What :func:`live.snapshot` and the app read of a :class:`Service`."""

    def __init__(self, session=None, api_key=None):
        self.session = session or FakeSession()
        self.model = "fake"
        self.capacity = 16
        self.failovers = 0
        self.handovers = 0
        self.closing = False
        self.options = SimpleNamespace(api_key=api_key)
        self.batcher = SimpleNamespace(queued_samples=3, inflight=2, throughput=lambda: (8.0, 2.0))
        self.metrics = FakeMetrics()
        self.health_calls = 0
        self.stages = [
            {"pieces": [0, 1], "devices": ["a"]},
            {"pieces": [2, 4], "devices": ["b", "c"]},
        ]

    def plan_doc(self):
        return {
            "model": self.model, "source": "a", "microbatch": 2, "window": 3,
            "plan": {"algo": "manual", "objective": "throughput", "stages": self.stages,
                     "predicted": {"latency_s": 0.05, "period_s": 0.02}},
        }  # fmt: skip

    def health(self):
        self.health_calls += 1
        return True, {"status": "ok"}


def _rec(device, t, util, links=None, epoch=0, window=0.5):
    return {
        "t_s": t, "epoch": epoch, "device": device, "window_s": window, "computes": 10,
        "compute_ms": 1e3 * util * window / 10, "utilisation": util, "cpu_s": 0.0,
        "links": links or {},
    }  # fmt: skip


def _by(items, key):
    return {x[key]: x for x in items}


def test_utilisation_and_link_bandwidth_come_from_the_newest_record():
    tel = [  # in arrival order, as a session keeps them
        _rec("d", 5.0, 0.8, {"a": {"transfers": 1, "bytes": 1e6, "busy_s": 0.5}}),  # stale
        _rec("a", 9.0, 0.9, {"b": {"transfers": 3, "bytes": 1e5, "busy_s": 0.1}}),
        _rec("c", 9.4, 0.6, epoch=1),
        _rec("a", 9.5, 0.4, {"b": {"transfers": 10, "bytes": 1e6, "busy_s": 0.25}}),
        _rec("b", 9.6, 0.7, {"a": {"transfers": 10, "bytes": 5e3, "busy_s": 0.0}}),
        _rec("c", 9.6, 0.2, epoch=0),  # the old epoch's last word: the newer epoch wins
    ]
    snap = live.snapshot(FakeService(FakeSession(tel, now=10.0)))
    devs = _by(snap["devices"], "name")
    assert devs["a"]["util"] == pytest.approx(0.4) and not devs["a"]["stale"]
    assert devs["b"]["util"] == pytest.approx(0.7)
    assert devs["c"]["util"] == pytest.approx(0.6)
    assert devs["d"]["stale"] and devs["d"]["stage"] is None
    assert devs["b"]["stage"] == 1 and devs["a"]["alive"]
    links = {(lk["src"], lk["dst"]): lk for lk in snap["links"]}
    ab = links[("a", "b")]
    assert ab["rate_Bps"] == pytest.approx(1e6 / 0.5)  # bytes over the interval
    assert ab["busy"] == pytest.approx(0.25 / 0.5)
    assert ab["achieved_Bps"] == pytest.approx(1e6 / 0.25)  # bytes over busy seconds
    assert ab["nominal_Bps"] == pytest.approx(100 * 125_000)
    assert links[("b", "a")]["achieved_Bps"] is None  # no busy time: no speed to claim
    assert "rate_Bps" not in links[("d", "a")]  # a stale device's traffic is not "now"
    assert "rate_Bps" not in links[("c", "d")]
    # the Gantt: one bar per record of the last GANTT_S seconds, covering its interval
    bars = snap["gantt"]["bars"]
    assert len(bars) == len(tel)
    a_bar = next(b for b in bars if b["device"] == "a" and b["end_s"] == 9.5)
    assert a_bar["start_s"] == pytest.approx(9.0) and a_bar["util"] == pytest.approx(0.4)
    assert snap["summary"]["queue_samples"] == 3 and snap["summary"]["devices_alive"] == 4
    later = live.snapshot(FakeService(FakeSession(tel, now=9.55 + live.GANTT_S)))
    assert sorted(b["end_s"] for b in later["gantt"]["bars"]) == [9.6, 9.6]


def test_no_telemetry_and_non_finite_values_still_give_valid_json():
    service = FakeService(FakeSession([], now=0.5))
    service.session.now = None  # a session without a clock
    service.scaling_events = [
        {"t_s": 1.0, "kind": "scale_out", "stage": 1, "device": "d", "reason": "queue",
         "serving_s": math.nan}
    ]  # fmt: skip
    snap = live.snapshot(service)
    json.dumps(snap, allow_nan=False)
    assert all(d["util"] is None and d["stale"] for d in snap["devices"])
    assert snap["gantt"]["bars"] == [] and snap["history"] == []
    assert snap["events"][0]["kind"] == "scale_out" and snap["events"][0]["serving_s"] is None
    bare = SimpleNamespace(session=None, model="m", plan_doc=dict, health=lambda: (True, {}))
    assert live.snapshot(bare)["devices"] == []


def test_history_is_bounded_and_its_rates_add_up():
    service = FakeService()
    history = live.History(service, keep=5)
    m = service.metrics
    for i in range(20):
        for _ in range(3):
            m.outcome("completed")
            m.samples.inc(2)
            m.latency.observe(0.03)
        m.outcome("rejected")
        history.sample(t_s=float(i))
    points = history.to_list()
    assert len(points) == 5
    assert [p["t_s"] for p in points] == [15.0, 16.0, 17.0, 18.0, 19.0]
    last = points[-1]
    assert last["rps"] == pytest.approx(3.0) and last["samples_ps"] == pytest.approx(6.0)
    assert last["rejected_ps"] == pytest.approx(1.0)
    assert last["mean_ms"] == pytest.approx(30.0)
    assert 25.0 <= last["p50_ms"] <= 50.0  # inside the histogram bucket holding 30 ms
    recent = history.recent(seconds=3)
    assert recent["rps"] == pytest.approx(3.0)


def test_a_failover_seen_by_the_history_becomes_an_event_naming_the_lost_device():
    service = FakeService()
    history = live.History(service)
    history.sample(t_s=1.0)
    service.session.alive = ("a", "b", "d")  # the loss is detected ...
    history.sample(t_s=2.0)
    service.failovers = 1  # ... the new plan runs a moment later
    service.stages = [{"pieces": [0, 4], "devices": ["a", "b"]}]
    history.sample(t_s=3.0)
    (ev,) = live.snapshot(service, history)["events"]
    assert ev["kind"] == "failover" and ev["device"] == "c" and "a+b" in ev["reason"]
    assert not _by(live.snapshot(service, history)["devices"], "name")["c"]["alive"]


def test_quantile_interpolates_inside_buckets():
    buckets = [(0.01, 0.0), (0.02, 10.0), (math.inf, 10.0)]
    assert live.quantile(0.5, buckets) == pytest.approx(0.015)
    assert live.quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]) is None
    assert live.quantile(0.99, [(0.01, 1.0), (math.inf, 5.0)]) == pytest.approx(0.01)


def _events(body: str) -> list[dict]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def test_the_stream_ends_when_the_service_closes():
    service = FakeService()
    client = TestClient(create_app(service))
    closer = threading.Timer(1.5, lambda: setattr(service, "closing", True))
    closer.start()
    t0 = time.monotonic()
    r = client.get("/v1/live")  # the test client returns once the stream has ended
    assert time.monotonic() - t0 < live.STREAM_MAX_S
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    first, *_ = _events(r.text)
    assert first["model"] == "fake" and first["plan"]["stages"][1]["devices"] == ["b", "c"]
    assert r.text.startswith("retry: ")
    snap = client.get("/v1/live.json").json()
    assert {d["name"] for d in snap["devices"]} == {"a", "b", "c", "d"}


def test_a_stream_ends_by_itself():
    service = FakeService()

    async def never() -> bool:
        return False

    async def collect() -> list[str]:
        return [e async for e in live.events(service, None, never, period_s=0.05, max_s=0.3)]

    chunks = asyncio.run(asyncio.wait_for(collect(), 5))
    assert 3 <= len(chunks) <= 8
    assert all(c.endswith("\n\n") for c in chunks)


def test_dashboard_is_public_and_the_live_routes_take_the_key_in_the_query():
    service = FakeService(api_key=KEY)
    service.closing = True  # streams end at once
    client = TestClient(create_app(service))
    page = client.get("/")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert client.get("/dashboard/dashboard.js").status_code == 200
    assert client.get("/dashboard/vendor/echarts.min.js").status_code == 200
    assert client.get("/v1/live.json").status_code == 401
    assert client.get("/v1/live.json?key=wrong-key-0123456789").status_code == 401
    assert client.get(f"/v1/live.json?key={KEY}").status_code == 200
    assert client.get(f"/v1/live?key={KEY}").status_code == 200
    assert client.get("/v1/live.json", headers={"X-API-Key": KEY}).status_code == 200
    # only the read-only live routes take a key in the URL
    assert client.get(f"/v1/plan?key={KEY}").status_code == 401
    assert client.post(f"/v1/infer?key={KEY}", json={"inputs": []}).status_code == 401


@pytest.fixture
def real_server():
    """The app on a real uvicorn (in a thread), as ``coinfer serve`` runs it."""
    service = FakeService()
    server = make_server(create_app(service), graceful_s=30)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield service, server, thread, url_of(sock)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_a_client_that_leaves_ends_its_stream(real_server):
    service, _, _, url = real_server
    with httpx.stream("GET", f"{url}/v1/live", timeout=10) as r:
        line = next(ln for ln in r.iter_lines() if ln.startswith("data:"))
        assert json.loads(line[5:])["status"] == "ok"
    time.sleep(1.5 * live.STREAM_PERIOD_S)  # the generator notices at its next period
    calls = service.health_calls
    time.sleep(2.5 * live.STREAM_PERIOD_S)
    assert service.health_calls == calls  # no snapshot taken for a client that is gone


def test_an_open_dashboard_does_not_hold_a_stopping_server(real_server):
    _, server, thread, url = real_server
    got: list[str] = []

    def watch() -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/live", timeout=30) as r:
                for ln in r.iter_lines():
                    got.append(ln)
        except httpx.HTTPError:
            pass

    viewer = threading.Thread(target=watch, daemon=True)
    viewer.start()
    deadline = time.monotonic() + 10
    while not any(ln.startswith("data:") for ln in got) and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    server.should_exit = True
    thread.join(live.STREAM_MAX_S + 5)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < live.STREAM_MAX_S + 3
    viewer.join(5)
