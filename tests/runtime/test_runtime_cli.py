"""CLI edges of the runtime: bad input is one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _coinfer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coinfer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.integration
def test_worker_bad_coordinator_address_and_missing_token():
    env = {k: v for k, v in os.environ.items() if k != "COINFER_TOKEN"}
    res = _coinfer("worker", "--coordinator", "nohost", "--device", "a", env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: no token: pass --token-file or set COINFER_TOKEN"
    ]
    res = _coinfer(
        "worker", "--coordinator", "nohost", "--device", "a", env={**env, "COINFER_TOKEN": "x"}
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "COINFER_TOKEN: the token has 1 characters; use at least 32" in res.stderr
    res = _coinfer(
        "worker", "--coordinator", "nohost", "--device", "a",
        env={**env, "COINFER_TOKEN": "x" * 32},
    )  # fmt: skip
    assert res.returncode == 2 and "HOST:PORT" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.integration
def test_run_rejects_requests_not_divisible_by_microbatch():
    res = _coinfer(
        "run",
        "coinfer.zoo.tiny:tiny_mlp",
        "--input-shape",
        "1,64",
        "--partition",
        "sequential",
        "--requests",
        "5",
        "--microbatch",
        "2",
    )
    assert res.returncode == 2, res.stderr
    assert "multiple of --microbatch" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.integration
def test_run_json_reports_measured_next_to_simulated(tmp_path):
    import json

    trace = tmp_path / "trace.json"
    res = _coinfer(
        "run",
        "coinfer.zoo.tiny:tiny_mlp",
        "--input-shape",
        "1,64",
        "--partition",
        "sequential",
        "--cluster",
        "examples/clusters/local_testbed.yaml",
        "--algo",
        "even",
        "--requests",
        "8",
        "--microbatch",
        "2",
        "--json",
        "--trace-out",
        str(trace),
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["measured"]["max_abs_error"] == 0.0
    metrics = {r["metric"]: r for r in out["comparison"]["rows"]}
    assert metrics["throughput_rps"]["measured"] > 0 and metrics["throughput_rps"]["simulated"] > 0
    for row in out["comparison"]["rows"]:  # every error is (simulated - measured) / measured
        if row["measured"]:
            want = 100.0 * (row["simulated"] - row["measured"]) / row["measured"]
            assert row["error_pct"] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert out["measured"]["throughput_rps"] == pytest.approx(metrics["throughput_rps"]["measured"])
    events = json.loads(trace.read_text())
    assert {e["kind"] for e in events} >= {"compute"}
    assert len(out["plan"]["stages"]) >= 2  # 'even' spreads the 5 pieces over several devices


@pytest.mark.integration
def test_run_streams_poisson_arrivals_and_fails_over_an_injected_kill():
    """`coinfer run --arrivals poisson:R --duration S --inject kill:D@T --json`: every request
    submitted completes once, the kill shows as a recovery, outputs match the unsplit model."""
    import json

    res = _coinfer(
        "run", "tiny_cnn", "--algo", "even", "--arrivals", "poisson:60", "--duration", "5",
        "--inject", "kill:d3@2", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["measured"]
    assert m["submitted"] == m["completed"] > 100
    assert m["lost"] == 0 and m["duplicated"] == 0
    (rec,) = m["recoveries"]
    assert rec["device"] == "d3" and "d3" not in rec["devices"]
    assert 0 <= rec["detected_after_s"] < 5 and rec["first_result_after_s"] < 10
    assert m["max_abs_error"] == 0.0 and m["checked"] > 10


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arrivals", "poisson:-1"), "poisson needs a rate > 0"),
        (("--arrivals", "sometimes"), "--arrivals must be closed, poisson:RATE or trace:FILE"),
        (("--arrivals", "trace:/nonexistent.csv"), "no such file"),
        (("--inject", "kill:zz@1"), "unknown device 'zz'"),
        (("--inject", "explode:d1@1"), "--inject must look like"),
        (("--duration", "nan"), "--duration must be a number of seconds > 0"),
    ],
)
def test_run_stream_options_reject_bad_input_in_one_line(args, message):
    res = _coinfer("run", "tiny_cnn", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
