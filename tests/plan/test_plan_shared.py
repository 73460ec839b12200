"""The planners' shared helpers agree with the reference model where they overlap."""

from __future__ import annotations

import math

import pytest

from coinfer.core.evaluate import energy_j
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Stage
from coinfer.plan._shared import hop_max_s, transfer_energy_j


def _line():
    """s -> a -> b one way only (no way back from b): radio 2 W on s, 3 W on a."""
    devs = [Device("s", 10**9, 0.5, 4.0, 2.0), Device("a", 10**9, 0.5, 4.0, 3.0),
            Device("b", 10**9, 0.5, 4.0, 1.0)]  # fmt: skip
    links = [Link("s", "a", 1e6, 0.001), Link("a", "b", 2e6, 0.002), Link("a", "s", 1e6, 0.0)]
    return make_instance([{"s": 1.0, "a": 1.0, "b": 1.0}], [1], [100], 10_000, devs, links, "s")


def test_transfer_energy_is_each_hop_times_its_senders_radio_power() -> None:
    inst = _line()
    # s->a: (1 ms + 10 kB / 1 MB/s) x 2 W; a->b: (2 ms + 10 kB / 2 MB/s) x 3 W
    want = (0.001 + 0.01) * 2.0 + (0.002 + 0.005) * 3.0
    assert transfer_energy_j(inst, "s", "b", 10_000) == pytest.approx(want, rel=1e-12)
    assert transfer_energy_j(inst, "a", "a", 10_000) == 0.0
    assert hop_max_s(inst, "s", "b", 10_000) == pytest.approx(0.011)


def test_an_unreachable_transfer_costs_infinite_energy_everywhere() -> None:
    """Decided once: a transfer that can never happen costs inf joules (as it costs inf
    seconds), in the planners' helper and in the reference model alike."""
    inst = _line()
    assert math.isinf(transfer_energy_j(inst, "b", "s", 100))
    assert math.isinf(hop_max_s(inst, "b", "s", 100))
    assert math.isinf(energy_j(inst, (Stage(0, 0, ("b",)),)))  # b can never return the output
