"""Pieces: the max-pieces dynamic programme against brute force, and piece memory by hand."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.graph import capture, merge_boundaries
from coinfer.graph._pieces import BALANCE_FACTOR
from coinfer.zoo import load_model


def _pieces_flops(flops: list[int], kept: list[int]) -> list[int]:
    bounds = [-1, *kept, len(flops) - 1]
    return [sum(flops[a + 1 : b + 1]) for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    flops=st.lists(st.integers(0, 50), min_size=1, max_size=9),
    data=st.data(),
)
def test_merge_boundaries_is_optimal(flops: list[int], data: st.DataObject) -> None:
    n = len(flops)
    cut_bytes = data.draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1))
    k = data.draw(st.integers(1, n + 2))
    kept = merge_boundaries(flops, cut_bytes, k)
    target = min(k, n)
    assert kept == sorted(set(kept)) and len(kept) == target - 1
    assert all(0 <= p < n - 1 for p in kept)
    if target == n:
        return
    cap = max(max(flops), math.ceil(BALANCE_FACTOR * sum(flops) / target))
    assert max(_pieces_flops(flops, kept)) <= cap
    best = min(
        sum(cut_bytes[p] for p in combo)
        for combo in itertools.combinations(range(n - 1), target - 1)
        if max(_pieces_flops(flops, list(combo))) <= cap
    )
    assert sum(cut_bytes[p] for p in kept) == best


def test_merge_keeps_cheap_boundaries_when_balanced() -> None:
    # Equal compute; boundary 1 and 4 are the cheap ones and keep pieces within the cap.
    assert merge_boundaries([10] * 6, [50, 1, 50, 50, 1], 3) == [1, 4]


def test_merge_respects_balance_over_bytes() -> None:
    # The cheapest boundary (after piece 4) would leave one piece with all the compute.
    flops = [100, 100, 100, 100, 1, 1]
    kept = merge_boundaries(flops, [10, 10, 10, 10, 0], 2)
    assert max(_pieces_flops(flops, kept)) <= BALANCE_FACTOR * sum(flops) / 2


def test_piece_memory_by_hand() -> None:
    model, inputs = load_model("tiny_mlp")
    graph = capture(model, inputs)
    first = graph.pieces[0]  # Linear(64, 128) + GELU on a 1×64 input
    assert first.nodes == ("_0", "_1")
    params = (64 * 128 + 128) * 4
    # input (256 B) + linear out (512 B) + GELU out (512 B) are live together at the GELU.
    assert first.mem_bytes == params + 256 + 512 + 512
    assert first.out_bytes == 512


def test_memory_covers_parameters_and_cut_tensors() -> None:
    model, inputs = load_model("unet", (1, 3, 32, 32))
    graph = capture(model, inputs, fake=True)
    for p in graph.pieces:
        incoming = graph.input_bytes if p.index == 0 else graph.pieces[p.index - 1].out_bytes
        assert p.mem_bytes >= p.param_bytes + p.buffer_bytes + max(incoming, p.out_bytes)
    # U-Net's long skips: a cut in the decoder carries several encoder outputs at once.
    assert max(len(p.cut_tensors) for p in graph.pieces) >= 4


def test_default_pieces_fuse_layer_ops() -> None:
    model, inputs = load_model("resnet18", (1, 3, 32, 32))
    graph = capture(model, inputs, fake=True)
    ops = [[graph.node(n).op for n in p.nodes] for p in graph.pieces]
    assert ops[0] == ["conv2d", "batchnorm", "relu"]
    # No piece starts with a view-like or fusable op.
    assert all(o[0] not in ("flatten", "relu", "batchnorm") for o in ops)
