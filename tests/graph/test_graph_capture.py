"""Capture: costs, pieces, cut bytes, tracer fallback and errors."""

from __future__ import annotations

import functools

import networkx as nx
import pytest
import torch
from torch import nn

from coinfer.errors import CaptureError
from coinfer.graph import capture, run_stages, split
from coinfer.zoo import load_model


@functools.cache
def _graph(spec: str, shape: tuple[int, ...] | None = None):
    model, inputs = load_model(spec, shape)
    return model, inputs, capture(model, inputs, name=spec)


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("spec", ["tiny_cnn", "tiny_dag", "tiny_mlp"])
def test_param_bytes_sum_exactly(spec: str) -> None:
    model, _, graph = _graph(spec)
    assert graph.total_param_bytes == _param_bytes(model)
    assert sum(p.param_bytes for p in graph.pieces) == _param_bytes(model)


def test_tied_weights_counted_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.mid = nn.Linear(16, 16)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return nn.functional.linear(self.mid(self.emb(ids)), self.emb.weight)

    model = Tied().eval()
    graph = capture(model, (torch.randint(0, 50, (1, 7)),))
    assert graph.total_param_bytes == _param_bytes(model)
    # The head's piece owns no parameter bytes, but its device must hold the tied matrix.
    head = graph.pieces[-1]
    assert head.param_bytes == 0 and head.mem_bytes >= 50 * 16 * 4


def test_conv_and_linear_flops() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(1), nn.Linear(8 * 16, 10)
    ).eval()
    graph = capture(model, torch.randn(1, 3, 4, 4))
    conv, flat, lin = graph.nodes
    assert conv.op == "conv2d" and conv.flops == 2 * (8 * 4 * 4) * (3 * 3 * 3)
    assert flat.op == "flatten" and flat.flops == 0
    assert lin.op == "linear" and lin.flops == 2 * 10 * 128
    assert conv.out_bytes == 8 * 16 * 4 and conv.shape == (1, 8, 4, 4)


def test_cut_bytes_count_every_crossing_tensor_once() -> None:
    _, _inputs, graph = _graph("tiny_dag")
    g = graph.to_networkx()
    position = {name: p.index for p in graph.pieces for name in p.nodes}
    for name in g.nodes:
        if g.nodes[name]["op"] == "input":
            position[name] = -1
    for piece in graph.pieces[:-1]:
        p = piece.index
        crossing = {u for u, v in g.edges if position[u] <= p < position[v]}
        assert piece.out_bytes == sum(g.nodes[u]["out_bytes"] for u in crossing)
        assert {t.name for t in piece.cut_tensors} == crossing
    assert graph.pieces[-1].out_bytes == graph.output_bytes == 40


def test_residual_cut_carries_two_tensors() -> None:
    _, _, graph = _graph("resnet18", (1, 3, 64, 64))
    assert max(len(p.cut_tensors) for p in graph.pieces) >= 2
    _, _, inc = _graph("inception", (1, 3, 64, 64))
    assert max(len(p.cut_tensors) for p in inc.pieces) >= 4  # inside a 4-branch module


def test_networkx_view_is_a_dag_with_costs() -> None:
    _, _, graph = _graph("tiny_dag")
    g = graph.to_networkx()
    assert nx.is_directed_acyclic_graph(g)
    assert sum(d["flops"] for _, d in g.nodes(data=True)) == graph.total_flops
    assert all("bytes" in d for _, _, d in g.edges(data=True))
    assert g.nodes["x"]["op"] == "input"


def test_max_pieces_merges_and_preserves_totals() -> None:
    model, inputs, graph = _graph("resnet18", (1, 3, 64, 64))
    for n in (1, 2, 5, 8):
        merged = graph.with_max_pieces(n)
        assert len(merged.pieces) == n
        assert sum(p.flops for p in merged.pieces) == graph.total_flops
        assert [x for p in merged.pieces for x in p.nodes] == [
            x for p in graph.pieces for x in p.nodes
        ]
        (out,) = run_stages(split(merged, list(range(n - 1))), inputs)
        with torch.no_grad():
            assert torch.equal(out, model(*inputs))
    assert graph.with_max_pieces(10_000) == graph


def test_capture_does_not_mutate_the_model() -> None:
    model, inputs = load_model("tiny_dag")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, inputs)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class ShapeBranch(nn.Module):
    """fx cannot trace Python control flow on shapes; torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 4:
            x = torch.relu(self.a(x))
        return self.b(x)


def test_export_fallback_and_exact_split() -> None:
    model = ShapeBranch().eval()
    x = torch.randn(2, 8)
    graph = capture(model, x)
    assert graph.backend == "export"
    assert graph.total_param_bytes == _param_bytes(model)
    assert {n.op for n in graph.nodes} >= {"linear", "relu"}
    with torch.no_grad():
        ref = model(x)
    for cuts in ([], list(range(len(graph.pieces) - 1))):
        (out,) = run_stages(split(graph, cuts), (x,))
        assert torch.equal(out, ref)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # depends on values: neither tracer can capture it
            return x * 2
        return x


def test_capture_error_names_both_tracers() -> None:
    with pytest.raises(CaptureError, match=r"torch\.fx failed.*torch\.export failed"):
        capture(DataDependent(), torch.ones(3))


def test_capture_rejects_bad_inputs() -> None:
    with pytest.raises(CaptureError, match="example inputs"):
        capture(nn.Linear(2, 2), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CaptureError, match="fails on the example inputs"):
        capture(nn.Linear(2, 2), torch.ones(3, 5))
    with pytest.raises(CaptureError, match="max_pieces"):
        capture(nn.Linear(2, 2), torch.ones(1, 2), max_pieces=0)


def test_summary_and_dict() -> None:
    _, _, graph = _graph("tiny_cnn")
    text = str(graph)
    assert "tiny_cnn" in text and "pieces" in text
    d = graph.to_dict()
    assert d["totals"]["flops"] == graph.total_flops
    assert len(d["pieces"]) == len(graph.pieces)
    assert {"name", "op", "flops", "param_bytes", "out_bytes", "shape", "inputs"} <= set(
        d["nodes"][0]
    )


def test_empty_model_is_a_capture_error() -> None:
    class Nothing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(CaptureError, match="no operations"):
        capture(Nothing(), torch.ones(2))


def test_meta_model_costs_like_the_real_one() -> None:
    _, _, real = _graph("resnet18", (1, 3, 64, 64))
    model, inputs = load_model("resnet18", (1, 3, 64, 64), meta=True)
    meta = capture(model, inputs, name="resnet18")  # meta inputs imply a fake run
    assert [(p.flops, p.param_bytes, p.out_bytes, p.mem_bytes) for p in meta.pieces] == [
        (p.flops, p.param_bytes, p.out_bytes, p.mem_bytes) for p in real.pieces
    ]


def test_public_lazy_exports_and_light_imports() -> None:
    import subprocess
    import sys

    code = (
        "import sys, coinfer; from coinfer.graph import capture; import coinfer.zoo; "
        "assert coinfer.capture is capture and coinfer.split is not None; "
        "assert coinfer.load_model is coinfer.zoo.load_model; "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_graph_json_roundtrip() -> None:
    import json

    from coinfer.errors import InputError
    from coinfer.graph import ModelGraph

    _, _, graph = _graph("tiny_dag")
    loaded = ModelGraph.from_dict(json.loads(graph.to_json()))
    assert loaded == graph
    assert loaded.total_flops == graph.total_flops and loaded.input_bytes == graph.input_bytes
    assert nx.is_isomorphic(loaded.to_networkx(), graph.to_networkx())
    with pytest.raises(InputError, match="re-capture"):
        loaded.with_max_pieces(2)
    with pytest.raises(InputError, match="missing key 'pieces'"):
        ModelGraph.from_dict({"model": "x", "nodes": []})


def test_split_of_loaded_graph_is_an_input_error() -> None:
    from coinfer.errors import InputError
    from coinfer.graph import ModelGraph

    _, _, graph = _graph("tiny_cnn")
    with pytest.raises(InputError, match="no executable graph"):
        split(ModelGraph.from_dict(graph.to_dict()), [0])


class _ShadowsGraphModule(nn.Module):
    """Legal PyTorch whose names are also attributes of fx.GraphModule (meta, graph, code, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta = nn.Linear(8, 8)
        self.graph = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.code = nn.ReLU()
        self.head = nn.Linear(8, 4)
        self.register_buffer("forward_scale", torch.full((4,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.code(self.graph(self.meta(x)))) * self.forward_scale


def test_submodules_named_like_graphmodule_attributes_are_captured_exactly() -> None:
    torch.manual_seed(0)
    model = _ShadowsGraphModule().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 8)
    g = capture(model, x, backend="fx")
    # the graph keeps the user's names; nothing of the user's module changed
    assert {"meta", "code", "head"} <= {n.name for n in g.nodes}
    assert isinstance(model.meta, nn.Linear) and isinstance(model.graph, nn.Sequential)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    stages = split(g, list(range(g.num_pieces - 1)))
    y: tuple = (x,)
    for st in stages:
        out = st(*y)
        y = out if isinstance(out, tuple) else (out,)
    assert torch.equal(y[0], model(x))
    # the stage runs the model's own layer objects (shared, not copied)
    assert any(m is model.meta for st in stages for m in st.modules())
