"""The online cost estimate: telemetry in, a corrected instance out — tracking, robust, exact."""

from __future__ import annotations

import pytest

from coinfer.core.evaluate import evaluate
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.online import OnlineEstimate
from coinfer.core.plans import Stage
from coinfer.errors import InputError


def _instance():
    times = [{"a": 0.010, "b": 0.020}, {"a": 0.010, "b": 0.020}, {"a": 0.030, "b": 0.015}]
    devices = [Device("a", 1 << 30), Device("b", 1 << 30)]
    links = [Link("a", "b", 10e6, 0.002), Link("b", "a", 10e6, 0.002)]
    return make_instance(times, [0, 0, 0], [100_000, 50_000, 4_000], 200_000, devices, links, "a")


STAGES = (Stage(0, 1, ("a",)), Stage(2, 2, ("b",)))


def _record(device, compute_ms, links=None):
    return {"device": device, "computes": 10, "compute_ms": compute_ms, "links": links or {}}


def _link(n, nbytes, bw, lat):
    return {"transfers": n, "bytes": float(nbytes), "busy_s": n * lat + nbytes / bw}


def test_a_slow_device_and_a_slow_link_are_tracked_and_the_instance_follows():
    est = OnlineEstimate(_instance(), STAGES)
    for _ in range(12):
        # a computes its stage (priced 20 ms) in 40 ms; a->b carries 100 kB at 5 MB/s, not 10
        est.observe(_record("a", 40.0, {"b": _link(10, 10 * 100_000, 5e6, 0.002)}))
        est.observe(_record("b", 15.0))  # b is exactly as priced
    assert est.device_scale["a"] == pytest.approx(2.0, rel=0.02)
    assert est.device_scale["b"] == pytest.approx(1.0, rel=0.02)
    assert est.link_Bps[("a", "b")] == pytest.approx(5e6, rel=0.02)
    inst = est.current()
    assert inst.compute_s(0, 1, "a") == pytest.approx(0.040, rel=0.02)
    assert inst.compute_s(2, 2, "b") == pytest.approx(0.015, rel=0.02)
    assert inst.link_by_pair[("a", "b")].bandwidth_Bps == pytest.approx(5e6, rel=0.02)
    assert inst.link_by_pair[("b", "a")].bandwidth_Bps == 10e6  # never observed: unchanged
    # the corrected instance prices the plan as it really runs: a's 40 ms stage is the bottleneck
    assert evaluate(inst, STAGES).period_s == pytest.approx(0.040, rel=0.03)


def test_a_lone_outlier_moves_nothing_but_a_real_change_is_followed():
    est = OnlineEstimate(_instance(), STAGES)
    for _ in range(6):
        est.observe(_record("b", 15.0))
    est.observe(_record("b", 150.0))  # one 10x sample (a neighbour's burst)
    assert est.device_scale["b"] == pytest.approx(1.0, abs=0.01)
    for _ in range(10):
        est.observe(_record("b", 30.0))  # b really became 2x slower
    assert est.device_scale["b"] == pytest.approx(2.0, rel=0.05)


def test_nothing_observed_is_the_instance_itself_and_bad_settings_are_refused():
    inst = _instance()
    est = OnlineEstimate(inst, STAGES)
    est.observe({"device": "zz", "computes": 0, "compute_ms": None, "links": {}})
    assert est.current() == inst
    with pytest.raises(InputError, match="alpha"):
        OnlineEstimate(inst, STAGES, alpha=0.0)


def test_a_step_change_is_followed_two_samples_after_it_happened():
    """A link losing 90 % of its bandwidth is believed after two samples, not after the many
    a moving average would need; one such sample alone is an outlier and moves nothing."""
    est = OnlineEstimate(_instance(), STAGES)
    for _ in range(5):
        est.observe(_record("a", 20.0, {"b": _link(10, 10 * 100_000, 10e6, 0.002)}))
    est.observe(_record("a", 20.0, {"b": _link(1, 100_000, 1e6, 0.002)}))
    assert est.link_Bps[("a", "b")] > 8e6  # one slow second: still believed fast
    est.observe(_record("a", 20.0, {"b": _link(1, 100_000, 1e6, 0.002)}))
    assert est.link_Bps[("a", "b")] == pytest.approx(1e6, rel=0.01)
    # and back up again just as fast
    for _ in range(2):
        est.observe(_record("a", 20.0, {"b": _link(10, 10 * 100_000, 10e6, 0.002)}))
    assert est.link_Bps[("a", "b")] == pytest.approx(10e6, rel=0.01)


def test_messages_too_small_to_time_do_not_move_a_link():
    """4 kB results at 10 MB/s take 0.4 ms of wire time each: per-message overheads would read
    as a slow link, so such transfers leave the estimate alone."""
    est = OnlineEstimate(_instance(), STAGES)
    for _ in range(5):
        # 20 transfers of 4 kB with 1 ms of overhead each on top of the priced time
        busy = 20 * (0.002 + 4_000 / 10e6 + 0.001)
        est.observe(_record("a", 20.0, {"b": {"transfers": 20, "bytes": 80_000.0, "busy_s": busy}}))
    assert ("a", "b") not in est.link_Bps


def test_a_step_is_believed_at_its_new_level_not_the_straddling_sample():
    """The first sample after a drop mixes both regimes (here 2.6x slower); the estimate takes
    the level after the step (10x), not the mix."""
    est = OnlineEstimate(_instance(), STAGES)
    for _ in range(5):
        est.observe(_record("a", 20.0, {"b": _link(10, 10 * 100_000, 10e6, 0.002)}))
    est.observe(_record("a", 20.0, {"b": _link(4, 4 * 100_000, 10e6 / 2.6, 0.002)}))
    est.observe(_record("a", 20.0, {"b": _link(1, 100_000, 1e6, 0.002)}))
    assert est.link_Bps[("a", "b")] == pytest.approx(1e6, rel=0.01)
