"""Emulated links that follow a bandwidth trace hold the link exactly as the simulator prices."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.cluster.types import BandwidthTrace
from coinfer.core.instance import Link
from coinfer.runtime.linkshape import LinkShape
from coinfer.runtime.prepare import link_shapes
from coinfer.runtime.protocol import Setup, decode, encode
from coinfer.simulate.sim import hop_time


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(1e3, 1e8)), min_size=1, max_size=6),
    nbytes=st.integers(1, 5_000_000),
    start=st.floats(0, 30),
    latency=st.floats(0, 0.01),
)
def test_traced_delay_equals_the_simulators_hop_time(steps, nbytes, start, latency):
    times, t = [], 0.0
    for dt, _ in steps:
        times.append(t)
        t += dt
    bws = [bw for _, bw in steps]
    shape = LinkShape(5e6, latency, None, BandwidthTrace(tuple(times), tuple(bws)), 1000.0)
    got = shape.delay_s(nbytes, at_unix=1000.0 + start)
    want = hop_time(Link("u", "v", 5e6, latency), nbytes, start, list(zip(times, bws, strict=True)))
    # abs 1 ns: the link works on unix times (origin + t), which round t by ~1e-13 s near a
    # breakpoint; hypothesis found a start exactly on one off by 1.0e-12 s
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_a_drop_in_the_trace_slows_a_transfer_that_starts_after_it():
    trace = BandwidthTrace((0.0, 10.0), (10e6, 1e6))
    shape = LinkShape(10e6, 0.001, None, trace, 0.0)
    assert shape.delay_s(1_000_000, at_unix=5.0) == pytest.approx(0.101)
    assert shape.delay_s(1_000_000, at_unix=12.0) == pytest.approx(1.001)


def test_the_trace_travels_in_the_setup_and_comes_back_equal():
    trace = BandwidthTrace((0.0, 10.0, 40.0), (12.5e6, 1.25e6, 12.5e6))
    shapes = link_shapes([("a", "b", 5e6, 0.002, None, trace), ("b", "a", 5e6, 0.002)], ["a", "b"])
    assert shapes["a"]["b"].trace == trace and shapes["b"]["a"].trace is None
    wire = {v: s.to_dict() for v, s in shapes["a"].items()}
    setup = Setup("r", "a", 0, ("a", "b"), ("h", 1), 5.0, 2, 1, (), (), links=wire)
    back = decode(json.loads(json.dumps(encode(setup))))
    got = LinkShape.from_dict(back.links["b"])
    assert got.trace is not None and got.trace.times_s == trace.times_s
    assert got.trace.bandwidth_Bps == trace.bandwidth_Bps
    assert got.delay_s(1000, at_unix=0.0) == shapes["a"]["b"].delay_s(1000, at_unix=0.0)
