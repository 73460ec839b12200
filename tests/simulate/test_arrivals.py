"""Arrival traces: the requested rates come out (within a few sigma over long traces), the
bursty trace's on and off periods have their own rates, the diurnal thinning follows its
intensity phase by phase, traces are sorted, bounded and reproducible by seed, and a bad spec
is one line naming the field."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.errors import InputError
from coinfer.simulate.arrivals import (
    ArrivalTrace,
    bursty,
    diurnal,
    diurnal_expected,
    make_trace,
    on_periods,
    poisson,
)

# A count of a Poisson variable with mean m is within K sigma = K sqrt(m) of m; K = 5 leaves
# a false alarm at well under one in a million per check (the seeds are fixed anyway).
K = 5.0


def _within(count: int, mean: float) -> bool:
    return abs(count - mean) <= K * math.sqrt(mean)


def _count(times: tuple[float, ...], t0: float, t1: float) -> int:
    a = np.asarray(times)
    return int(((a >= t0) & (a < t1)).sum())


def test_poisson_rate_over_a_long_trace():
    for seed in range(3):
        times = poisson(50.0, 400.0, seed)
        assert _within(len(times), 50.0 * 400.0)


def test_poisson_gaps_are_exponential():
    """Mean and coefficient of variation of the gaps: 1/rate and 1 for a Poisson process (a
    regular or clumped generator with the right count would fail the CV)."""
    gaps = np.diff(poisson(20.0, 1000.0, 7))
    assert abs(gaps.mean() - 1 / 20) < 0.05 * (1 / 20)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05


def test_bursty_on_and_off_rates():
    on, off, on_s, off_s, dur = 40.0, 5.0, 3.0, 5.0, 800.0
    times = bursty(on, off, on_s, off_s, dur, seed=3)
    periods = on_periods(on_s, off_s, dur)
    n_on = sum(_count(times, a, b) for a, b in periods)
    t_on = sum(b - a for a, b in periods)
    n_off, t_off = len(times) - n_on, dur - t_on
    assert t_on == pytest.approx(dur * on_s / (on_s + off_s))
    assert _within(n_on, on * t_on)
    assert _within(n_off, off * t_off)
    assert n_on / t_on > 4 * n_off / t_off


def test_bursty_periods_start_on_at_zero_and_clip_at_the_horizon():
    assert on_periods(3, 5, 20) == [(0, 3), (8, 11), (16, 19)]
    assert on_periods(3, 5, 10) == [(0, 3), (8, 10)]
    # no off arrivals when the off rate is 0: every arrival is inside an on period
    times = bursty(30, 0, 1, 2, 30, seed=1)
    assert times and all(t % 3 < 1 for t in times)


def test_diurnal_thinning_follows_the_intensity_phase_by_phase():
    lo, hi, period, dur = 5.0, 40.0, 60.0, 1200.0
    times = diurnal(lo, hi, period, dur, seed=11)
    phase = np.asarray(times) % period
    # eight phase bins, each summed over the 20 periods: counts against the integral
    for k in range(8):
        a, b = k * period / 8, (k + 1) * period / 8
        n = int(((phase >= a) & (phase < b)).sum())
        expected = diurnal_expected(a, b, lo, hi, period) * dur / period
        assert _within(n, expected), (k, n, expected)
    # the trough (around 0) is sparser than the peak (around half a period)
    trough = int(((phase < period / 8) | (phase >= 7 * period / 8)).sum())
    peak = int(((phase >= 3 * period / 8) & (phase < 5 * period / 8)).sum())
    assert peak > 3 * trough


def test_diurnal_expected_is_the_integral():
    lo, hi, period = 2.0, 10.0, 30.0
    grid = np.linspace(7.0, 23.0, 200_001)
    rate = lo + (hi - lo) * (1 - np.cos(2 * np.pi * grid / period)) / 2
    numeric = float(np.sum((rate[1:] + rate[:-1]) / 2 * np.diff(grid)))
    assert diurnal_expected(7.0, 23.0, lo, hi, period) == pytest.approx(numeric, rel=1e-9)
    # a whole period averages (lo + hi) / 2
    assert diurnal_expected(0, period, lo, hi, period) == pytest.approx((lo + hi) / 2 * period)


def test_flat_diurnal_is_poisson():
    assert _within(len(diurnal(10, 10, 5, 300, seed=2)), 3000)
    assert diurnal(0, 0, 5, 300) == ()


_specs = st.one_of(
    st.builds(
        lambda r, d, s: f"poisson:rate={r},duration={d},seed={s}",
        st.floats(0, 200), st.floats(0.1, 30), st.integers(0, 2**32),
    ),
    st.builds(
        lambda a, b, on, off, d, s: f"bursty:on={a},off={b},on_s={on},off_s={off},duration={d},seed={s}",
        st.floats(0, 200), st.floats(0, 200), st.floats(0.05, 10), st.floats(0.05, 10),
        st.floats(0.1, 30), st.integers(0, 2**32),
    ),
    st.builds(
        lambda lo, extra, p, d, s: f"diurnal:min={lo},max={lo + extra},period={p},duration={d},seed={s}",
        st.floats(0, 100), st.floats(0, 100), st.floats(0.1, 60), st.floats(0.1, 30),
        st.integers(0, 2**32),
    ),
)  # fmt: skip


@given(_specs)
def test_every_trace_is_sorted_bounded_reproducible_and_round_trips(spec):
    trace = make_trace(spec)
    ts = trace.times
    assert all(b >= a for a, b in itertools.pairwise(ts))
    assert all(0 <= t < trace.duration_s for t in ts)
    assert make_trace(spec) == trace  # same seed, same times
    assert make_trace(trace.spec) == trace  # the spec it reports rebuilds it
    back = ArrivalTrace.from_json(json.dumps(trace.to_dict()))
    assert back == trace and back.spec == trace.spec


@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_different_seeds_give_different_traces(a, b):
    if a != b:
        assert poisson(30, 10, a) != poisson(30, 10, b)


def test_the_spec_names_its_fields():
    t = make_trace("bursty:on=40,off=5,on_s=3,off_s=5,duration=60")
    assert t.name == "bursty"
    assert t.params == {"on": 40, "off": 5, "on_s": 3, "off_s": 5, "duration": 60, "seed": 0}
    assert t.spec == "bursty:on=40,off=5,on_s=3,off_s=5,duration=60,seed=0"
    assert t.rate_at(1.0) == 40 and t.rate_at(4.0) == 5 and t.rate_at(8.5) == 40
    d = make_trace("diurnal: min=5, max=40, period=60, duration=60")
    assert d.rate_at(0) == pytest.approx(5) and d.rate_at(30) == pytest.approx(40)
    p = make_trace("poisson:rate=20,duration=30,seed=1")
    assert p.times == poisson(20, 30, 1) and p.rate_at(3) == 20
    assert p.mean_rate_rps == len(p.times) / 30


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gamma:rate=1", "kind must be one of poisson, bursty, diurnal"),
        ("poisson", "poisson trace needs fields rate, duration"),
        ("poisson:rate=1", "poisson trace: missing field 'duration'"),
        ("poisson:rate=x,duration=3", "poisson trace: field 'rate' is not a number: 'x'"),
        ("poisson:rate=1,duration=3,burst=2", "poisson trace: unknown field 'burst'"),
        ("poisson:rate=1,rate=2,duration=3", "poisson trace: field 'rate' given twice"),
        ("poisson:rate=1,duration", "poisson trace: expected field=value, got 'duration'"),
        ("poisson:rate=-1,duration=3", "poisson trace: 'rate' must be a finite number"),
        ("poisson:rate=nan,duration=3", "poisson trace: field 'rate' must be finite"),
        ("poisson:rate=1,duration=0", "poisson trace: 'duration' must be a finite number of seconds > 0"),
        ("poisson:rate=1,duration=3,seed=1.5", "poisson trace: field 'seed' must be an integer"),
        ("poisson:rate=1e9,duration=60", "poisson trace: poisson: 6e+10 expected arrivals"),
        ("bursty:on=4,off=1,on_s=0,off_s=1,duration=9", "bursty trace: 'on_s' must be"),
        ("bursty:on=4,off=-1,on_s=1,off_s=1,duration=9", "bursty trace: 'off' must be"),
        ("diurnal:min=9,max=5,period=6,duration=6", "diurnal trace: 'min' (9) is above 'max' (5)"),
        ("diurnal:min=1,max=5,period=0,duration=6", "diurnal trace: 'period' must be"),
    ],
)  # fmt: skip
def test_bad_specs_are_one_line_naming_the_field(spec, message):
    with pytest.raises(InputError) as exc:
        make_trace(spec)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"name": "poisson", "params": {}},
        {"name": "poisson", "params": {"rate": "1"}, "times": []},
        {"name": "poisson", "params": {}, "times": [0.5, 0.1]},
        {"name": "poisson", "params": {}, "times": [-1.0]},
        {"name": "poisson", "params": {}, "times": [True]},
    ],
)
def test_malformed_trace_json_is_an_input_error(doc):
    with pytest.raises(InputError):
        ArrivalTrace.from_dict(doc)
    with pytest.raises(InputError, match="not JSON"):
        ArrivalTrace.from_json("{")
