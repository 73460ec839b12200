"""Property tests on random DAG models: cut bytes match the definition, splits are exact.

Each example builds a small module whose forward wires nodes to random earlier nodes (two model
inputs, fan-out, adds, concatenations, long skips), so every cut shape the pieces logic must
handle shows up: several tensors crossing, pass-through inputs, tensors consumed far later.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from coinfer.graph import capture, run_stages, split

WIDTH = 4  # feature width of every node's output (small: the tests check structure, not speed)


class RandomDag(nn.Module):
    """Node i applies ``ops[i]`` to the outputs of ``wiring[i]`` (indices into earlier values)."""

    def __init__(self, wiring: list[tuple[int, ...]], ops: list[str]) -> None:
        super().__init__()
        self.wiring = wiring
        self.ops = ops
        self.layers = nn.ModuleList(
            nn.Linear(WIDTH * (len(w) if op == "cat" else 1), WIDTH)
            for w, op in zip(wiring, ops, strict=True)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        values = [a, b]
        for wires, op, layer in zip(self.wiring, self.ops, self.layers, strict=True):
            args = [values[i] for i in wires]
            if op == "cat":
                out = layer(torch.cat(args, dim=-1))
            elif op == "add":
                out = layer(args[0])
                for extra in args[1:]:
                    out = out + extra
            else:
                out = torch.relu(layer(args[0]))
            values.append(out)
        return values[-1]


@st.composite
def dags(draw: st.DrawFn) -> RandomDag:
    n = draw(st.integers(2, 9))
    wiring: list[tuple[int, ...]] = []
    ops: list[str] = []
    for i in range(n):
        available = i + 2  # two inputs + earlier nodes
        k = draw(st.integers(1, min(3, available)))
        wires = tuple(sorted(draw(st.sets(st.integers(0, available - 1), min_size=k, max_size=k))))
        wiring.append(wires)
        ops.append(draw(st.sampled_from(["relu", "add", "cat"])) if k > 1 else "relu")
    torch.manual_seed(0)
    return RandomDag(wiring, ops).eval()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=dags(), data=st.data())
def test_random_dag_cuts_and_split(model: RandomDag, data: st.DataObject) -> None:
    inputs = (torch.randn(1, WIDTH), torch.randn(1, WIDTH))
    graph = capture(model, inputs)
    g = graph.to_networkx()
    piece_of = {name: p.index for p in graph.pieces for name in p.nodes}
    for name, attrs in g.nodes(data=True):
        if attrs["op"] == "input":
            piece_of[name] = -1
    n = len(graph.pieces)
    # Definition: the cut after p carries each tensor produced at or before p and consumed
    # after p (the model output counts as consumed after the last piece), once.
    output = {t.name for t in graph.outputs}
    for piece in graph.pieces[:-1]:
        p = piece.index
        crossing = {u for u, v in g.edges if piece_of[u] <= p < piece_of[v]}
        crossing |= {u for u in output if piece_of[u] <= p}
        assert {t.name for t in piece.cut_tensors} == crossing
        assert piece.out_bytes == sum(g.nodes[u]["out_bytes"] for u in crossing)
    assert graph.pieces[-1].out_bytes == graph.output_bytes

    cuts = (
        sorted(data.draw(st.sets(st.integers(0, max(n - 2, 0)), max_size=n - 1))) if n > 1 else []
    )
    with torch.no_grad():
        reference = model(*inputs)
    (out,) = run_stages(split(graph, cuts), inputs)
    assert torch.equal(out, reference)
    merged = graph.with_max_pieces(max(1, n // 2))
    (out,) = run_stages(split(merged, list(range(len(merged.pieces) - 1))), inputs)
    assert torch.equal(out, reference)
