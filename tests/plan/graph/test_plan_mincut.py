"""DADS min-cut and CIC compression: exact against enumeration, mapped to valid plans."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hand_instances import three_devices
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.evaluate import check_plan, objective_value
from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.plan.graph.cic import compress
from coinfer.plan.graph.mincut import (
    MincutOptions,
    best_prefix_cut,
    chain_dag,
    cut_cost,
    dads_cut,
    dag_from_graph,
    plan_mincut,
)
from coinfer.testing import random_adv_instance


def random_dag(
    rng: np.random.Generator, n: int, devices: tuple[str, str] = ("a", "b")
) -> nx.DiGraph:
    """A random DAG with fan-out and skip edges (ResNet/Inception-like shapes, small)."""
    g = nx.DiGraph()
    for v in range(n):
        g.add_node(
            v,
            time_s={
                devices[0]: float(rng.uniform(1e-3, 1e-2)),
                devices[1]: float(rng.uniform(1e-4, 3e-3)),
            },
            out_bytes=int(rng.integers(1_000, 1_000_000)),
        )
        if v:
            k = int(rng.integers(1, 3))
            for u in rng.choice(v, size=min(v, k), replace=False):
                g.add_edge(int(u), v)
    g.graph["input_bytes"] = 300_000
    return g


def closed_sets(g: nx.DiGraph):
    """Every predecessor-closed node set (the device parts DADS allows), by enumeration."""
    nodes = list(g.nodes)
    for mask in range(1 << len(nodes)):
        s = {v for i, v in enumerate(nodes) if mask >> i & 1}
        if all(u in s for u, v in g.edges if v in s):
            yield s


def test_chain_mincut_equals_best_prefix_split() -> None:
    for seed in range(15):
        inst = random_adv_instance(seed, 8, 3)
        p = plan_mincut(inst, "latency")
        check_plan(inst, p)
        best = min(
            objective_value(inst, best_prefix_cut(inst, srv, "latency"), "latency")
            for srv in inst.device_names
            if srv != inst.source
        )
        assert math.isclose(p.predicted.latency_s, best, rel_tol=1e-9)
        assert math.isclose(p.details["cut_latency_s"], best, rel_tol=1e-9)
        assert p.details["chain_compatible"]
        assert len(p.stages) <= 2


def test_dag_cut_is_optimal_over_all_closed_sets() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        g = random_dag(rng, int(rng.integers(2, 10)))
        bw, lat = float(rng.uniform(1e5, 1e8)), float(rng.uniform(0, 5e-3))

        def link(x: float, bw: float = bw, lat: float = lat) -> float:
            return lat + x / bw

        cut = dads_cut(g, "a", "b", link)
        brute = min(cut_cost(g, s, "a", "b", link, link, 300_000).value_s for s in closed_sets(g))
        assert math.isclose(cut.value_s, brute, rel_tol=1e-9)
        assert cut.device_nodes | cut.server_nodes == frozenset(g.nodes)


def test_multi_consumer_tensor_is_paid_once() -> None:
    g = nx.DiGraph()
    # 'a' is cheap on the device; 'b' and 'c' both read its output and are far faster on the server.
    g.add_node("a", time_s={"dev": 0.001, "srv": 0.001}, out_bytes=1000)
    g.add_node("b", time_s={"dev": 1.0, "srv": 0.01}, out_bytes=10)
    g.add_node("c", time_s={"dev": 1.0, "srv": 0.01}, out_bytes=10)
    g.add_edges_from([("a", "b"), ("a", "c")])
    g.graph["input_bytes"] = 10**9  # the input is huge: 'a' must stay on the device

    def link(x: float) -> float:
        return 0.1 + x / 1e6

    cut = dads_cut(g, "dev", "srv", link)
    assert cut.device_nodes == {"a"}
    # one upload of a's 1000 B (not two), two result downloads of 10 B each
    assert cut.transfers == 3
    assert math.isclose(cut.value_s, 0.001 + 0.02 + (0.1 + 1e-3) + 2 * (0.1 + 1e-5), rel_tol=1e-12)


def test_cut_cost_rejects_data_flowing_back() -> None:
    g = nx.DiGraph()
    g.add_node(0, time_s={"a": 1.0, "b": 1.0}, out_bytes=1)
    g.add_node(1, time_s={"a": 1.0, "b": 1.0}, out_bytes=1)
    g.add_edge(0, 1)
    with pytest.raises(InputError, match="closed"):
        cut_cost(g, {1}, "a", "b", lambda x: x, lambda x: x, 0)


def test_dag_with_piece_map_gives_plan_and_reports_nodes() -> None:
    inst = random_adv_instance(3, 4, 2)
    # two nodes per piece, as a captured graph would have; piece p = nodes 2p, 2p+1
    g = nx.DiGraph()
    times, pieces = {}, {}
    for p, pc in enumerate(inst.pieces):
        for j in range(2):
            v = f"n{2 * p + j}"
            g.add_node(v, out_bytes=pc.out_bytes)
            times[v] = {d: t / 2 for d, t in pc.time_s.items()}
            pieces[v] = p
            if 2 * p + j:
                g.add_edge(f"n{2 * p + j - 1}", v, bytes=pc.out_bytes)
    dag = dag_from_graph(g, times, piece_of=pieces, input_bytes=inst.input_bytes)
    p = plan_mincut(inst, "latency", MincutOptions(dag=dag))
    check_plan(inst, p)
    assert "dag_cut" in p.details
    assert set(p.details["dag_cut"]["device_nodes"]) | set(
        p.details["dag_cut"]["server_nodes"]
    ) == set(times)
    # the DAG cut is never worse than the chain cut, because the chain's cuts are DAG cuts too
    assert p.details["cut_latency_s"] <= plan_mincut(inst, "latency").predicted.latency_s * (
        1 + 1e-9
    )


def test_non_prefix_dag_cut_falls_back_to_valid_plan() -> None:
    inst = random_adv_instance(5, 2, 2)
    dev, srv = inst.source, inst.device_names[1]
    # piece 0 = x (device-fast) and y (server-fast), both feeding piece 1 = z (server-fast):
    # the optimal DAG cut splits piece 0, which no chain plan can express.
    g = nx.DiGraph()
    g.add_node("x", time_s={dev: 0.0, srv: 5.0}, out_bytes=10, piece=0)
    g.add_node("y", time_s={dev: 5.0, srv: 0.0}, out_bytes=10, piece=0)
    g.add_node("z", time_s={dev: 5.0, srv: 0.0}, out_bytes=10, piece=1)
    g.add_edges_from([("x", "z"), ("y", "z")])
    p = plan_mincut(inst, "latency", MincutOptions(dag=g, server=srv))
    check_plan(inst, p)
    assert p.details["chain_compatible"] is False
    assert p.details["fallback"] == "not chain-compatible"
    assert p.details["dag_cut"]["device_nodes"] == ["x"]
    assert p.details["cut_latency_s"] < 1.0  # the DAG cut avoids every 5 s placement
    assert p.stages == best_prefix_cut(inst, srv, "latency")


def test_throughput_objective_picks_server_by_period() -> None:
    # three_devices' table: offloading everything wins on either server (the source is 10x
    # slower); for latency "mid" (0.0401 s vs 0.0451 s), for throughput "fast" (period 0.0251 s
    # vs 0.03 s, its slow return link is not its bottleneck)
    inst = three_devices()
    lat = plan_mincut(inst, "latency")
    assert lat.details["server"] == "mid" and lat.predicted.latency_s == pytest.approx(0.0401)
    thr = plan_mincut(inst, "throughput")
    check_plan(inst, thr)
    assert thr.details["server"] == "fast" and thr.predicted.period_s == pytest.approx(0.0251)
    assert all("fast" in st.devices for st in thr.stages)


def test_bad_inputs_raise_one_line_errors() -> None:
    inst = random_adv_instance(1, 3, 2)
    with pytest.raises(InputError, match="not a device"):
        plan_mincut(inst, "latency", MincutOptions(server="nope"))
    with pytest.raises(InputError, match="source"):
        plan_mincut(inst, "latency", MincutOptions(server=inst.source))
    cyc = nx.DiGraph([(0, 1), (1, 0)])
    with pytest.raises(InputError, match="cycle"):
        plan_mincut(inst, "latency", MincutOptions(dag=cyc))
    g = chain_dag(inst)
    for v in g.nodes:
        del g.nodes[v]["piece"]
    with pytest.raises(InputError, match="piece"):
        plan_mincut(inst, "latency", MincutOptions(dag=g))
    with pytest.raises(InputError, match="node_times"):
        dag_from_graph(nx.DiGraph([(0, 1)]), {0: {"a": 1.0}})


# ----- CIC --------------------------------------------------------------------------------------


def test_cic_decisions_equal_uncompressed_mincut() -> None:
    rng = np.random.default_rng(1)
    for _ in range(12):
        g = random_dag(rng, int(rng.integers(3, 60)))
        lat = float(rng.uniform(0, 5e-3))
        model = compress(g, "a", "b", lat)
        assert 1 <= len(model.candidates) <= model.mincut_calls + 1
        for bw in np.exp(rng.uniform(np.log(1e4), np.log(1e10), 6)):
            cand, value = model.decide(float(bw))

            def link(x: float, bw: float = float(bw), lat: float = lat) -> float:
                return lat + x / bw

            ref = dads_cut(g, "a", "b", link)
            assert math.isclose(value, ref.value_s, rel_tol=1e-9)
            # the candidate's own cost, recomputed from its node set, is that value
            assert math.isclose(
                cut_cost(g, cand.device_nodes, "a", "b", link, link, 300_000).value_s,
                value,
                rel_tol=1e-9,
            )


@settings(max_examples=30, deadline=None)
@given(log_bw=st.floats(3.0, 11.0), seed=st.integers(0, 3))
def test_cic_matches_mincut_for_any_bandwidth(log_bw: float, seed: int) -> None:
    g = random_dag(np.random.default_rng(seed), 25)
    model = _compressed(seed)
    bw = 10.0**log_bw
    _, value = model.decide(bw)
    ref = dads_cut(g, "a", "b", lambda x: 1e-3 + x / bw)
    assert math.isclose(value, ref.value_s, rel_tol=1e-9)


_MODELS: dict[int, object] = {}


def _compressed(seed: int):
    if seed not in _MODELS:
        _MODELS[seed] = compress(random_dag(np.random.default_rng(seed), 25), "a", "b", 1e-3)
    return _MODELS[seed]


def test_cic_extremes_and_errors() -> None:
    g = random_dag(np.random.default_rng(4), 30)
    model = compress(g, "a", "b", 2e-3)
    # near-zero bandwidth: nothing leaves the device
    cand, _ = model.decide(1e-3)
    assert cand.bytes_moved == 0 and cand.device_nodes == frozenset(g.nodes)
    assert "candidates" in str(model)
    assert all(b > 0 for b in model.breakpoints_Bps)
    with pytest.raises(InputError, match="bandwidth"):
        model.decide(0.0)
    with pytest.raises(InputError, match="latency"):
        compress(g, "a", "b", -1.0)


def test_chain_plan_stages_use_source_then_server() -> None:
    inst = random_adv_instance(21, 6, 3)
    p = plan_mincut(inst, "latency")
    assert p.stages[0].devices[0] in (inst.source, p.details["server"])
    if len(p.stages) == 2:
        assert p.stages[0] == Stage(0, p.stages[0].last, (inst.source,))


def test_model_input_nodes_are_pinned_to_the_device() -> None:
    # captured graphs mark inputs as nodes with op="input"; they stay on the device and their
    # upload is paid like any tensor's when their consumer runs on the server.
    g = nx.DiGraph()
    g.add_node("x", op="input", out_bytes=5000, flops=0)
    g.add_node("conv", op="conv2d", out_bytes=100, flops=1)
    g.add_node("guard", op="guardsfn", out_bytes=0, flops=0)
    g.add_edge("x", "conv", bytes=5000)
    times = {"conv": {"dev": 10.0, "srv": 0.1}, "guard": {"dev": 0.0, "srv": 0.0}}
    dag = dag_from_graph(g, times)
    assert dag.nodes["x"]["pin"] == "device"

    def link(x: float) -> float:
        return 0.01 + x / 1e6

    cut = dads_cut(dag, "dev", "srv", link)
    assert "x" in cut.device_nodes and "conv" in cut.server_nodes
    # conv on the server: upload x (5000 B) once, download conv's 100 B; the 0-byte guard is no output
    expected = 0.1 + (0.01 + 5000 / 1e6) + (0.01 + 100 / 1e6)
    assert math.isclose(cut.value_s, expected, rel_tol=1e-12)
    assert cut.transfers == 2
    with pytest.raises(InputError, match="pinned"):
        cut_cost(dag, {"conv", "guard"}, "dev", "srv", link, link, 0)


def test_unreachable_server_keeps_everything_on_the_device() -> None:
    from coinfer.core.instance import Device, make_instance

    # 'b' is far faster but has no link at all: no split can use it
    inst = make_instance(
        [{"a": 1.0, "b": 0.1}] * 3,
        [1] * 3,
        [10] * 3,
        10,
        [Device("a", 100), Device("b", 100)],
        [],
        "a",
    )
    p = plan_mincut(inst, "latency")
    check_plan(inst, p)
    assert p.stages == (Stage(0, 2, ("a",)),)
    assert math.isclose(p.predicted.latency_s, 3.0)


def test_full_dag_of_a_captured_model_beats_or_matches_every_prefix_cut() -> None:
    """Capture ResNet-18, cost its pieces, split piece times over nodes, cut the full DAG."""
    torch = pytest.importorskip("torch")
    from coinfer.core.instance import Device, Link, make_instance
    from coinfer.graph import capture
    from coinfer.plan.graph.mincut import node_times_from_pieces
    from coinfer.zoo import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # capture of small ops contends badly on the shared 2-core box
    try:
        model, example = load_model("resnet18")
        mg = capture(model, example, name="resnet18", max_pieces=12)
    finally:
        torch.set_num_threads(threads)
    g = mg.to_networkx()
    # phone 5 GFLOP/s, server 25 GFLOP/s, 20 MB/s Wi-Fi with 2 ms latency each way
    speeds = {"phone": 5e9, "server": 25e9}
    inst = make_instance(
        [{d: pc.flops / s for d, s in speeds.items()} for pc in mg.pieces],
        [pc.mem_bytes for pc in mg.pieces],
        [pc.out_bytes for pc in mg.pieces],
        mg.input_bytes,
        [Device(d, 10**10) for d in speeds],
        [Link("phone", "server", 20e6, 2e-3), Link("server", "phone", 20e6, 2e-3)],
        "phone",
    )
    dag = dag_from_graph(g, node_times_from_pieces(g, inst))
    p = plan_mincut(inst, "latency", MincutOptions(dag=dag))
    check_plan(inst, p)

    def link(x: float) -> float:
        return inst.transfer_s("phone", "server", x)

    # every prefix-of-pieces split is a DAG cut too: the min-cut is at most each of them
    for k in range(inst.num_pieces + 1):
        on_dev = {v for v, a in dag.nodes(data=True) if a["piece"] < k or a.get("pin")}
        prefix = cut_cost(dag, on_dev, "phone", "server", link, link, 0).value_s
        assert p.details["cut_latency_s"] <= prefix * (1 + 1e-9)
    total_nodes = len(p.details["dag_cut"]["device_nodes"]) + len(
        p.details["dag_cut"]["server_nodes"]
    )
    assert total_nodes == dag.number_of_nodes()
