"""``benchmarks/loadgen.py`` against a real ``coinfer serve`` (the zoo MLP on two emulated
devices): a short Poisson trace, every request accounted for, latencies that make sense, and a
``/metrics`` time series; the server is stopped and its process group killed at the end."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from coinfer.simulate.arrivals import make_trace

# the load generator lives with the benchmarks, not in the package
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import loadgen

MODEL = "tiny_mlp"  # the smallest zoo model: 3 linear layers, input (1, 64)
START_TIMEOUT_S = 90


def _cluster_yaml() -> str:
    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{threads: 1}}}}"
        for d in "ab"
    )
    return (
        f"name: t\nsource: a\ndevices:\n{rows}\nlinks:\n"
        "  - {src: a, dst: b, bandwidth_mbps: 1000, latency_ms: 1}\n"
    )


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``coinfer serve`` in its own process group on a free port; its URL from its stdout (a
    file: nothing to drain, so the server never blocks on a full pipe)."""
    (tmp_path / "cluster.yaml").write_text(_cluster_yaml())
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coinfer", "serve", MODEL, "--partition", "sequential",
             "--cluster", str(tmp_path / "cluster.yaml"), "--algo", "dp", "--port", "0",
             "--microbatch", "2", "--slo-ms", "500", "--timeout", "30"],
            stdout=fo, stderr=fe, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,
        )  # fmt: skip
    url = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"on (http://\S+) ", out.read_text())
        url = m.group(1) if m else None
        time.sleep(0.1)
    if url is None:
        _stop(proc)
        pytest.fail(f"the server did not start: {(tmp_path / 'stderr.txt').read_text()[-2000:]}")
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the group (a clean shutdown), then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module's tests (each start costs seconds on 2 cores)."""
    tmp = tmp_path_factory.mktemp("serve")
    proc, url = _start(tmp)
    try:
        yield url
    finally:
        _stop(proc)
        assert proc.returncode == 0, (tmp / "stderr.txt").read_text()[-2000:]


@pytest.mark.integration
def test_loadgen_accounts_for_every_request(server):
    url = server
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "never healthy"
        time.sleep(0.2)
    before = loadgen.parse_metrics(httpx.get(f"{url}/metrics", timeout=5).text)
    trace = make_trace("poisson:rate=8,duration=3,seed=4")
    res = loadgen.run_load(url, trace, slo_s=0.5, grace_s=20)
    s = res.summary()
    assert s["sent"] == len(trace.times) > 5
    assert s["completed"] + s["rejected"] + s["failed"] + s["error"] + s["timeout"] == s["sent"]
    assert s["unaccounted"] == 0 and s["truncated"] == 0
    assert s["completed"] > 0 and s["error"] == 0 and s["timeout"] == 0
    for r in res.records:
        assert r.send_s is not None and r.send_s >= r.arrival_s - 1e-3  # never early
        if r.outcome == "completed":
            assert r.status == 200 and r.latency_s is not None and r.latency_s > 0
    assert 0 < s["latency_p50_s"] <= s["latency_p99_s"] <= s["latency_max_s"]
    assert s["goodput"] is not None and 0 <= s["goodput"] <= s["completed"]
    assert res.form == "json"  # 64 numbers a sample
    # the metrics time series: at least two scrapes, and the server counted what we sent
    scrapes = [m for m in res.metrics if "metrics" in m]
    assert len(scrapes) >= 2
    assert [m["t_s"] for m in scrapes] == sorted(m["t_s"] for m in scrapes)
    last = scrapes[-1]["metrics"]
    for key, ours in (("coinfer_requests_received_total", "sent"),
                      ("coinfer_requests_total{outcome=completed}", "completed")):  # fmt: skip
        assert last[key] - before[key] == s[ours], key
    doc = res.to_dict()
    assert doc["summary"] == s and len(doc["records"]) == s["sent"]


@pytest.mark.integration
def test_loadgen_cli_writes_its_result(server, tmp_path, capsys):
    out = tmp_path / "run.json"
    spec = "bursty:on=6,off=1,on_s=1,off_s=1,duration=2,seed=2"
    assert loadgen.main(["--url", server, "--trace", spec, "--slo-ms", "500",
                         "--grace-s", "20", "--out", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["trace"]["name"] == "bursty" and doc["summary"]["unaccounted"] == 0
    assert doc["summary"]["sent"] == len(make_trace(spec).times)
    assert "latency" in capsys.readouterr().out
    assert loadgen.main(["--url", server, "--trace", "poisson:rate=1"]) == 2


class _Stub(BaseHTTPRequestHandler):
    """A server answering in turn 200, 429 (Retry-After: 3), 503, and never (within the test's
    bound): one of each outcome the load generator tells apart."""

    turn = itertools.count()
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/plan":
            self._send(
                200, json.dumps({"inputs": [{"shape": ["n", 4], "dtype": "float32"}]}).encode()
            )
        else:
            self._send(200, b"# TYPE up gauge\nup 1\n")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            k = next(self.turn) % 4
        if k == 0:
            self._send(200, b'{"outputs": [[1.0]]}')
        elif k == 1:
            self._send(429, b'{"error": "queue full"}', {"Retry-After": "3"})
        elif k == 2:
            self._send(503, b'{"error": "failed"}')
        else:
            time.sleep(4)  # beyond the bound: the generator gives up first


def test_every_outcome_is_recorded_and_the_bound_holds():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        trace = make_trace("poisson:rate=20,duration=1,seed=5")
        res = loadgen.run_load(url, trace, slo_s=1.0, grace_s=1.0, scrape_s=0.25)
        # trace + grace, plus the lead-in and a last scrape (the bodies are made before)
        assert res.wall_s < 1.0 + 1.0 + 2.0
    finally:
        httpd.shutdown()
    s = res.summary()
    n = len(trace.times)
    assert s["sent"] == n and s["unaccounted"] == 0
    quarter = [len(range(k, n, 4)) for k in range(4)]
    assert (s["completed"], s["rejected"], s["failed"], s["timeout"]) == tuple(quarter)
    assert s["lost"] == s["timeout"] and s["error"] == 0
    assert {r.retry_after_s for r in res.records if r.outcome == "rejected"} == {3.0}
    assert all(r.done_s is None for r in res.records if r.outcome == "timeout")
    assert s["scrapes"] >= 2


def test_summary_counts_outcomes_and_goodput():
    """The summary's arithmetic on hand-made records (no server)."""
    trace = make_trace("poisson:rate=1,duration=10,seed=0")
    R = loadgen.RequestRecord
    recs = [
        R(0, 0.0, 0.0, 0.2, 200, "completed"),
        R(1, 1.0, 1.0, 1.9, 200, "completed"),
        R(2, 2.0, 2.0, 2.01, 429, "rejected", retry_after_s=1.0),
        R(3, 3.0, 3.0, 3.1, 503, "failed"),
        R(4, 4.0, 4.0, None, None, "timeout"),
        R(5, 5.0, 5.1, None, None, "error", error="ConnectError"),
    ]
    res = loadgen.LoadResult("http://x", trace, 0.5, "json", recs)
    s = res.summary()
    assert (s["sent"], s["completed"], s["rejected"], s["failed"]) == (6, 2, 1, 1)
    assert (s["timeout"], s["error"], s["lost"], s["unaccounted"]) == (1, 1, 2, 0)
    assert s["latency_mean_s"] == pytest.approx(0.55)
    assert s["goodput"] == 1 and s["goodput_rps"] == pytest.approx(0.1)
    assert s["throughput_rps"] == pytest.approx(2 / 1.9)
    assert s["send_lag_max_s"] == pytest.approx(0.1)


def test_bodies_follow_the_plan_inputs():
    from safetensors.torch import load

    small = [{"shape": ["n", 64], "dtype": "float32"}]
    big = [{"shape": ["n", 3, 224, 224], "dtype": "float32"}, {"shape": ["n", 4], "dtype": "int64"}]
    assert loadgen.choose_form(small) == "json" and loadgen.choose_form(big) == "safetensors"
    (b,) = loadgen.build_bodies(big, "safetensors", count=1)
    named = load(b.content)
    assert named["input_0"].shape == (1, 3, 224, 224)
    assert str(named["input_1"].dtype) == "torch.int64" and named["input_1"].shape == (1, 4)
    (j,) = loadgen.build_bodies(small, "json", count=1)
    assert j.content_type == "application/json" and j.content.startswith(b'{"inputs": [[[')
