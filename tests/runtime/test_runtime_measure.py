"""The runtime's locally measured instance: real piece timings, scaled by each device's quota."""

from __future__ import annotations

import pytest

from coinfer.cluster import cluster_from_yaml
from coinfer.runtime.measure import measured_instance, piece_times

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)

CLUSTER = cluster_from_yaml(
    """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.5, threads: 1}}
  - {name: b, speed: {gflops: 10}, memory: 2GiB, emulate: {cpu_quota: 2.0, threads: 1}}
  - {name: c, speed: {gflops: 10}, memory: 1GiB}
links:
  - {src: a, dst: b, bandwidth_mbps: 80, latency_ms: 2}
  - {src: a, dst: c, bandwidth_mbps: 8, latency_ms: 1}
"""
)


def test_piece_bytes_are_the_tensors_that_cross() -> None:
    times, mem, out_bytes, in_bytes = piece_times(MLP, (1, 64), "sequential", repeats=1)
    assert len(times) == len(mem) == len(out_bytes) == 5 and all(t > 0 for t in times)
    assert in_bytes == 64 * 4  # one float32 sample of 64 features
    assert out_bytes[-1] == 10 * 4  # the MLP's 10 outputs
    # each piece holds its parameters plus its output
    assert all(m >= b for m, b in zip(mem, out_bytes, strict=True))


def test_quota_scales_time_as_one_over_min_quota_one() -> None:
    inst = measured_instance(MLP, CLUSTER, (1, 64), "sequential")
    for pc in inst.pieces:
        # a: 0.5 core -> 2x the unthrottled time; b: 2 cores but one thread -> no speed-up;
        # c: no quota -> the unthrottled time
        assert pc.time_s["a"] == pytest.approx(2 * pc.time_s["c"], rel=1e-12)
        assert pc.time_s["b"] == pytest.approx(pc.time_s["c"], rel=1e-12)
    assert inst.source == "a" and inst.device_by_name["b"].mem_bytes == 2 * 2**30
    assert {(lk.src, lk.dst) for lk in inst.links} == {
        ("a", "b"),
        ("b", "a"),
        ("a", "c"),
        ("c", "a"),
    }
    assert inst.link_by_pair[("a", "c")].bandwidth_Bps == pytest.approx(1e6)
