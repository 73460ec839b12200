"""Small instances whose right answers are worked out by hand in their docstrings."""

from __future__ import annotations

from coinfer.core.instance import Device, Instance, Link, make_instance


def three_devices() -> Instance:
    """Hand-checkable: source ``s`` is slow; ``fast`` computes fastest but returns results over
    a link with 25 ms latency; ``mid`` is slower but close. Two pieces; 100 kB in, 1 kB out.

    Whole model on one device (latency = in + compute + out; period = the busiest of them):

    ======  =====================================  ==================================
    device  latency                                period
    ======  =====================================  ==================================
    s       0.1                                    0.1
    fast    0.01 + 0.01 + (0.025 + 0.0001) = 0.0451  max(0.01, 0.01, 0.0251) = 0.0251
    mid     0.01 + 0.03 + 0.0001 = 0.0401          max(0.01, 0.03, 0.0001) = 0.03
    ======  =====================================  ==================================
    """
    devs = [Device("s", 10**9), Device("fast", 10**9), Device("mid", 10**9)]
    times = [{"s": 0.05, "fast": 0.005, "mid": 0.015}] * 2
    links = [Link("s", "fast", 1e7, 0.0), Link("fast", "s", 1e7, 0.025),
             Link("s", "mid", 1e7, 0.0), Link("mid", "s", 1e7, 0.0)]  # fmt: skip
    return make_instance(times, [1, 1], [10_000, 1_000], 100_000, devs, links, "s", name="three")
