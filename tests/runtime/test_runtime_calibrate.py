"""Calibration: the fits on hand-made traces (pure), and one real probe run end to end."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_clusters import TWO_YAML

from coinfer.cli import main
from coinfer.cluster import cluster_from_yaml, load_cluster
from coinfer.cluster.types import DeviceSpec, LinkEmulation, PieceScale, piece_factors
from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.core.trace import TraceEvent
from coinfer.runtime.calibrate import (
    Calibration,
    DeviceFit,
    RangeFit,
    Shrinkage,
    apply,
    even_pipeline,
    fit_devices,
    fit_link,
    offset_keep,
    offset_pipeline,
    offset_probes,
    piece_scales_after,
    probe_plans,
    reprice_offsets,
    shrinkage,
)
from coinfer.runtime.prepare import emulated_hops

CLUSTER = TWO_YAML


def _instance():
    times = [{"a": 0.01, "b": 0.02}, {"a": 0.03, "b": 0.04}]
    return make_instance(times, [0, 0], [100, 10], 1000,
                         [Device("a", 1 << 30), Device("b", 1 << 30)],
                         [Link("a", "b", 1e7, 0.001), Link("b", "a", 1e7, 0.001)], "a")  # fmt: skip


def test_fit_link_separates_latency_and_bandwidth():
    # 5 ms + bytes / 2 MB/s, exactly
    samples = [(n, 0.005 + n / 2e6) for n in (10_000, 10_000, 50_000, 90_000)]
    f = fit_link("a", "b", 1e7, 0.001, samples)
    assert f.how == "bandwidth+latency"
    assert f.fitted_bandwidth_Bps == pytest.approx(2e6) and f.fitted_latency_s == pytest.approx(
        0.005
    )


def test_fit_link_one_size_moves_only_the_latency_and_few_samples_change_nothing():
    samples = [(10_000, 0.0012 + 10_000 / 1e7)] * 4  # 0.2 ms of per-message overhead
    f = fit_link("a", "b", 1e7, 0.001, samples)
    assert f.how == "latency" and f.fitted_bandwidth_Bps == 1e7
    assert f.fitted_latency_s == pytest.approx(0.0012)
    assert fit_link("a", "b", 1e7, 0.001, samples[:2]).how == "unchanged"


def test_fit_devices_is_measured_over_priced_times_the_old_scale():
    inst = _instance()
    plan = Plan("p", "throughput", (Stage(0, 0, ("a",)), Stage(1, 1, ("b",))), Metrics(0, 0))
    trace = [TraceEvent("a", "compute", r, 0.0, 0.015) for r in range(3)]
    trace += [TraceEvent("b", "compute", r, 0.0, 0.02) for r in range(3)]
    fits = {f.device: f for f in fit_devices([(plan, trace)], inst, {"a": 1.0, "b": 2.0})}
    assert fits["a"].ratio == pytest.approx(1.5) and fits["a"].new_scale == pytest.approx(1.5)
    assert fits["b"].ratio == pytest.approx(0.5) and fits["b"].new_scale == pytest.approx(1.0)


def test_probes_rotate_devices_over_the_same_ranges():
    plan = Plan("even", "throughput", (Stage(0, 0, ("a",)), Stage(1, 1, ("b",))), Metrics(0, 0))
    probes = probe_plans(plan)
    assert [[s.devices for s in p.stages] for p in probes] == [[("a",), ("b",)], [("b",), ("a",)]]
    assert [(s.first, s.last) for s in probes[1].stages] == [(0, 0), (1, 1)]


def test_apply_writes_scales_and_fitted_links_and_round_trips():
    cl = cluster_from_yaml(CLUSTER)
    fits = fit_devices([], _instance(), {})
    link = fit_link("a", "b", 1e7, 0.001, [(n, 0.002 + n / 5e6) for n in (1e4, 5e4, 9e4)])
    cal = Calibration("m", 8, fits, (link,), ())
    out = apply(cl, cal)
    ab = next(lk for lk in out.links if (lk.src, lk.dst) == ("a", "b"))
    assert ab.bandwidth_Bps == pytest.approx(5e6) and ab.latency_s == pytest.approx(0.002)
    ba = next(lk for lk in out.links if (lk.src, lk.dst) == ("b", "a"))
    assert ba.bandwidth_Bps == 1e7  # not probed: unchanged
    back = cluster_from_yaml(yaml.safe_dump(out.to_dict()))
    assert back.device("b").speed_scale == 2.0 and back == out
    # the fit prices; the testbed still emulates the configured link (twice calibrated: still)
    assert ab.emulate == LinkEmulation(1e7, 0.001) and ba.emulate is None
    assert apply(out, cal).link("a", "b").emulate == LinkEmulation(1e7, 0.001)
    hops = {(u, v): (bw, lat) for u, v, bw, lat, *_ in emulated_hops(back)}
    assert hops[("a", "b")] == pytest.approx((1e7, 0.001))


def test_calibrate_cli_runs_real_probes_and_writes_a_usable_cluster(tmp_path, capsys):
    src = tmp_path / "two.yaml"
    src.write_text(CLUSTER)
    target = tmp_path / "two.cal.yaml"
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--cluster", str(src), "--out", str(target),
              "--model", "tiny_cnn", "--requests", "8", "--offsets", "--json"])  # fmt: skip
    assert info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert {d["device"] for d in report["devices"]} == {"a", "b"}
    # two orders, the first repeated (the noise), then the early and the late offset pipeline
    assert len(report["probes"]) == 5
    assert sorted((o["device"], o["first"], o["last"]) for o in report["offsets"]) == [
        ("a", 0, 0), ("a", 4, 4), ("b", 0, 3), ("b", 1, 4)
    ]  # fmt: skip
    assert all(o["measured_s"] > 0 and o["priced_s"] > 0 for o in report["offsets"])
    for d in report["devices"]:
        assert len(d["ratios"]) == 3 and d["ratio"] > 0
        assert [len(r["samples"]) for r in d["ranges"]] in ([2, 1], [1, 2])
    assert report["shrinkage"]["noise_sd"] is not None
    cal = load_cluster(target)  # a valid cluster file, with the measured scales
    scales = {d["device"]: d["new_scale"] for d in report["devices"]}
    for dev in cal.devices:
        assert dev.speed_scale == pytest.approx(scales[dev.name], rel=1e-3)


def test_calibrate_without_offsets_runs_only_the_even_probes(tmp_path, capsys):
    src = tmp_path / "two.yaml"
    src.write_text(CLUSTER)
    with pytest.raises(SystemExit) as info:  # the default
        main(["calibrate", "--cluster", str(src), "--out", str(tmp_path / "c.yaml"),
              "--model", "tiny_cnn", "--requests", "8", "--json"])  # fmt: skip
    assert info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["probes"]) == 3 and report["offsets"] == []


def test_calibrate_rejects_too_few_requests(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--requests", "2", "--out", str(tmp_path / "x.yaml")])
    assert info.value.code == 2
    assert "at least 8" in capsys.readouterr().err


WIFI = """
name: air
source: a
devices:
  - {name: a, speed: {gflops: 5}, memory: 1GiB}
  - {name: b, speed: {gflops: 5}, memory: 1GiB}
  - {name: c, speed: {gflops: 5}, memory: 1GiB}
links:
  - {src: a, dst: b, bandwidth_mbps: 1000, latency_ms: 0.1}
media:
  - {name: wifi, members: [a, b, c], bandwidth_mbps: 80, latency_ms: 1}
"""


def test_a_medium_is_fitted_from_all_its_hops_pooled():
    """Hops a->c, c->b and b->c cross the air (a->b is wired): their transfers together fit the
    medium's latency and bandwidth; the wired hop's samples stay out of it."""
    from coinfer.runtime.calibrate import fit_links

    cl = cluster_from_yaml(WIFI)
    sizes = {0: 10_000, 1: 50_000, 2: 90_000}
    trace = [
        TraceEvent(res, "transfer", r, 0.0, 0.002 + sizes[k] / 5e6, k)
        for r in range(3)
        for k, res in enumerate(("a->c", "c->b", "b->c"))
    ] + [TraceEvent("a->b", "transfer", r, 0.0, 1.0, 0) for r in range(3)]
    fits = fit_links(cl, [(trace, lambda e: sizes[e.stage])])
    air = next(f for f in fits if f.medium == "wifi")
    assert air.transfers == 9 and air.label == "medium wifi"
    assert air.fitted_bandwidth_Bps == pytest.approx(5e6)
    assert air.fitted_latency_s == pytest.approx(0.002)
    out = apply(cl, Calibration("m", 8, (), fits, ()))
    assert out.media[0].bandwidth_Bps == pytest.approx(5e6)
    assert out.link("a", "c").bandwidth_Bps == pytest.approx(5e6)  # its hops follow the medium
    assert cluster_from_yaml(yaml.safe_dump(out.to_dict())).media == out.media
    hops = {(u, v): (bw, lat) for u, v, bw, lat, *_ in emulated_hops(out)}
    assert hops[("a", "c")] == pytest.approx((80e6 / 8, 0.001))  # the air as configured


# --- per-range calibration (speed.pieces) ---------------------------------------------------


def test_fit_devices_keeps_each_ranges_ratio():
    inst = _instance()
    p1 = Plan("p", "throughput", (Stage(0, 0, ("a",)), Stage(1, 1, ("b",))), Metrics(0, 0))
    p2 = Plan("q", "throughput", (Stage(0, 0, ("b",)), Stage(1, 1, ("a",))), Metrics(0, 0))
    t1 = [TraceEvent("a", "compute", r, 0.0, 0.005) for r in range(3)]  # a on piece 0: 0.5x
    t1 += [TraceEvent("b", "compute", r, 0.0, 0.04) for r in range(3)]
    t2 = [TraceEvent("b", "compute", r, 0.0, 0.02) for r in range(3)]
    t2 += [TraceEvent("a", "compute", r, 0.0, 0.06) for r in range(3)]  # a on piece 1: 2x
    fa = next(f for f in fit_devices([(p1, t1), (p2, t2)], inst, {}) if f.device == "a")
    assert fa.ratio == pytest.approx(1.0)  # geometric mean of 0.5 and 2
    assert [(r.first, r.last, r.ratio) for r in fa.ranges] == [
        (0, 0, pytest.approx(0.5)),
        (1, 1, pytest.approx(2.0)),
    ]


def test_probes_with_four_rotations_give_every_device_every_range():
    names = ("a", "b", "c", "d")
    base = Plan("even", "throughput", tuple(Stage(i, i, (n,)) for i, n in enumerate(names)),
                Metrics(0, 0))  # fmt: skip
    for rotations, expect in ((4, 4), (2, 2), (1, 1), (9, 4)):
        probes = probe_plans(base, rotations)
        assert len(probes) == expect
        seen = {(s.first, s.devices[0]) for p in probes for s in p.stages}
        assert len(seen) == 4 * expect  # no (range, device) pair twice
    assert [s.devices[0] for s in probe_plans(base, 2)[1].stages] == ["c", "d", "a", "b"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.2, 5.0), min_size=4, max_size=4),
    st.lists(st.floats(0.2, 5.0), min_size=4, max_size=4),
    st.floats(0.3, 3.0),
)
def test_applied_calibration_prices_every_probed_range_as_measured(ra, rb, old):
    """After apply, the calibrated cost model prices each (device, range) the probes ran at
    exactly the measured time (to the written rounding), whatever the ratios."""
    times = [{"a": 0.01 * (i + 1), "b": 0.02 + 0.005 * i} for i in range(8)]
    inst = make_instance(times, [0] * 8, [100] * 8, 1000,
                         [Device("a", 1 << 30), Device("b", 1 << 30)],
                         [Link("a", "b", 1e7, 0.001), Link("b", "a", 1e7, 0.001)], "a")  # fmt: skip
    ranges = [(0, 1), (2, 3), (4, 5), (6, 7)]
    runs = []
    for k in range(4):  # two devices over four ranges, rotated: a on even k, b on odd k
        stages = []
        trace = []
        for j, (f, last) in enumerate(ranges[k : k + 2] if k < 3 else [ranges[3], ranges[0]]):
            d = "ab"[j]
            r = (ra if d == "a" else rb)[(k + j) % 4]
            stages.append(Stage(f, last, (d,)))
            trace += [TraceEvent(d, "compute", q, 0.0, r * inst.compute_s(f, last, d))
                      for q in range(3)]  # fmt: skip
        runs.append((Plan("p", "throughput", tuple(stages), Metrics(0, 0)), trace))
    cl = cluster_from_yaml(CLUSTER.replace("scale: 2.0", f"scale: {old}"))
    fits = fit_devices(runs, inst, {d.name: d.speed_scale for d in cl.devices})
    out = apply(cl, Calibration("m", 8, fits, (), (), pieces=8))
    back = cluster_from_yaml(yaml.safe_dump(out.to_dict()))
    assert back == out
    for plan, trace in runs:
        for s in plan.stages:
            d = s.devices[0]
            dev = out.device(d)
            factors = piece_factors(dev.piece_scales, "m", 8) or [1.0] * 8
            base_scale = cl.device(d).speed_scale
            priced = sum(
                times[i][d] / base_scale * dev.speed_scale * factors[i]
                for i in range(s.first, s.last + 1)
            )
            measured = next(e.end_s for e in trace if e.resource == d)
            assert priced == pytest.approx(measured, rel=2e-3)


def test_piece_scales_only_apply_to_their_model_and_cut():
    ps = (PieceScale("m", 4, 0, 1, 0.5), PieceScale("m", 4, 3, 3, 2.0), PieceScale("x", 4, 0, 3, 9))
    assert piece_factors(ps, "m", 4) == [0.5, 0.5, 1.0, 2.0]
    assert piece_factors(ps, "m", 5) is None and piece_factors(ps, "y", 4) is None


def test_recalibrating_keeps_other_models_prices():
    dev = DeviceSpec(
        "a", gflops=5.0, speed_scale=1.0, piece_scales=(PieceScale("x", 2, 0, 1, 1.5),)
    )
    ranges = (RangeFit(0, 0, 2.0, (2.0,)), RangeFit(1, 1, 2.0, (2.0,)))
    fit = DeviceFit("a", (2.0, 2.0), 2.0, 1.0, 2.0, ranges)
    scales = piece_scales_after(dev, fit, "m", 2)
    # model m: both ranges at the mean ratio -> no entries; model x: 1.5 / 2 keeps its price
    assert scales == (PieceScale("x", 2, 0, 1, 0.75),)


def test_bad_piece_range_in_a_cluster_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLUSTER.replace(
        "scale: 2.0}", "scale: 2.0, pieces: [{model: m, pieces: 4, first: 2, last: 4, scale: 1}]}"
    ))  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(["cluster", "show", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "pieces" in err and "2..4 of 4" in err and "Traceback" not in err


def _fit(device, ranges):
    """A DeviceFit from ``[(samples...), ...]`` per range (ranges 0, 1, 2, ... one piece each)."""
    rs = tuple(RangeFit(i, i, math.exp(statistics.fmean(map(math.log, v))), tuple(v))
               for i, v in enumerate(ranges))  # fmt: skip
    g = math.exp(statistics.fmean(math.log(r.ratio) for r in rs))
    return DeviceFit(device, tuple(x for v in ranges for x in v), g, 1.0, g, rs)


def test_shrinkage_keeps_a_gap_far_beyond_the_noise_and_drops_pure_noise():
    # ranges 0.5 / 1 / 2 / 1 with repeats agreeing to 1 %: the gaps are structure, kept
    real = [_fit("a", [(0.5, 0.505), (1.0,), (2.0,), (1.0,)])]
    sh = shrinkage(real)
    assert sh.keep > 0.99 and sh.noise_sd == pytest.approx(0.007, abs=0.001)
    # the spread between ranges is no larger than the repeats' own: nothing kept
    noise = [_fit("a", [(0.9, 1.1), (1.1,), (0.9,), (1.0,)])]
    assert shrinkage(noise).keep == 0.0
    # no range probed twice: the noise is unknown and every range is kept as measured
    assert shrinkage([_fit("a", [(0.5,), (2.0,)])]) == Shrinkage(
        1.0, None, pytest.approx(0.693, abs=1e-3)
    )


def test_apply_shrinks_each_ranges_factor_by_keep():
    cl = cluster_from_yaml(CLUSTER)
    fit = _fit("a", [(0.5,), (2.0,)])  # geometric mean 1: factors 0.5 and 2 before shrinking
    for keep, expect in ((1.0, [0.5, 2.0]), (0.5, [0.7071, 1.4142]), (0.0, None)):
        cal = Calibration("m", 8, (fit,), (), (), pieces=2, shrinkage=Shrinkage(keep, 0.1, 0.7))
        assert piece_factors(apply(cl, cal).device("a").piece_scales, "m", 2) == expect


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.3, 3.0), min_size=2, max_size=6), st.floats(0.0, 0.3))
def test_shrinkage_keep_is_a_fraction_and_grows_as_the_noise_falls(ratios, noise):
    """keep is in [0, 1]; with the same ranges, less noise in the repeats never keeps less."""

    def with_noise(n):
        return [_fit("a", [(r * math.exp(n), r * math.exp(-n)) if i == 0 else (r,)
                           for i, r in enumerate(ratios)])]  # fmt: skip

    k_hi, k_lo = shrinkage(with_noise(noise)).keep, shrinkage(with_noise(noise / 2)).keep
    assert 0.0 <= k_hi <= 1.0 and 0.0 <= k_lo <= 1.0
    assert k_lo >= k_hi - 1e-9


def _pieces(n: int) -> SimpleNamespace:
    return SimpleNamespace(pieces=[None] * n)


@given(n=st.integers(2, 80), k=st.integers(2, 8))
def test_offset_boundaries_lie_inside_the_even_ranges(n, k) -> None:
    """The (early) offset pipeline covers the pieces in order, one stage per device, and each
    inner boundary lies strictly inside an even range (the late one's cut the last range too:
    see the probes' test below)."""
    devices = [f"d{i}" for i in range(k)]
    shifted = offset_pipeline(_pieces(n), devices)
    if n < 2 * k:
        assert shifted is None
        return
    assert shifted is not None
    assert [s.devices[0] for s in shifted.stages] == devices
    assert shifted.stages[0].first == 0 and shifted.stages[-1].last == n - 1
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(shifted.stages))
    even = even_pipeline(_pieces(n), devices)
    for s in shifted.stages[1:]:
        (inside,) = [e for e in even.stages if e.first <= s.first <= e.last]
        assert inside.first < s.first <= inside.last


def test_offset_pipeline_on_64_pieces_and_4_devices() -> None:
    shifted = offset_pipeline(_pieces(64), ["d0", "d1", "d2", "d3"])
    assert shifted is not None
    assert [(s.first, s.last) for s in shifted.stages] == [(0, 7), (8, 23), (24, 39), (40, 63)]
    late = offset_pipeline(_pieces(64), ["d0", "d1", "d2", "d3"], late=True)
    assert late is not None
    assert [(s.first, s.last) for s in late.stages] == [(0, 23), (24, 39), (40, 55), (56, 63)]


@given(n=st.integers(8, 80))
def test_offset_probes_cut_every_range_in_its_middle_on_every_device(n) -> None:
    """Four devices, four rotations: for every device and every even range, some offset probe
    gives that device a stage that starts or ends in the middle of that range."""
    devices = ["d0", "d1", "d2", "d3"]
    probes = offset_probes(_pieces(n), devices, rotations=4)
    assert len(probes) == 4
    middles = [round((i - 0.5) * n / 4) for i in range(1, 5)]
    for d in devices:
        ends = {
            b for p in probes for s in p.stages if s.devices == (d,) for b in (s.first, s.last + 1)
        }
        assert set(middles) <= ends, (d, middles, ends)


def test_offset_probes_price_a_cut_inside_an_even_range_as_measured() -> None:
    """tiny_cnn (5 pieces) on two devices: the even ranges 0-1 and 2-4 are priced right, but
    piece 0 really takes three quarters of 0-1. The offset probes (0 | 1-4) measure it;
    after the refit the cut at piece 1 is priced as measured and the even ranges keep theirs."""
    from coinfer.profile.costmodel import build_instance

    cl = cluster_from_yaml(CLUSTER)
    inst = build_instance("tiny_cnn", cl, source="analytic")
    price = {d: [inst.compute_s(i, i, d) for i in range(5)] for d in ("a", "b")}
    truth = {}
    for d, p in price.items():  # piece 0 takes 0.75 of range 0-1, which keeps its total
        head = p[0] + p[1]
        truth[d] = [0.75 * head, 0.25 * head, *p[2:]]
    plans = probe_plans(offset_pipeline(inst, ["a", "b"]), rotations=2)
    runs = []
    for plan in plans:
        trace = [
            TraceEvent(d, "compute", r, 0.0, sum(truth[d][s.first : s.last + 1]))
            for s in plan.stages
            for d in s.devices
            for r in range(4)
        ]
        runs.append((plan, trace))
    ranges = (RangeFit(0, 1, 1.0, (1.0,)), RangeFit(2, 4, 1.0, (1.0,)))
    fits = tuple(DeviceFit(d, (1.0,), 1.0, old, old, ranges) for d, old in (("a", 1.0), ("b", 2.0)))
    cal = Calibration("tiny_cnn", 8, fits, (), (), 5, None)
    cal2, repriced = reprice_offsets("tiny_cnn", cal, cl, runs, source="analytic")
    assert len(cal2.offsets) == 4
    after = build_instance("tiny_cnn", repriced, source="analytic")
    for d in ("a", "b"):
        for first, last in ((0, 0), (1, 4), (0, 1), (2, 4), (1, 1)):
            want = sum(truth[d][first : last + 1])
            assert after.compute_s(first, last, d) == pytest.approx(want, rel=0.03), (d, first)


def test_offset_refit_keeps_a_gap_beyond_the_noise_and_drops_what_the_noise_explains() -> None:
    from coinfer.runtime.refine import StageTime

    far = [StageTime("a", 0, 3, 1.8, 1.0), StageTime("b", 0, 3, 0.6, 1.0)]
    assert offset_keep(far, 0.02).keep > 0.99
    near = [StageTime("a", 0, 3, 1.01, 1.0), StageTime("b", 0, 3, 0.99, 1.0)]
    assert offset_keep(near, 0.02).keep == 0.0
    assert offset_keep(near, None).keep == 1.0  # no noise measured: all of it


def test_reprice_keep_shrinks_the_multipliers_geometrically() -> None:
    from coinfer.runtime.refine import StageTime, reprice

    cl = cluster_from_yaml(CLUSTER)
    priced = {"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0] * 4}
    measured = [StageTime("a", 0, 1, 3.0, 2.0)]  # pieces 0-1: 1.5x their price; 0-3 anchored
    full = reprice(cl, "m", 4, priced, measured, {"a": [(0, 3)]}, anchor_weight=1.0)
    half = reprice(cl, "m", 4, priced, measured, {"a": [(0, 3)]}, anchor_weight=1.0, keep=0.5)
    f_full = piece_factors(full.device("a").piece_scales, "m", 4)
    f_half = piece_factors(half.device("a").piece_scales, "m", 4)
    assert f_full == pytest.approx([1.5, 1.5, 0.5, 0.5], rel=0.03)
    assert f_half == pytest.approx([math.sqrt(x) for x in f_full], rel=1e-3)
