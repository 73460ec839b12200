"""A SoC's core groups run for real: a stage on k cores gets k intra-op threads pinned to its
cores' host CPUs, and the split model still computes what the unsplit one does."""

from __future__ import annotations

import os

import pytest
import torch

from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.runtime import run
from coinfer.runtime.prepare import make_inputs
from coinfer.zoo import load_model

pytestmark = pytest.mark.integration

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)
HOST_CPUS = sorted(os.sched_getaffinity(0))

SOC = f"""
name: soc-test
source: soc
socs:
  - name: soc
    memory: 1GiB
    handoff: {{bandwidth_mbps: 10000, latency_ms: 0.05}}
    cores:
      - {{type: big, count: 2, speed: {{gflops: 10}}, emulate: {{cpu_quota: 0.4, cpus: {HOST_CPUS[:2]}}}}}
      - {{type: little, count: 1, speed: {{gflops: 4}}, emulate: {{cpu_quota: 0.2, cpus: {HOST_CPUS[:1]}}}}}
"""


def _reference(n: int) -> torch.Tensor:
    torch.manual_seed(0)
    model, example = load_model(MLP, (1, 64))
    xs = make_inputs(example, n, 0)
    with torch.inference_mode():
        return torch.cat([model(x[0]) for x in xs])


def test_a_two_core_group_runs_two_pinned_threads_and_outputs_match() -> None:
    cl = cluster_from_yaml(SOC, origin="soc.yaml")
    plan = Plan(
        "manual",
        "throughput",
        (Stage(0, 2, ("soc.big0-1",)), Stage(3, 4, ("soc.little0",))),
        Metrics(0.0, 0.0),
    )
    r = run(MLP, cl, plan, requests=6, input_shape=(1, 64), partition="sequential")
    torch.testing.assert_close(r.outputs, _reference(6), rtol=1e-5, atol=1e-6)
    pair, single = r.emulation["soc.big0-1"], r.emulation["soc.little0"]
    assert pair["torch_threads"] == 2 and pair["threads"] == 2
    assert pair["cpus"] == HOST_CPUS[:2] and pair["affinity"] == HOST_CPUS[:2]
    assert single["torch_threads"] == 1 and single["affinity"] == HOST_CPUS[:1]
    # every worker keeps its freed memory, as the profiler does (coinfer.profile.allocator)
    assert pair["allocator"].startswith("kept") and single["allocator"].startswith("kept")
    assert pair["cpu_quota"] == pytest.approx(0.8) and single["cpu_quota"] == pytest.approx(0.2)
    if pair["mode"] == "cgroup":  # root: both compute threads under the quota, nothing else
        assert pair["quota_threads"] == 2 and single["quota_threads"] == 1
    # the source (the SoC's first core) takes requests in and out without a stage of its own
    assert "soc.big0" in r.emulation
