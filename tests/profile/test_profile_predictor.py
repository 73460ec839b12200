"""Affinity predictor: features, training on a known law, held-out quotas, persistence, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.cluster.types import DeviceFeatures
from coinfer.errors import InputError
from coinfer.profile.features import (
    FEATURE_NAMES,
    MISSING,
    OP_FAMILIES,
    device_vector,
    effective_cores,
    feature_matrix,
    op_family,
    touched_param_bytes,
)
from coinfer.profile.predictor import (
    PREDICTOR_VERSION,
    AffinityPredictor,
    error_summary,
    evaluate_on_profiles,
    host_features,
    load_predictor,
    train_predictor,
)


def test_op_families():
    # dense 3x3 conv over 16 channels: 2*9*16 = 288 FLOPs per output element
    assert op_family("conv2d", flops=288 * 1000, out_numel=1000, in_channels=16) == "conv"
    # depthwise 3x3: 2*9 = 18 per output element, fewer than the 32 input channels
    assert op_family("conv2d", flops=18 * 1000, out_numel=1000, in_channels=32) == "depthwise_conv"
    assert op_family("relu") == "activation"
    assert op_family("layernorm") == "norm"
    assert op_family("getitem") == "view"
    assert op_family("some_new_op") == "other"
    assert set(OP_FAMILIES) >= {"conv", "linear", "matmul", "attention", "other"}


def test_feature_matrix_layout_and_missing_device_values():
    rec = {"op": "linear", "flops": 2048, "param_bytes": 4096, "in_bytes": 128, "out_bytes": 64,
           "shape": [1, 16], "in_shape": [1, 32], "n_inputs": 1}  # fmt: skip
    dev = DeviceFeatures(cores=4, threads=2, quota=0.5)
    X = feature_matrix([rec, rec], [dev, host_features(1, None)])
    assert X.shape == (2, len(FEATURE_NAMES))
    col = dict(zip(FEATURE_NAMES, X[0], strict=True))
    assert col["op_linear"] == 1.0 and col["op_conv"] == 0.0
    assert col["log_flops"] == pytest.approx(math.log1p(2048))
    assert col["log_eff_cores"] == pytest.approx(math.log(0.5))
    assert col["freq_ghz"] == MISSING and col["log_mem_bw"] == MISSING
    assert effective_cores(DeviceFeatures(threads=1, quota=0.25)) == 0.25
    assert effective_cores(DeviceFeatures(threads=2, quota=4.0)) == 2.0
    assert device_vector(DeviceFeatures(freq_ghz=1.5))[4] == 1.5


def test_context_columns_describe_the_previous_node():
    conv = {"op": "conv2d", "flops": 10**6, "param_bytes": 0, "in_bytes": 4, "out_bytes": 4000,
            "shape": [1, 10, 10, 10], "in_shape": [1, 1, 10, 10], "n_inputs": 1}  # fmt: skip
    view = {**conv, "op": "view", "flops": 0, "out_bytes": 400}
    dev = host_features(2, 0.5)
    X = feature_matrix([conv, view, view], [dev] * 3)
    col = {name: X[:, i] for i, name in enumerate(FEATURE_NAMES)}
    # the first node has no predecessor; the second follows the conv, the third a view
    assert list(col["prev_computes"]) == [0.0, 1.0, 0.0]
    assert list(col["prev_log_flops"]) == pytest.approx([0.0, math.log1p(10**6), 0.0])
    assert list(col["prev_log_out_bytes"]) == pytest.approx(
        [0.0, math.log1p(4000), math.log1p(400)]
    )
    assert feature_matrix([], []).shape == (0, len(FEATURE_NAMES))


def test_an_embedding_reads_only_the_rows_it_gathers():
    table = {"op": "embedding", "param_bytes": 154_000_000, "out_bytes": 49_152}
    assert touched_param_bytes(table) == 49_152
    assert touched_param_bytes({**table, "op": "linear"}) == 154_000_000
    assert touched_param_bytes({**table, "out_bytes": 10**9}) == 154_000_000


# ----- a synthetic world with a known law: t = (flops / 2 GFLOP/s + 20 us) / c_eff ---------------
# (under a CFS quota the per-op overhead is CPU time too, so it scales with 1 / c_eff as well)

OPS = ("conv2d", "linear", "relu", "add", "maxpool")


def _law(flops: float, quota: float, threads: int) -> float:
    return (flops / 2e9 + 20e-6) / min(quota, threads)


def _synthetic_profile(seed: int, quota: float, threads: int, n: int = 120) -> dict:
    rng = np.random.default_rng(seed)
    nodes = []
    for i in range(n):
        op = OPS[i % len(OPS)]
        c = int(rng.integers(4, 128))
        hw = int(rng.integers(4, 64))
        out_numel = c * hw * hw
        per_out = 2 * 9 * c if op == "conv2d" else (2 * c if op == "linear" else 1)
        flops = float(out_numel * per_out)
        nodes.append({
            "name": f"n{i}", "op": op, "flops": int(flops), "param_bytes": 36 * c * c if op == "conv2d" else 0,
            "out_bytes": 4 * out_numel, "in_bytes": 4 * out_numel, "shape": [1, c, hw, hw],
            "in_shape": [1, c, hw, hw], "n_inputs": 1, "time_s": _law(flops, quota, threads),
        })  # fmt: skip
    pieces = [{"nodes": [f"n{i}", f"n{i + 1}"], "time_s": 0.9 * sum(nodes[j]["time_s"] for j in (i, i + 1)),
               "nodes_sum_s": sum(nodes[j]["time_s"] for j in (i, i + 1))} for i in range(0, n, 2)]  # fmt: skip
    return {
        "model": f"synthetic{seed}",
        "threads": threads,
        "quota": quota,
        "nodes": nodes,
        "pieces": pieces,
    }


@pytest.fixture(scope="module")
def synthetic():
    train = [_synthetic_profile(s, q, t) for s in range(3) for q in (1.0, 0.25) for t in (1, 2)]
    held = [_synthetic_profile(s, 0.5, t) for s in (10, 11) for t in (1, 2)]
    return train, held, train_predictor(train, seed=0, params={"max_iter": 200})


def test_learns_the_law_and_generalises_to_an_unseen_quota(synthetic):
    train, held, pred = synthetic
    assert pred.piece_scale == pytest.approx(0.9)
    res = evaluate_on_profiles(pred, held)
    # held-out models AND an unseen quota: the c_eff normalisation makes this interpolation easy
    assert res["nodes"]["within20"] > 90
    assert res["pieces"]["mape"] < 10
    assert set(res["per_family"]) <= set(OP_FAMILIES)
    # monotone in device speed: the same node is slower under a smaller quota
    rec = train[0]["nodes"][0]
    fast = pred.predict_records([rec], DeviceFeatures(threads=1, quota=1.0))[0]
    slow = pred.predict_records([rec], DeviceFeatures(threads=1, quota=0.25))[0]
    assert slow == pytest.approx(4 * fast, rel=0.25)


def test_training_domain_is_recorded_and_checked(synthetic):
    _, _, pred = synthetic
    assert pred.info["domain"] == {"threads": [1, 2], "quota": [0.25, 1.0]}
    assert pred.covers(DeviceFeatures(threads=1, quota=0.5))[0]
    ok, why = pred.covers(DeviceFeatures(threads=4, quota=4.0))
    assert not ok and "threads 4 outside the trained range 1-2" in why
    ok, why = pred.covers(DeviceFeatures(threads=1, quota=0.05))
    assert not ok and "quota 0.05 outside" in why


def test_same_data_and_seed_same_model(synthetic):
    train, held, pred = synthetic
    again = train_predictor(train, seed=0, params={"max_iter": 200})
    recs = held[0]["nodes"]
    dev = DeviceFeatures(threads=1, quota=0.5)
    assert np.array_equal(pred.predict_records(recs, dev), again.predict_records(recs, dev))


def test_clock_scaling_for_described_devices(synthetic, monkeypatch):
    _, held, pred = synthetic
    from coinfer.profile import predictor as mod

    monkeypatch.setattr(mod, "host_clock_ghz", lambda: 2.0)
    rec = held[0]["nodes"][:5]
    base = pred.predict_records(rec, DeviceFeatures(threads=1, quota=1.0))
    half = pred.predict_records(rec, DeviceFeatures(threads=1, quota=1.0, freq_ghz=1.0))
    assert np.allclose(half, 2 * base)


def test_save_load_round_trip_and_bad_files(synthetic, tmp_path):
    _, held, pred = synthetic
    path = tmp_path / "p.joblib"
    pred.save(path)
    back = load_predictor(path)
    dev = DeviceFeatures(threads=2, quota=0.5)
    assert np.array_equal(
        back.predict_records(held[0]["nodes"], dev), pred.predict_records(held[0]["nodes"], dev)
    )
    assert back.piece_scale == pred.piece_scale
    with pytest.raises(InputError, match="predictor file not found"):
        load_predictor(tmp_path / "none.joblib")
    (tmp_path / "junk.joblib").write_text("not a joblib file")
    with pytest.raises(InputError, match="not a coinfer predictor file"):
        load_predictor(tmp_path / "junk.joblib")
    import joblib

    joblib.dump({"version": PREDICTOR_VERSION + 1}, tmp_path / "old.joblib")
    with pytest.raises(InputError, match="is not the supported version"):
        load_predictor(tmp_path / "old.joblib")


def test_training_needs_rows():
    with pytest.raises(InputError, match="no training rows"):
        train_predictor([])


def test_error_summary():
    s = error_summary([1.0, 1.0, 1.0, 1.0], [1.05, 1.15, 0.5, 1.0])
    assert s["n"] == 4
    assert s["mape"] == pytest.approx(100 * (0.05 + 0.15 + 0.5 + 0) / 4)
    assert s["within10"] == 50.0 and s["within20"] == 75.0
    assert math.isnan(error_summary([], [])["mape"])


def test_packaged_predictor_predicts_sensible_times():
    from coinfer.graph import capture
    from coinfer.profile.predictor import DEFAULT_PREDICTOR_PATH, default_predictor
    from coinfer.zoo import load_model

    if not DEFAULT_PREDICTOR_PATH.exists():
        pytest.skip("no packaged predictor yet")
    pred = default_predictor()
    assert isinstance(pred, AffinityPredictor)
    model, inputs = load_model("resnet18", (1, 3, 64, 64))
    graph = capture(model, inputs)
    fast = pred.predict_graph(graph, DeviceFeatures(threads=1, quota=1.0))
    slow = pred.predict_graph(graph, DeviceFeatures(threads=1, quota=0.25))
    assert len(fast.piece_s) == graph.num_pieces and all(t > 0 for t in fast.piece_s)
    assert slow.total_s > 2 * fast.total_s
    # within an order of magnitude of a plausible single-core figure (0.6 GFLOPs at 1-30 GFLOP/s)
    assert 0.3 * graph.total_flops / 30e9 < fast.total_s < 3 * graph.total_flops / 1e9


def test_bench_cross_validation_leaves_each_model_out(synthetic, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_predictor as bench

    train, _, _ = synthetic
    seen: list[list[str]] = []
    from coinfer.profile import predictor as mod

    original = mod.train_predictor

    def spy(profiles, **kw):
        seen.append(sorted({p["model"] for p in profiles}))
        return original(profiles, **kw)

    # cross_validate imports train_predictor when it runs, so it gets the spy
    monkeypatch.setattr(mod, "train_predictor", spy)
    cv = bench.cross_validate(train, {"max_iter": 50})
    models = sorted({p["model"] for p in train})
    assert seen == [[m for m in models if m != left] for left in models]
    assert set(cv) == {"all", "1", "2"}
    assert cv["all"]["pieces"]["n"] == sum(len(p["pieces"]) for p in train)
    assert cv["all"]["pieces"]["mape"] < 15  # the synthetic law transfers across models
    # pieces are priced as the stage factor times the sum of their nodes
    prof = train[0]
    sums = bench._piece_sums(prof, np.ones(len(prof["nodes"])), 0.5)
    assert list(sums) == [0.5 * len(pc["nodes"]) for pc in prof["pieces"]]


def test_piece_calibrated_targets_sum_to_each_measured_piece() -> None:
    """Two-thread node targets are rescaled so ``scale x`` the sum of a piece's nodes is the
    piece as measured; a node in no piece keeps its time."""
    from coinfer.profile.predictor import piece_calibrated

    prof = {
        "nodes": [{"name": n} for n in ("a", "b", "c", "d", "e")],
        "pieces": [
            {"nodes": ["a", "b"], "time_s": 0.009},
            {"nodes": ["c", "d"], "time_s": 0.002},
        ],
    }
    y = np.array([0.001, 0.002, 0.003, 0.001, 0.004])
    out = piece_calibrated(prof, y, piece_scale=1.5)
    assert 1.5 * out[:2].sum() == pytest.approx(0.009) and 1.5 * out[2:4].sum() == pytest.approx(
        0.002
    )
    assert out[0] / out[1] == pytest.approx(0.5)  # the split inside a piece is kept
    assert out[4] == pytest.approx(0.004)
