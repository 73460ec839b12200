"""Refinement: a plan's measured stages re-price its pieces (pure fits), and one real round."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_clusters import TWO_YAML

from coinfer.cli import main
from coinfer.cluster import cluster_from_yaml, load_cluster
from coinfer.cluster.types import PieceScale, piece_factors
from coinfer.profile.costmodel import build_instance
from coinfer.runtime.refine import (
    MAX_FACTOR,
    StageTime,
    refit_pieces,
    reprice,
    segments,
)

CLUSTER = TWO_YAML


def _cost(priced, factors, a: int, b: int) -> float:
    """Pieces ``a..b`` priced with ``factors``."""
    return sum(priced[i] * factors[i] for i in range(a, b + 1))


def _ranges(n: int):
    return st.lists(
        st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).map(lambda t: (min(t), max(t))),
        min_size=1,
        max_size=5,
    )


@given(n=st.integers(1, 30), data=st.data())
def test_segments_partition_the_pieces_and_every_range_is_whole_segments(n, data) -> None:
    ranges = data.draw(_ranges(n))
    segs = segments(ranges, n)
    assert segs[0][0] == 0 and segs[-1][1] == n - 1
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(segs))
    for a, b in ranges:
        inside = [s for s in segs if a <= s[0] and s[1] <= b]
        assert sum(e - s + 1 for s, e in inside) == b - a + 1


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 24), data=st.data())
def test_consistent_measurements_are_reproduced(n, data) -> None:
    """Measured times made by a true per-segment multiplier: the refit prices every measured
    range at its measured time (the ridge only decides what no range separates)."""
    priced = data.draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n))
    ranges = data.draw(_ranges(n))
    truth = {seg: data.draw(st.floats(0.3, 3.0)) for seg in segments(ranges, n)}
    mult = [next(x for (s, e), x in truth.items() if s <= i <= e) for i in range(n)]
    measured = [(a, b, _cost(priced, mult, a, b)) for a, b in ranges]
    x = refit_pieces(priced, measured)
    for a, b, t in measured:
        assert _cost(priced, x, a, b) == pytest.approx(t, rel=0.03)


def test_a_stage_cut_inside_a_calibrated_range_moves_time_between_its_parts() -> None:
    """The MobileNetV2 case: pieces 0-5 as a stage measured 23.5 ms, priced 13.2; the whole
    calibrated range 0-15 was right at 30.3 ms. The refit gives 0-5 its measured time and
    keeps 0-15's, so 6-15 get the rest; later ranges stay as they were."""
    priced = [13.2 / 6] * 6 + [17.1 / 10] * 10 + [1.0] * 48
    x = refit_pieces(priced, [(0, 5, 23.5)], anchors=[(0, 15), (16, 31), (32, 47), (48, 63)])
    first, quarter = _cost(priced, x, 0, 5), _cost(priced, x, 0, 15)
    assert first == pytest.approx(23.5, rel=0.02) and quarter == pytest.approx(30.3, rel=0.02)
    assert x[16:] == pytest.approx([1.0] * 48)


def test_no_measurement_changes_nothing_and_a_wild_one_is_bounded() -> None:
    assert refit_pieces([1.0, 2.0], [], anchors=[(0, 1)]) == [1.0, 1.0]
    x = refit_pieces([1.0, 1.0], [(0, 1, 500.0)])
    assert max(x) == pytest.approx(MAX_FACTOR)


def test_reprice_multiplies_the_model_factors_and_keeps_other_models() -> None:
    cl = cluster_from_yaml(CLUSTER)
    a = replace(cl.device("a"), piece_scales=(PieceScale("m", 4, 0, 3, 2.0),
                                              PieceScale("x", 4, 0, 3, 1.5)))  # fmt: skip
    cl = replace(cl, devices=(a, cl.device("b")))
    priced = {"a": [2.0, 2.0, 2.0, 2.0], "b": [1.0] * 4}  # a's current prices (factor 2 in)
    # pieces 0-1 ran in 6.0 (priced 4.0); the calibrated range 0-3 keeps its 8.0, so 2-3 get 2.0
    out = reprice(cl, "m", 4, priced, [StageTime("a", 0, 1, 6.0, 4.0)], {"a": [(0, 3)]})
    assert piece_factors(out.device("a").piece_scales, "m", 4) == pytest.approx(
        [3.0, 3.0, 1.0, 1.0], rel=0.03
    )
    assert piece_factors(out.device("a").piece_scales, "x", 4) == [1.5] * 4
    assert out.device("b") == cl.device("b")  # nothing measured on b


@pytest.mark.integration
def test_calibrate_refine_runs_the_chosen_plan_and_prices_its_stages_as_measured(tmp_path, capsys):
    src = tmp_path / "two.yaml"
    src.write_text(CLUSTER)
    target = tmp_path / "two.cal.yaml"
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--cluster", str(src), "--out", str(target), "--model", "tiny_cnn",
              "--requests", "8", "--refine", "1", "--json"])  # fmt: skip
    assert info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    (round1,) = report["refinement"]["rounds"]
    assert round1["measured_rps"] > 0 and round1["stages"]
    inst = build_instance("tiny_cnn", load_cluster(target))
    for s in round1["stages"]:  # the written cluster prices each measured stage as it ran
        priced = inst.compute_s(s["first"], s["last"], s["device"])
        assert priced == pytest.approx(s["measured_s"], rel=0.1), report["refinement"]


def _two_piece_instance(b_times):
    from coinfer.core.instance import Device, Link, make_instance

    times = [{"a": 0.02, "b": b_times[0]}, {"a": 0.02, "b": b_times[1]}]
    return make_instance(times, [0, 0], [100, 10], 1000,
                         [Device("a", 1 << 30), Device("b", 1 << 30)],
                         [Link("a", "b", 1e7, 0.001), Link("b", "a", 1e7, 0.001)], "a")  # fmt: skip


def _one_device_plan(inst, dev):
    from coinfer.core.evaluate import evaluate
    from coinfer.core.plans import Plan, Stage

    stages = (Stage(0, 1, (dev,)),)
    return Plan("t", "throughput", stages, evaluate(inst, stages))


def test_a_refinement_ends_on_a_plan_it_ran_unless_another_is_clearly_better() -> None:
    from coinfer.runtime.refine import MARGIN, final_pick

    near = _two_piece_instance([0.02, 0.021])  # b's plan 2.4 % slower than a's
    on_a, on_b = _one_device_plan(near, "a"), _one_device_plan(near, "b")
    assert final_pick(near, on_a, [on_a]) == (on_a, True)  # the choice was run
    assert final_pick(near, on_a, []) == (on_a, False)  # nothing was run
    kept, ran = final_pick(near, on_a, [on_b])  # within the margin: the plan that ran
    assert ran and kept.stages == on_b.stages
    assert kept.predicted.period_s == pytest.approx(0.041)  # priced on the final instance
    far = _two_piece_instance([0.03, 0.03])  # b's plan 50 % slower: the new choice wins
    on_a, on_b = _one_device_plan(far, "a"), _one_device_plan(far, "b")
    assert final_pick(far, on_a, [on_b]) == (on_a, False)
    assert MARGIN < 0.5
