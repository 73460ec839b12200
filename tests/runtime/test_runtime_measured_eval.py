"""Measuring candidate plans through one live session (the measured search's evaluator), and
``coinfer plan --algo bayes --measure`` end to end — real worker processes, a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from coinfer.cli import app
from coinfer.core.evaluate import evaluate, period_s
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.errors import InputError
from coinfer.runtime.measured_eval import MeasuredEvaluator, batch_rel_sem
from coinfer.runtime.session import Session

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)
# a -> c is a 0.05 Mbit/s link: a 256-byte input takes ~41 ms to cross it, so any plan that
# uses c is an order of magnitude slower than one on a and b (1000 Mbit/s, < 1 ms).
SLOW_MBPS = 0.05
CLUSTER = f"""name: t3
source: a
devices:
  - {{name: a, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 0.5, threads: 1}}}}
  - {{name: b, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 0.5, threads: 1}}}}
  - {{name: c, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 0.5, threads: 1}}}}
links:
  - {{src: a, dst: b, bandwidth_mbps: 1000, latency_ms: 1}}
  - {{src: a, dst: c, bandwidth_mbps: {SLOW_MBPS}, latency_ms: 1}}
  - {{src: b, dst: c, bandwidth_mbps: {SLOW_MBPS}, latency_ms: 1}}
"""


def _plan(*stages: Stage) -> Plan:
    return Plan("manual", "throughput", tuple(stages), Metrics(0.0, 0.0))


def _instance():
    """The MLP's 5 pieces (sequential partition), priced with the cluster's links."""
    fast, slow = 1000e6 / 8, SLOW_MBPS * 1e6 / 8
    links = [
        Link(u, v, bw, 0.001)
        for u, v, bw in (("a", "b", fast), ("a", "c", slow), ("b", "c", slow))
        for u, v in ((u, v), (v, u))
    ]
    times = [dict.fromkeys("abc", 1e-4)] * 5
    out = [512, 512, 512, 512, 40]  # float32 activations: 128 wide, 10 logits
    return make_instance(times, [0] * 5, out, 256, [Device(d, 1 << 30) for d in "abc"], links, "a")


A_ONLY = (Stage(0, 4, ("a",)),)
VIA_C = (Stage(0, 1, ("a",)), Stage(2, 4, ("c",)))
VIA_B = (Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))


@pytest.mark.integration
def test_measured_periods_rank_plans_and_handovers_lose_nothing() -> None:
    from coinfer.cluster import cluster_from_yaml

    inst = _instance()
    cluster = cluster_from_yaml(CLUSTER)
    inputs = [[torch.randn(1, 64)] for _ in range(3)]
    s = Session(MLP, cluster, _plan(*A_ONLY), input_shape=(1, 64), instance=inst,
                partition="sequential", timeout_s=60)  # fmt: skip
    with s:
        ev = MeasuredEvaluator(s, inputs, min_requests=8, min_time_s=0.3, timeout_s=60)
        values = [ev(A_ONLY), ev(VIA_C), ev(VIA_B), ev(A_ONLY)]
        assert s.plan.stages == A_ONLY  # the stream ends on the last plan measured
        lat = MeasuredEvaluator(s, inputs, "latency", min_requests=4, min_time_s=0.1)
        latency_c = lat(VIA_C)  # one request at a time: a crossing of the slow link and back
    rep = s.report
    assert rep is not None and rep.lost == 0 and rep.duplicated == 0
    assert rep.completed == rep.submitted  # every measured request came back, once
    a1, via_c, via_b, a2 = values
    # the slow link dominates: the model prices it at ~42 ms a request; measured within 35 %
    assert via_c > 10 * max(a1, via_b, a2)
    assert 0.65 < via_c / period_s(inst, VIA_C) < 1.35
    # one request alone: the model's path time plus per-message overheads it does not price
    # (measured +27 % on a quiet host)
    assert 0.9 < latency_c / evaluate(inst, VIA_C).latency_s < 1.8
    recs = ev.records
    assert [r.switch_s > 0 for r in recs] == [False, True, True, True]
    assert len({r.epoch for r in recs}) == 4 and all(r.requests >= 8 for r in recs)
    assert all(r.wall_s >= 0.3 for r in recs)
    # each measurement's own noise: estimated from >= 8 timed results; the slow link's pace is
    # steady (its emulated hold), so its plan's figure is small beside the 10x gap
    assert all(r.rel_sem >= 0 and math.isfinite(r.rel_sem) for r in recs)
    assert 0 < recs[1].rel_sem < 0.25
    per = {tuple(row["stages"]): row for row in ev.summary()}
    assert per[tuple(str(x) for x in A_ONLY)]["n"] == 2 and len(per) == 3
    with pytest.raises(InputError, match="energy"):
        MeasuredEvaluator(s, inputs, "energy")  # type: ignore[arg-type]


@pytest.mark.integration
def test_plan_measure_cli_finds_a_fast_plan_and_writes_the_log(tmp_path: Path) -> None:
    """Budget 4 on 9 configurations (2 pieces, 3 devices): the answer avoids the slow links,
    the log has one row per measurement and the plot is written beside it (< 30 s)."""
    (tmp_path / "t3.yaml").write_text(CLUSTER)
    log = tmp_path / "search.json"
    res = CliRunner().invoke(app, [
        "plan", "tiny_mlp", "--cluster", str(tmp_path / "t3.yaml"), "--algo", "bayes",
        "--measure", "--budget", "4", "--max-pieces", "2", "--measure-seconds", "0.3",
        "--ei-stop", "0", "--search-log", str(log), "--json",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    devices = {d for st in plan["stages"] for d in st["devices"]}
    assert "c" not in devices
    body = json.loads(log.read_text())
    assert body["evaluations"] == 4 and len(body["search_log"]) == 4
    assert len(body["measured"]["measurements"]) == 4 and body["measured"]["lost"] == 0
    assert [r["measured"] for r in body["search_log"]] == [
        m["value_s"] for m in body["measured"]["measurements"]
    ]
    assert body["answer"] == [str(st) for st in Plan.from_dict(plan).stages]
    assert log.with_suffix(".png").stat().st_size > 10_000


def test_batch_rel_sem_by_hand() -> None:
    assert batch_rel_sem([0.02] * 12) == 0.0
    assert batch_rel_sem([1.0, 2.0, 3.0]) == 0.0  # under two values per batch: not estimated
    # batches of two: means 1, 3, 1, 3 -> sd 1.1547, / sqrt(4), / mean 2
    got = batch_rel_sem([1, 1, 3, 3, 1, 1, 3, 3])
    assert got == pytest.approx(np.std([1, 3, 1, 3], ddof=1) / 2 / 2)
