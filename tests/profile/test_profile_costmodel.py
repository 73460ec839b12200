"""CostModel / build_instance: sources in order, provenance, Instance fields, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coinfer.cluster import cluster_from_dict, default_local_cluster, load_cluster
from coinfer.core.evaluate import evaluate
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.graph import capture
from coinfer.profile.costmodel import (
    ANALYTIC_MIN_PIECE_S,
    build_cost_model,
    build_instance,
    cluster_to_instance_links,
    times_from_profile,
)
from coinfer.zoo import load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"


@pytest.fixture(scope="module")
def graph():
    model, inputs = load_model("tiny_cnn")
    return capture(model, inputs, name="tiny_cnn")


def test_analytic_instance_fields(graph):
    cl = load_cluster(EXAMPLES / "pico_rpi.yaml")
    inst = build_instance("tiny_cnn", cl, source="analytic")
    assert inst.num_pieces == graph.num_pieces
    assert inst.source == cl.source == "pi0"
    assert inst.input_bytes == graph.input_bytes
    for pc, info in zip(inst.pieces, graph.pieces, strict=True):
        assert pc.mem_bytes == info.mem_bytes and pc.out_bytes == info.out_bytes
        assert pc.time_s["pi0"] == pytest.approx(max(info.flops / 9e9, ANALYTIC_MIN_PIECE_S))
        assert pc.time_s["pi5"] == pytest.approx(max(info.flops / 3.6e9, ANALYTIC_MIN_PIECE_S))
    assert inst.meta["cost_source"] == {d: "analytic" for d in cl.device_names}
    assert inst.meta["model"] == "tiny_cnn"
    pi0 = inst.device_by_name["pi0"]
    assert pi0.mem_bytes == 4 * 1024**3 and pi0.power_active_w == 6.4
    assert pi0.dvfs_levels == (0.4, pytest.approx(2 / 3, abs=1e-6), 1.0)
    assert len(inst.dedicated_links) == len(cl.links) == 0
    assert [m.name for m in inst.media] == ["wifi"] and len(inst.links) == 6 * 5  # every pair
    assert inst.transfer_s("pi0", "pi1", 10_000) == pytest.approx(0.003 + 10_000 / (40e6 / 8))
    assert inst.path("pi2", "pi5", 10_000)[0].medium == "wifi"
    # the instance works with the reference cost model
    m = evaluate(inst, [Stage(0, inst.num_pieces - 1, ("pi0",))])
    assert m.latency_s == pytest.approx(inst.compute_s(0, inst.num_pieces - 1, "pi0"))


def test_instance_round_trips_through_json(tmp_path):
    inst = build_instance(
        "tiny_dag", load_cluster(EXAMPLES / "multihop_edge.yaml"), source="analytic", max_pieces=4
    )
    assert inst.num_pieces == 4
    inst.save(tmp_path / "i.json")
    from coinfer.core.instance import load_instance

    back = load_instance(tmp_path / "i.json")
    assert back.pieces == inst.pieces and back.links == inst.links
    # multi-hop: gateway reaches regional only through other devices
    assert len(inst.path("gateway", "regional", 1000)) >= 2


def test_links_helper_matches_cluster():
    cl = default_local_cluster()
    links = cluster_to_instance_links(cl)
    assert [(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s) for lk in links] == [
        (lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s) for lk in cl.links
    ]


def test_auto_order_falls_through_and_records_why():
    doc = {
        "name": "mixed",
        "source": "phone",
        "devices": [
            {"name": "phone", "speed": {"gflops": 50}, "memory": "4GiB"},
            {"name": "box", "speed": {"gflops": 20, "predict": {"cores": 1, "threads": 1, "quota": 0.5}}, "memory": "8GiB"},
            {"name": "server", "speed": {"gflops": 400, "predict": {"cores": 16, "threads": 16}}, "memory": "64GiB"},
        ],
        "links": [{"src": "phone", "dst": "box", "bandwidth_mbps": 100}, {"src": "box", "dst": "server", "bandwidth_mbps": 1000}],
    }  # fmt: skip
    cl = cluster_from_dict(doc)
    cm = build_cost_model("tiny_cnn", cl, sources=("predict", "analytic"))
    # box is inside the predictor's training domain; phone has no features; the 16-thread server
    # is outside what the trees have seen, so its analytic figure wins
    assert cm.sources == {"phone": "analytic", "box": "predict", "server": "analytic"}
    assert "skipped predict: no 'predict' features" in cm.details["phone"]
    assert "outside the predictor's training data (threads 16" in cm.details["server"]
    inst = cm.to_instance(request_source="box")
    assert inst.source == "box"
    assert inst.meta["cost_source"]["box"] == "predict"
    assert all(pc.time_s["box"] > 0 for pc in inst.pieces)


def test_forced_source_that_cannot_price_a_device_names_it():
    cl = load_cluster(EXAMPLES / "phone_edge_cloud.yaml")
    with pytest.raises(
        InputError, match=r"device 'phone' cannot be priced for tiny_cnn \(predict: no 'predict'"
    ):
        build_instance("tiny_cnn", cl, source="predict")


@pytest.mark.parametrize(("kw", "match"), [({"source": "magic"}, "unknown cost source 'magic'"),
                                           ({"sources": ("profile", "guess")}, r"unknown cost source\(s\) \['guess'\]")])  # fmt: skip
def test_bad_source_names(kw, match):
    with pytest.raises(InputError, match=match):
        build_instance("tiny_cnn", default_local_cluster(), **kw)


def test_bad_request_source():
    with pytest.raises(InputError, match="request source 'zz' is not a device"):
        build_instance("tiny_cnn", default_local_cluster(), source="analytic", request_source="zz")


def _fake_profile(graph, scale=1.0):
    nodes = [{"name": n.name, "time_s": 1e-4 * scale * (i + 1)} for i, n in enumerate(graph.nodes)]
    from coinfer.profile.cache import graph_hash

    nsum = sum(r["time_s"] for r in nodes)
    return {
        "model": "tiny_cnn",
        "graph_hash": graph_hash(graph),
        "nodes": nodes,
        "pieces": [{"time_s": 0.001 * (i + 1)} for i in range(graph.num_pieces)],
        "nodes_sum_s": nsum,
        "pieces_sum_s": nsum / 2,
    }


def test_times_from_profile_exact_and_by_node_sums(graph):
    prof = _fake_profile(graph)
    assert times_from_profile(graph, prof) == [0.001 * (i + 1) for i in range(graph.num_pieces)]
    merged = graph.with_max_pieces(2)
    times = times_from_profile(merged, prof)
    node_t = {r["name"]: r["time_s"] for r in prof["nodes"]}
    assert times == pytest.approx([0.5 * sum(node_t[n] for n in p.nodes) for p in merged.pieces])
    assert times_from_profile(graph, {"nodes": [{"name": "other", "time_s": 1}]}) is None


def test_profile_file_source(tmp_path, graph):
    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "tiny.json").write_text(json.dumps(_fake_profile(graph)))
    (tmp_path / "prof" / "other.json").write_text(json.dumps({"model": "resnet18"}))
    doc = {
        "name": "p",
        "source": "a",
        "devices": [
            {"name": "a", "speed": {"profile": "prof", "gflops": 1}, "memory": "1GiB"},
            {"name": "b", "speed": {"gflops": 1}, "memory": "1GiB"},
        ],
        "links": [{"src": "a", "dst": "b", "bandwidth_mbps": 100}],
    }
    cl = cluster_from_dict(doc, base_dir=tmp_path)
    cm = build_cost_model("tiny_cnn", cl, graph=graph)
    assert cm.sources == {"a": "profile", "b": "analytic"}
    assert "tiny.json" in cm.details["a"]
    assert [cm.time_s(i, "a") for i in range(graph.num_pieces)] == [
        0.001 * (i + 1) for i in range(graph.num_pieces)
    ]
    # a profile of another model does not count: falls through to analytic
    cm2 = build_cost_model("tiny_dag", cl)
    assert cm2.sources["a"] == "analytic" and "no profile of 'tiny_dag'" in cm2.details["a"]


@pytest.mark.integration
def test_emulated_device_is_profiled_locally_and_cached(tmp_path):
    doc = {
        "name": "one",
        "source": "d",
        "devices": [
            {
                "name": "d",
                "speed": {"gflops": 1},
                "memory": "1GiB",
                "emulate": {"cpu_quota": 1.0, "threads": 1},
            }
        ],
    }
    cl = cluster_from_dict(doc)
    opts = {"repeats": 2, "warmup": 0, "cache_directory": tmp_path}
    cm = build_cost_model("tiny_mlp", cl, profile_options=opts)
    assert cm.sources == {"d": "profile"}
    assert "local profile (measured" in cm.details["d"]
    again = build_cost_model("tiny_mlp", cl, profile_options=opts)
    assert "local profile (cached" in again.details["d"]
    assert again.times_s == cm.times_s


def test_per_range_calibration_multiplies_only_its_model_and_cut(graph):
    doc = {
        "name": "two", "source": "a",
        "devices": [
            {"name": "a", "speed": {"gflops": 5, "scale": 2.0, "pieces": [
                {"model": "tiny_cnn", "pieces": graph.num_pieces, "first": 1, "last": 2,
                 "scale": 3.0}]}, "memory": "1GiB"},
            {"name": "b", "speed": {"gflops": 5, "pieces": [
                {"model": "tiny_cnn", "pieces": graph.num_pieces + 1, "first": 0, "last": 0,
                 "scale": 3.0}]}, "memory": "1GiB"},
        ],
        "links": [{"src": "a", "dst": "b", "bandwidth_mbps": 80}],
    }  # fmt: skip
    plain = build_cost_model("tiny_cnn", cluster_from_dict(doc | {"devices": [
        {"name": "a", "speed": {"gflops": 5}, "memory": "1GiB"},
        {"name": "b", "speed": {"gflops": 5}, "memory": "1GiB"}]}), source="analytic", graph=graph)  # fmt: skip
    cm = build_cost_model("tiny_cnn", cluster_from_dict(doc), source="analytic", graph=graph)
    for i, (t, t0) in enumerate(zip(cm.times_s, plain.times_s, strict=True)):
        assert t["a"] == pytest.approx(t0["a"] * (6.0 if i in (1, 2) else 2.0))
        assert t["b"] == pytest.approx(t0["b"])  # calibrated for another cut: not applied
    assert "per-range calibration" in cm.details["a"]
    assert "ignored (made for" in cm.details["b"]
