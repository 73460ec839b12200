"""The profiler on a tiny model: nodes and pieces measured, statistics, cache hits, quota paths."""

from __future__ import annotations

import time

import pytest

from coinfer.errors import InputError
from coinfer.graph import capture
from coinfer.profile import profiler
from coinfer.profile.cgroup import cgroup_support
from coinfer.profile.profiler import Stats, is_throttled, measure, profile_model
from coinfer.zoo import load_model

SUPPORTED, WHY = cgroup_support()


def test_stats_median_mean_iqr():
    st = Stats.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st.median_s == 3.0
    assert st.mean_s == pytest.approx(22.0)
    assert st.iqr_s == pytest.approx(2.0)  # inclusive quartiles 2 and 4
    assert st.estimate(throttled=False) == 3.0
    assert st.estimate(throttled=True) == pytest.approx(22.0)
    assert Stats.of([5.0]).iqr_s == 0.0


@pytest.mark.parametrize(
    ("quota", "threads", "expected"),
    [(None, 1, False), (1.0, 1, False), (0.5, 1, True), (1.0, 2, True), (2.0, 2, False)],
)
def test_is_throttled(quota, threads, expected):
    assert is_throttled(quota, threads) is expected


def test_measure_tiny_model_in_process():
    data = measure("tiny_dag", repeats=3, warmup=1)
    model, inputs = load_model("tiny_dag")
    graph = capture(model, inputs, name="tiny_dag")
    assert [r["name"] for r in data["nodes"]] == [n.name for n in graph.nodes]
    assert len(data["pieces"]) == graph.num_pieces
    assert data["passes"] == 3
    for r in data["nodes"]:
        assert r["time_s"] > 0 and r["iqr_s"] >= 0 and r["median_s"] == r["time_s"]
    for p in data["pieces"]:
        assert p["time_s"] > 0
        assert p["overhead_s"] == pytest.approx(p["time_s"] - p["nodes_sum_s"])
    assert data["pieces_sum_s"] == pytest.approx(sum(p["time_s"] for p in data["pieces"]))
    assert data["model_time"]["time_s"] > 0


def test_measure_keeps_timing_under_throttling_for_min_duration():
    data = measure("tiny_mlp", repeats=2, warmup=0, quota=0.5, threads=1, min_duration_s=0.05)
    assert data["throttled"] is True
    assert data["passes"] > 2  # kept measuring to fill the minimum duration
    assert data["timed_s"] >= 0.05
    # under a quota every item is charged its CPU time times the passes' wall/CPU ratio
    assert data["stall_factor"] == pytest.approx(data["timed_s"] / data["timed_cpu_s"])
    for r in data["nodes"] + data["pieces"]:
        assert r["time_s"] == pytest.approx(r["cpu_s"] * data["stall_factor"])


def test_throttled_piece_times_follow_cpu_share_not_random_stalls():
    """Stalls of a throttled run land on whatever call is running; per-piece times come from
    CPU time times the passes' wall/CPU ratio, so they sum to the chain's CPU share of the wall
    time, and that ratio is what a half-core quota makes it (about 2)."""
    data = measure("tiny_cnn", repeats=30, warmup=2, quota=0.5, threads=1, min_duration_s=0.3)
    cpu = [p["cpu_s"] for p in data["pieces"]]
    times = [p["time_s"] for p in data["pieces"]]
    assert sum(times) == pytest.approx(sum(cpu) * data["stall_factor"])
    assert data["stall_factor"] == pytest.approx(data["timed_s"] / data["timed_cpu_s"])
    # the shares of the pieces are their CPU shares (stalls are spread, not attributed at random)
    for t, c in zip(times, cpu, strict=True):
        assert t / sum(times) == pytest.approx(c / sum(cpu))
    # (the ratio itself under a real quota: test_profile_under_a_real_quota, root only)


def test_profile_cache_hit_and_key(tmp_path):
    t0 = time.perf_counter()
    first, hit1 = profile_model("tiny_cnn", repeats=2, warmup=0, cache_directory=tmp_path)
    mid = time.perf_counter()
    second, hit2 = profile_model("tiny_cnn", repeats=2, warmup=0, cache_directory=tmp_path)
    end = time.perf_counter()
    assert (hit1, hit2) == (False, True)
    assert second == first
    assert end - mid < mid - t0  # a hit does not start a measuring process
    assert first["emulation"] == "none" and first["key"]["threads"] == 1
    other, hit3 = profile_model(
        "tiny_cnn", repeats=2, warmup=0, threads=2, cache_directory=tmp_path
    )
    assert hit3 is False and other["threads"] == 2
    assert len(list(tmp_path.glob("profile-v*.json"))) == 2


def test_without_cgroups_falls_back_to_threads_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(profiler, "cgroup_support", lambda: (False, "creating cgroups needs root"))
    monkeypatch.setattr(profiler, "_loadavg", lambda: 99.0)
    notes = []
    data, _ = profile_model(
        "tiny_mlp", quota=0.5, repeats=2, warmup=0, cache_directory=tmp_path, notice=notes.append
    )
    assert notes and "cannot apply a 0.5-core CPU quota: creating cgroups needs root" in notes[0]
    assert data["emulation"].startswith("threads only")
    assert data["key"]["quota"] is None and data["requested_quota"] == 0.5
    # a busy machine is reported: quotas are caps, not reservations
    assert data["loadavg_1m"] == 99.0
    assert any("the machine was busy while profiling (load 99.0" in n for n in notes)


@pytest.mark.root
@pytest.mark.skipif(not SUPPORTED, reason=f"cgroup v1 quotas unavailable: {WHY}")
def test_profile_under_a_real_quota(tmp_path):
    data, hit = profile_model("tiny_mlp", quota=0.3, repeats=2, warmup=0, cache_directory=tmp_path)
    assert not hit
    assert data["emulation"] == "cgroup" and data["key"]["quota"] == 0.3
    assert data["throttled"] is True
    assert data["throttled_periods"] > 0  # the kernel really throttled the measuring process
    assert data["timed_s"] >= profiler.THROTTLED_MIN_DURATION_S
    # wall per CPU second under a 0.3-core quota is ~1/0.3; every piece is charged at that rate
    assert 2.0 < data["stall_factor"] < 4.5
    for p in data["pieces"]:
        assert p["time_s"] == pytest.approx(p["cpu_s"] * data["stall_factor"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"quota": 0.0}, "cpu-quota must be > 0"), ({"threads": 0}, "threads must be >= 1")],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(InputError, match=match):
        profile_model("tiny_mlp", cache_directory=tmp_path, **kwargs)


def test_unknown_model_is_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown model 'no_such_model'"):
        profile_model("no_such_model", cache_directory=tmp_path)


def test_failure_inside_the_measuring_process_is_one_error():
    from coinfer.errors import CoinferError
    from coinfer.profile._isolate import run_child

    args = {"spec": "no_such_model", "input_shape": None, "max_pieces": None, "threads": 1, "quota": None,
            "repeats": 1, "warmup": 0}  # fmt: skip
    with pytest.raises(
        CoinferError,
        match=r"profiling no_such_model failed in the measuring process: .*unknown model",
    ):
        run_child(args, None, None)
