"""The HTTP surface in-process (Starlette's test client) over a real Service whose session is
a stand-in: statuses, headers, one-line errors, auth, and metrics that add up. No workers."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load, save
from starlette.testclient import TestClient

from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.errors import PeerError
from coinfer.serve.app import create_app
from coinfer.serve.codecs import SampleSpec
from coinfer.serve.service import ServeOptions, Service

SPEC = (SampleSpec((3,), torch.float32),)
KEY = "k" * 32


class StubSession:
    """What a Service reads of a runtime Session; answers ``2x + 1`` per row."""

    window = 2
    devices = ("a", "b", "c")
    alive = ("a", "b", "c")
    source = "a"
    check_threads = 1

    def __init__(self):
        self.plan = Plan(
            "manual", "throughput", (Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c"))),
            Metrics(0.001, 0.002),
        )  # fmt: skip
        self.hold = threading.Event()
        self.held: list[tuple[Future, torch.Tensor]] = []
        self.fail: BaseException | None = None
        self.closed = False
        self.telemetry = [
            {"epoch": 0, "device": "a", "utilisation": 0.25, "compute_ms": 1.5,
             "links": {"b": {"achieved_Bps": 1e6}}},
            {"epoch": 0, "device": "b", "utilisation": 0.5, "compute_ms": 2.0, "links": {}},
            {"epoch": 0, "device": "c", "utilisation": 0.7, "compute_ms": None, "links": {}},
        ]  # fmt: skip

    def submit(self, inputs):
        fut: Future = Future()
        if self.fail is not None:
            fut.set_exception(self.fail)
        elif self.hold.is_set():
            self.held.append((fut, inputs[0]))
        else:
            fut.set_result([inputs[0] * 2 + 1])
        return fut

    def close(self, timeout_s=None):
        self.closed = True
        return "report"


@pytest.fixture
def served():
    session = StubSession()
    options = ServeOptions(microbatch=2, batch_wait_s=0.0, drain_timeout_s=2.0)
    service = Service(session, SPEC, options, model="stub")
    with TestClient(create_app(service)) as client:
        yield client, service, session
    service.close()


def _samples(families, name):
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in families for s in f.samples if s.name == name
    }  # fmt: skip


def test_json_inference_and_request_ids(served):
    client, _, _ = served
    x = torch.randn(3, 3)
    r = client.post("/v1/infer", json={"inputs": [x.tolist()]}, headers={"X-Request-Id": "abc-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "abc-1"
    assert torch.equal(torch.tensor(r.json()["outputs"][0]), x * 2 + 1)
    r2 = client.post(
        "/v1/infer", json={"inputs": [x.tolist()]}, headers={"X-Request-Id": "a b\x01"}
    )
    assert r2.status_code == 200 and len(r2.headers["x-request-id"]) == 32  # not echoed: generated


def test_safetensors_inference_and_accept(served):
    client, _, _ = served
    x = torch.randn(5, 3)
    body = save({"input_0": x})
    r = client.post("/v1/infer", content=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert torch.equal(load(r.content)["output_0"], x * 2 + 1)
    r = client.post(
        "/v1/infer", content=body,
        headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
    )  # fmt: skip
    assert torch.equal(torch.tensor(r.json()["outputs"][0]), x * 2 + 1)


@pytest.mark.parametrize(
    ("kwargs", "status", "match"),
    [
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "not JSON"),
        ({"json": {"inputs": [[[1, 2]]]}}, 422, "expected shape"),
        ({"json": {"inputs": [[[1, 2, 3]]], "x": 1}}, 422, "unknown field"),
        ({"content": b"\x80\x03}q", "headers": {"Content-Type": "application/python-pickle"}},
         415, "Content-Type"),
        ({"json": {"inputs": [[[0, 0, 0]] * 17]}}, 413, "at most 16"),
        ({"content": b"x" * 10_000_000, "headers": {"Content-Type": "application/json"}},
         413, "body larger"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_errors(served, kwargs, status, match):
    client, _, _ = served
    r = client.post("/v1/infer", **kwargs)
    assert r.status_code == status
    doc = r.json()
    assert set(doc) == {"error"} and match in doc["error"] and "\n" not in doc["error"]
    assert "Traceback" not in r.text and r.headers["x-request-id"]


def test_unknown_route_and_method_are_json(served):
    client, _, _ = served
    assert client.get("/nope").json() == {"error": "Not Found"}
    r = client.get("/v1/infer")
    assert r.status_code == 405 and "error" in r.json()


def test_queue_full_is_429_with_retry_after(served):
    client, service, session = served
    session.hold.set()
    cap = service.capacity  # 4 x window 2 x mb 2 = 16
    first = service.batcher.submit([torch.zeros(2, 3)])  # in flight (and held)
    for _ in range(3):  # the pipeline's budget (FEED_AHEAD x window) fills first
        service.batcher.submit([torch.zeros(2, 3)])
    import time

    time.sleep(0.1)
    service.batcher.submit([torch.zeros(cap, 3)])
    r = client.post("/v1/infer", json={"inputs": [[[0, 0, 0]]]})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_s"] > 0
    session.hold.clear()
    while session.held:
        fut, x = session.held.pop(0)
        fut.set_result([x])
    assert first.result(timeout=2)


def test_session_failure_is_503_and_health_follows(served):
    client, _, session = served
    assert client.get("/healthz").json()["status"] == "ok"
    session.fail = PeerError("device c: killed; no device left to fail over to")
    r = client.post("/v1/infer", json={"inputs": [[[1, 2, 3]]]})
    assert r.status_code == 503 and "device c" in r.json()["error"]
    h = client.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "failed"
    r = client.post("/v1/infer", json={"inputs": [[[1, 2, 3]]]})
    assert r.status_code == 503


def test_plan_document(served):
    client, _, _ = served
    doc = client.get("/v1/plan").json()
    assert doc["plan"]["stages"][1]["devices"] == ["b", "c"]
    assert doc["microbatch"] == 2 and doc["inputs"] == [{"shape": ["n", 3], "dtype": "float32"}]
    assert doc["max_request_samples"] == 16


def test_metrics_add_up_and_read_telemetry(served):
    client, _, _ = served
    for _ in range(3):
        client.post("/v1/infer", json={"inputs": [[[1, 2, 3]]]})
    client.post("/v1/infer", json={"inputs": [[[1, 2]]]})
    fams = list(text_string_to_metric_families(client.get("/metrics").text))
    outcomes = _samples(fams, "coinfer_requests_total")
    received = _samples(fams, "coinfer_requests_received_total")[()]
    assert received == 4 == sum(outcomes.values())
    assert outcomes[(("outcome", "completed"),)] == 3
    assert outcomes[(("outcome", "invalid"),)] == 1
    assert _samples(fams, "coinfer_request_latency_seconds_count")[()] == 3
    util = _samples(fams, "coinfer_device_utilisation")
    assert util[(("device", "b"),)] == 0.5
    stage = _samples(fams, "coinfer_stage_utilisation")
    assert stage[(("devices", "b,c"), ("stage", "1"))] == pytest.approx(0.6)
    assert (
        _samples(fams, "coinfer_link_achieved_bytes_per_second")[(("dst", "b"), ("src", "a"))]
        == 1e6
    )
    assert _samples(fams, "coinfer_samples_completed_total")[()] == 3
    mbs = _samples(fams, "coinfer_microbatches_total")
    assert sum(mbs.values()) == 3  # one padded micro-batch per single-sample request


def test_api_key_is_enforced_everywhere_but_healthz():
    session = StubSession()
    service = Service(
        session, SPEC, ServeOptions(microbatch=2, batch_wait_s=0.0, api_key=KEY), model="stub"
    )
    body = {"inputs": [[[1, 2, 3]]]}
    with TestClient(create_app(service)) as client:
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
            r = client.post("/v1/infer", json=body, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/plan").status_code == 401
        assert (
            client.post(
                "/v1/infer", json=body, headers={"Authorization": f"Bearer {KEY}"}
            ).status_code
            == 200
        )
        assert client.post("/v1/infer", json=body, headers={"X-API-Key": KEY}).status_code == 200
        text = client.get("/metrics", headers={"X-API-Key": KEY}).text
    fams = list(text_string_to_metric_families(text))
    assert _samples(fams, "coinfer_requests_total")[(("outcome", "unauthorized"),)] == 3
    service.close()
    assert session.closed


def test_close_refuses_new_requests(served):
    client, service, _ = served
    service.close()
    r = client.post("/v1/infer", json={"inputs": [[[1, 2, 3]]]})
    assert r.status_code == 503 and "shutting down" in r.json()["error"]
    assert json.loads(client.get("/healthz").text)["status"] == "closing"
