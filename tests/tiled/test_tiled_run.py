"""A fused plan run for real: tiles on several worker processes, outputs equal the unsplit model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.runtime.emulation import CGROUP_CPU_ROOT

pytestmark = pytest.mark.integration

# tiny_cnn: 5 pieces; the first three (conv/BN/ReLU, conv/ReLU, conv/ReLU) can be tiled.
ASSIGN = ["b", "a", "c", "b"]  # a 2x2 grid of the block's 16x16 output


def _plan(depth: int = 2, suffix=((2, 3, "c"), (4, 4, "b"))) -> Plan:
    stages = [Stage(0, depth - 1, ("a", "b", "c")), *(Stage(x, y, (d,)) for x, y, d in suffix)]
    fused = {
        "used": True,
        "depth": depth,
        "grid": [2, 2],
        "assignment": ASSIGN,
        "order": [3, 0, 1, 2],
    }
    return Plan("fused", "latency", tuple(stages), Metrics(0.1, 0.1), details={"fused": fused})


def _cluster():
    from coinfer.cluster import cluster_from_yaml

    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 0.5, threads: 1}}}}"
        for d in "abc"
    )
    links = "\n".join(
        f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 200, latency_ms: 1}}"
        for u, v in (("a", "b"), ("a", "c"), ("b", "c"))
    )
    return cluster_from_yaml(f"name: t\nsource: a\ndevices:\n{rows}\nlinks:\n{links}\n")


def test_tiled_run_matches_the_unsplit_model_and_follows_its_program():
    from coinfer.profile.costmodel import build_instance
    from coinfer.tiled import run_tiled_plan

    cluster = _cluster()
    inst = build_instance("tiny_cnn", cluster, source="analytic")
    before = set(CGROUP_CPU_ROOT.glob("coinfer-tiled*")) if CGROUP_CPU_ROOT.exists() else set()
    res = run_tiled_plan("tiny_cnn", cluster, _plan(), inst, requests=3, predicted_latency_s=0.05)
    assert res.max_abs_err is not None and res.max_abs_err <= 1e-5
    assert len(res.latencies_s) == 3 and all(x > 0 for x in res.latencies_s)
    assert res.error == pytest.approx(res.latency_p50_s / 0.05 - 1)
    by = {d["device"]: d for d in res.devices}
    tiles = {
        d: sorted(idx for r, k, idx, *_ in by[d]["computes"] if k == "tile" and r == 0)
        for d in "abc"
    }
    assert tiles == {"a": [1], "b": [0, 3], "c": [2]}
    stages = {
        d: [idx for r, k, idx, *_ in by[d]["computes"] if k == "stage" and r == 0] for d in "abc"
    }
    assert stages == {"a": [], "b": [1], "c": [0]}
    # the source sends 3 input tiles and the block's output per request; b returns the result
    sent = {d: sum(1 for t in by[d]["transfers"] if t[0] == "send") for d in "abc"}
    assert sent == {"a": 3 * 4, "b": 3 * 3, "c": 3 * 2}
    assert by["a"]["emulation"] in ("cgroup", "threads", "none")
    after = set(CGROUP_CPU_ROOT.glob("coinfer-tiled*")) if CGROUP_CPU_ROOT.exists() else set()
    assert after <= before  # the run's cgroups are gone


def _coinfer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coinfer", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_runs_a_fused_plan_file_and_refuses_streaming_it(tmp_path: Path):
    plan = _plan(depth=3, suffix=((3, 4, "d1"),))
    plan = Plan(
        plan.algo, plan.objective, (Stage(0, 2, ("d0", "d1", "d2")), *plan.stages[1:]),
        plan.predicted, details={"fused": {**plan.details["fused"], "assignment": ["d1", "d0", "d2", "d1"]}},
    )  # fmt: skip
    path = tmp_path / "fused.json"
    plan.save(path)
    res = _coinfer("run", "tiny_cnn", "--plan", str(path), "--requests", "2", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    m = out["measured"]
    assert m["max_abs_err"] <= 1e-5 and len(m["latencies_s"]) == 2
    assert out["predicted"]["latency_s"] == pytest.approx(m["predicted_latency_s"])
    assert out["predicted"]["latency_s"] > 0 and m["program"]["devices"] == ["d0", "d1", "d2"]
    res = _coinfer("run", "tiny_cnn", "--plan", str(path), "--arrivals", "closed")
    assert res.returncode == 2
    assert "one request at a time" in res.stderr and len(res.stderr.strip().splitlines()) == 1
