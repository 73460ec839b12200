"""The serving simulator: queue, batching, capacity, and the scaling policy in simulated time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.core.evaluate import latency_s
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.core.scaling import ScalingPolicy, capacity_rps
from coinfer.errors import InputError
from coinfer.simulate.serving import ServeSimConfig, simulate_serving

BASE = (Stage(0, 0, ("a",)), Stage(1, 3, ("b",)))  # b (14 ms) is the key stage


def _instance():
    times = [{"a": 0.004, "b": 0.006, "c": 0.006, "d": 0.012}] * 3 + [
        {"a": 0.002, "b": 0.002, "c": 0.002, "d": 0.004}
    ]
    devices = [Device(d, 1 << 30) for d in "abcd"]
    links = [Link(u, v, 100e6, 0.0005) for u in "abcd" for v in "abcd" if u != v]
    return make_instance(times, [0] * 4, [10_000] * 4, 1000, devices, links, "a")


def _poisson(rate, duration, seed=0):
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    while True:
        t += rng.exponential(1 / rate)
        if t > duration:
            return out
        out.append(t)


def test_light_load_sees_the_pipeline_latency():
    inst = _instance()
    cfg = ServeSimConfig(microbatch=1, queue_samples=16, batch_wait_s=0.0)
    arrivals = [0.1 * i for i in range(50)]  # far below capacity: nobody queues
    r = simulate_serving(inst, BASE, arrivals, cfg)
    s = r.summary()
    assert s["rejected"] == 0 and s["completed"] == 50
    assert s["p99_s"] == pytest.approx(latency_s(inst, BASE), rel=1e-6)


def test_saturated_throughput_is_the_predicted_capacity_and_the_queue_refuses_the_rest():
    inst = _instance()
    mb = 2
    cap = capacity_rps(inst, BASE)  # samples/s
    cfg = ServeSimConfig(microbatch=mb, queue_samples=8)
    arrivals = _poisson(3 * cap, 20.0)
    r = simulate_serving(inst, BASE, arrivals, cfg)
    done = sorted(c for c in r.completion_s if not math.isnan(c))
    mid = done[len(done) // 5 : -len(done) // 5]
    rate = (len(mid) - 1) / (mid[-1] - mid[0])
    assert rate == pytest.approx(cap, rel=0.05)
    s = r.summary()
    assert s["rejected"] > 0 and s["completed"] + s["rejected"] == s["sent"]


def test_scaling_replicates_the_key_stage_and_raises_goodput_then_scales_in():
    inst = _instance()
    cap = capacity_rps(inst, BASE)
    cfg = ServeSimConfig(microbatch=1, queue_samples=64, slo_s=0.25, handover_s=1.0)
    burst = _poisson(1.6 * cap, 10.0)
    quiet = [10.0 + 0.5 * i for i in range(60)]  # 30 s of a trickle
    arrivals = burst + quiet
    static = simulate_serving(inst, BASE, arrivals, cfg).summary()
    scaled_r = simulate_serving(inst, BASE, arrivals, cfg, ScalingPolicy())
    scaled = scaled_r.summary()
    kinds = [e["kind"] for e in scaled_r.events]
    assert kinds[0] == "scale_out" and "scale_in" in kinds
    assert scaled_r.events[0]["replicas"][0][0] == 1  # b's stage is the key stage
    assert scaled_r.events[0]["serving_s"] == pytest.approx(scaled_r.events[0]["t_s"] + 1.0)
    assert scaled["goodput"] > static["goodput"]
    assert scaled["mean_s"] < static["mean_s"]
    # after the last scale-in the plan is the base again: the trickle is served as before
    assert scaled_r.events[-1]["plan"] == " | ".join(str(s) for s in BASE)


def test_same_inputs_same_result_and_bad_input_is_refused():
    inst = _instance()
    arrivals = _poisson(200, 3.0, seed=4)
    a = simulate_serving(inst, BASE, arrivals, policy=ScalingPolicy())
    b = simulate_serving(inst, BASE, arrivals, policy=ScalingPolicy())
    assert a.to_dict() == b.to_dict()
    with pytest.raises(InputError, match="non-decreasing"):
        simulate_serving(inst, BASE, [1.0, 0.5])
    with pytest.raises(InputError, match="one micro-batch"):
        ServeSimConfig(microbatch=4, queue_samples=2)
