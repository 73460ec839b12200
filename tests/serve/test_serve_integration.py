"""``coinfer serve`` for real: the CLI in a subprocess, three worker processes behind it, and
an HTTP client hammering it — outputs equal to the unsplit model's, back-pressure, auth,
metrics that add up, and a SIGTERM that finishes the requests in flight and leaves no worker
behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load, save

from coinfer.runtime.processes import descendants as _descendants
from coinfer.runtime.processes import running as _alive
from coinfer.zoo import load_model

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)
KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MB = 2
# Link latency of the test cluster: slow enough that a burst overfills the queue (each hop
# holds its link this long), fast enough that the whole test takes seconds.
LATENCY_MS = 20


def _cluster_yaml() -> str:
    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, "
        "emulate: {cpu_quota: 1.0, threads: 1}}"
        for d in "abc"
    )
    links = "\n".join(
        f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 1000, latency_ms: {LATENCY_MS}}}"
        for u, v in (("a", "b"), ("a", "c"), ("b", "c"))
    )
    return f"name: t\nsource: a\ndevices:\n{rows}\nlinks:\n{links}\n"


PLAN = {
    "algo": "manual",
    "objective": "throughput",
    "stages": [{"pieces": [0, 1], "devices": ["a"]}, {"pieces": [2, 4], "devices": ["b", "c"]}],
    "predicted": {"latency_s": 0.05, "period_s": 0.02},
    "planning_time_s": 0.0,
}


def _reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unsplit model's rows for ``x``, each computed in a micro-batch of ``MB`` (the
    server's; a row's result does not depend on its position or its neighbours)."""
    rows = [model(torch.cat([x[i : i + 1], torch.zeros(MB - 1, 64)]))[:1] for i in range(len(x))]
    return torch.cat(rows)


def _start(tmp_path: Path, **popen: object) -> tuple[subprocess.Popen[str], str]:
    (tmp_path / "cluster.yaml").write_text(_cluster_yaml())
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COINFER_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinfer", "serve", MLP, "--input-shape", "1,64",
         "--partition", "sequential", "--cluster", str(tmp_path / "cluster.yaml"),
         "--plan", str(tmp_path / "plan.json"), "--port", "0", "--microbatch", str(MB),
         "--queue-limit", "4", "--slo-ms", "500", "--batch-wait-ms", "5", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen,  # type: ignore[call-overload]
    )  # fmt: skip
    url = None
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"on (http://\S+) ", line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        pytest.fail(f"the server did not start: {proc.communicate(timeout=10)[1][-2000:]}")
    while time.monotonic() < deadline:  # the URL is printed just before uvicorn serves
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return proc, url


@pytest.fixture
def server(tmp_path):
    proc, url = _start(tmp_path)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.integration
def test_ctrl_c_in_a_terminal_stops_the_server_cleanly(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group: the server must still
    finish cleanly — its workers and their zygote run in sessions of their own, so they do
    not die under it (they printed a KeyboardInterrupt and the server hung before)."""
    proc, url = _start(tmp_path, start_new_session=True)
    try:
        r = httpx.post(f"{url}/v1/infer", json={"inputs": [[[0.5] * 64]]}, headers=AUTH, timeout=60)
        assert r.status_code == 200
        below = _descendants(proc.pid)
        assert below  # the zygote and the workers
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert "stopped (SIGINT)" in out + err
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in below if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.integration
def test_serve_end_to_end(server):
    proc, url = server
    torch.manual_seed(0)
    model, _ = load_model(MLP, (1, 64))
    torch.set_num_threads(1)  # the workers' intra-op threads (threads: 1 in the cluster)
    client = httpx.Client(base_url=url, timeout=60)
    counts = {"ok": 0, "429": 0, "401": 0, "invalid": 0, "samples": 0}
    lock = threading.Lock()

    def bump(key: str, n: int = 1) -> None:
        with lock:
            counts[key] += n

    # public health, everything else behind the key
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/v1/infer", json={"inputs": [[[0.0] * 64]]})
    assert r.status_code == 401 and r.headers["x-request-id"]
    bump("401")
    r = client.post("/v1/infer", json={"inputs": [[[0.0] * 64]]}, headers={"X-API-Key": "nope"})
    assert r.status_code == 401
    bump("401")
    plan = client.get("/v1/plan", headers=AUTH).json()
    assert [s["devices"] for s in plan["plan"]["stages"]] == [["a"], ["b", "c"]]
    assert plan["microbatch"] == MB and plan["threads"] == 1
    window = plan["window"]

    # bad input over the wire: one line, the right status
    for body, status in (({"inputs": [[[0.0] * 63]]}, 422), ({"inputs": [], "x": 1}, 422)):
        r = client.post("/v1/infer", json=body, headers=AUTH)
        assert r.status_code == status and set(r.json()) == {"error"}
        bump("invalid")

    # concurrent clients, JSON and safetensors, 1-3 samples each (3 spans two micro-batches);
    # a 429 is retried after the hint, as a client should
    def call(i: int) -> None:
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(1 + i % 3, 64, generator=gen)
        rid = f"req-{i}"
        while True:
            if i % 2:
                r = client.post(
                    "/v1/infer", content=save({"input_0": x}),
                    headers={**AUTH, "Content-Type": "application/octet-stream",
                             "X-Request-Id": rid},
                )  # fmt: skip
            else:
                r = client.post(
                    "/v1/infer",
                    json={"inputs": [x.tolist()]},
                    headers={**AUTH, "X-Request-Id": rid},
                )
            assert r.headers["x-request-id"] == rid
            if r.status_code != 429:
                break
            bump("429")
            assert int(r.headers["retry-after"]) >= 1
            time.sleep(min(r.json()["retry_after_s"], 0.2))
        assert r.status_code == 200, r.text
        out = load(r.content)["output_0"] if i % 2 else torch.tensor(r.json()["outputs"][0])
        with torch.inference_mode():
            ref = _reference(model, x)
        assert torch.equal(out, ref), f"request {i}: max error {(out - ref).abs().max()}"
        bump("ok")
        bump("samples", len(x))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(40)))

    # a burst beyond what the pipeline and the queue hold: some are told to come back later
    burst = 3 * (2 * window * MB + 4)
    statuses: list[int] = []

    def once(_i: int) -> None:
        r = client.post("/v1/infer", json={"inputs": [[[0.5] * 64] * MB]}, headers=AUTH)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert "queue full" in r.json()["error"] and int(r.headers["retry-after"]) >= 1

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(once, range(burst)))
    assert set(statuses) <= {200, 429} and statuses.count(429) > 0, statuses
    counts["ok"] += statuses.count(200)
    counts["429"] += statuses.count(429)
    counts["samples"] += MB * statuses.count(200)

    # the metrics add up to what the clients saw
    fams = list(text_string_to_metric_families(client.get("/metrics", headers=AUTH).text))
    flat = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples
    }  # fmt: skip
    outcome = {k[1][0][1]: v for k, v in flat.items() if k[0] == "coinfer_requests_total"}
    received = flat[("coinfer_requests_received_total", ())]
    assert received == sum(outcome.values())
    assert outcome == {
        "completed": counts["ok"], "rejected": counts["429"], "unauthorized": counts["401"],
        "invalid": counts["invalid"], "failed": 0,
    }  # fmt: skip
    assert flat[("coinfer_samples_completed_total", ())] == counts["samples"]
    assert flat[("coinfer_request_latency_seconds_count", ())] == counts["ok"]
    assert 0 < flat[("coinfer_requests_within_slo_total", ())] <= counts["ok"]
    assert any(k[0] == "coinfer_device_utilisation" for k in flat)
    mbs = sum(v for k, v in flat.items() if k[0] == "coinfer_microbatches_total")
    assert mbs >= counts["samples"] / MB

    # SIGTERM with requests in flight: they finish, the server exits 0, no worker remains
    workers = _descendants(proc.pid)
    assert len(workers) >= 3, workers
    results: list[int] = []

    def late(i: int) -> None:
        r = client.post("/v1/infer", json={"inputs": [[[float(i)] * 64]]}, headers=AUTH)
        results.append(r.status_code)

    def received() -> float:
        text = client.get("/metrics", headers=AUTH).text
        (fam,) = [f for f in text_string_to_metric_families(text)
                  if f.name == "coinfer_requests_received"]  # fmt: skip
        return fam.samples[0].value

    before = received()
    threads = [threading.Thread(target=late, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while received() < before + 4:  # all four are in the server: then stop it
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped (SIGTERM)" in out and "Traceback" not in err
    assert results == [200] * 4, results
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes left behind"
    client.close()
