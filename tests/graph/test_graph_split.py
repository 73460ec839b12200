"""Stages reproduce the model exactly, hold only their own weights, and save/load safely."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.errors import InputError
from coinfer.graph import (
    build_stage,
    capture,
    load_stage,
    read_stage_header,
    run_stages,
    save_stage,
    split,
)
from coinfer.zoo import load_model

# Small inputs keep the exactness checks fast; the DAG structure does not depend on the size.
SMALL = {
    "tiny_cnn": None,
    "tiny_dag": None,
    "tiny_mlp": None,
    "resnet18": (1, 3, 64, 64),
    "inception": (1, 3, 64, 64),
}


@functools.cache
def _captured(spec: str):
    model, inputs = load_model(spec, SMALL.get(spec))
    graph = capture(model, inputs, name=spec)
    with torch.no_grad():
        reference = model(*inputs)
    return model, inputs, graph, reference


@pytest.mark.parametrize("spec", list(SMALL))
def test_split_every_boundary_is_exact(spec: str) -> None:
    _model, inputs, graph, reference = _captured(spec)
    cuts = list(range(len(graph.pieces) - 1))
    stages = split(graph, cuts)
    assert len(stages) == len(graph.pieces)
    (out,) = run_stages(stages, inputs)
    assert torch.equal(out, reference)


@pytest.mark.parametrize("spec", list(SMALL))
def test_stage_io_matches_piece_cut_tensors(spec: str) -> None:
    _model, inputs, graph, _ = _captured(spec)
    cuts = list(range(len(graph.pieces) - 1))
    stages = split(graph, cuts)
    x = inputs
    for stage, piece in zip(stages, graph.pieces, strict=True):
        assert [tuple(t.shape) for t in x] == [t.shape for t in stage.input_meta]
        x = stage(*x)
        assert isinstance(x, tuple)
        assert stage.output_meta == piece.cut_tensors
        assert [tuple(t.shape) for t in x] == [t.shape for t in piece.cut_tensors]
        assert sum(t.numel() * t.element_size() for t in x) == piece.out_bytes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=st.sampled_from(list(SMALL)))
def test_split_random_cuts_exact(data: st.DataObject, spec: str) -> None:
    _model, inputs, graph, reference = _captured(spec)
    boundaries = list(range(len(graph.pieces) - 1))
    cuts = sorted(data.draw(st.sets(st.sampled_from(boundaries), max_size=6)))
    (out,) = run_stages(split(graph, cuts), inputs)
    assert torch.equal(out, reference)


def test_stages_hold_only_their_own_parameters() -> None:
    model, _inputs, graph, _ = _captured("resnet18")
    stages = split(graph, [3, 10, 20])
    seen: set[int] = set()
    total = 0
    for stage in stages:
        for p in stage.parameters():
            assert id(p) not in seen
            seen.add(id(p))
            total += p.numel()
    assert total == sum(p.numel() for p in model.parameters())
    # A stage's parameters are exactly those of the pieces it covers.
    for stage in stages:
        first, last = stage.pieces
        expected = sum(graph.pieces[i].param_bytes for i in range(first, last + 1))
        assert sum(p.numel() * p.element_size() for p in stage.parameters()) == expected


def test_split_does_not_modify_the_model() -> None:
    model, inputs, graph, reference = _captured("tiny_dag")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_stages(split(graph, [1, 3]), inputs)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(*inputs), reference)


@pytest.mark.parametrize("cuts", [[-1], [0, 0], [3, 1], [999], ["a"]])
def test_bad_cuts_raise_input_error(cuts: list) -> None:
    _, _, graph, _ = _captured("tiny_dag")
    with pytest.raises(InputError, match="cut"):
        split(graph, cuts)


def test_save_and_load_stage_roundtrip(tmp_path) -> None:
    _, inputs, graph, _ = _captured("tiny_dag")
    stages = split(graph, [2])
    mid = stages[0](*inputs)
    expected = stages[1](*mid)
    path = save_stage(stages[1], tmp_path / "s1.safetensors")
    fresh = split(graph, [2])[1]
    # Scramble the target first so the test fails if nothing is loaded.
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    try:
        load_stage(path, fresh)
        got = fresh(*mid)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    finally:
        load_stage(path, fresh)  # the parameters are the shared model tensors: restore them


def test_build_stage_from_spec_and_reload_from_header(tmp_path) -> None:
    model, inputs = load_model("tiny_cnn")
    graph = capture(model, inputs)
    stages = split(graph, [1])
    remote = build_stage("tiny_cnn", None, [1], 1)
    mid = stages[0](*inputs)
    assert torch.equal(remote(*mid)[0], stages[1](*mid)[0])
    path = save_stage(remote, tmp_path / "remote.safetensors")
    assert read_stage_header(path)["recipe"]["model"] == "tiny_cnn"
    rebuilt = load_stage(path)
    assert torch.equal(rebuilt(*mid)[0], stages[1](*mid)[0])


def test_load_stage_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_stage(tmp_path / "missing.safetensors")
    _, _, graph, _ = _captured("tiny_dag")
    stages = split(graph, [2])
    path = save_stage(stages[0], tmp_path / "s0.safetensors")
    with pytest.raises(InputError, match="no recipe"):
        load_stage(path)
    with pytest.raises(InputError, match="do not match"):
        load_stage(path, stages[1])


@pytest.mark.parametrize("factory", ["gpt2", "bert", "vit", "inception"])
def test_stages_accept_other_batch_sizes(factory: str) -> None:
    # Shape queries crossing a cut are recomputed in the consuming stage rather than baked,
    # so stages captured at batch 1 run micro-batches of 3 (the runtime relies on this).
    from coinfer.zoo import transformer
    from coinfer.zoo.inception import inception

    small = transformer.TransformerConfig(width=32, depth=2, heads=2, vocab=100, max_positions=64)
    torch.manual_seed(0)
    model, shape = {
        "gpt2": (lambda: transformer.GPT2(small), (1, 12)),
        "bert": (lambda: transformer.Bert(small), (1, 12)),
        "vit": (lambda: transformer.ViT(image=32, patch=8, num_classes=10), (1, 3, 32, 32)),
        "inception": (lambda: inception(10), (1, 3, 32, 32)),
    }[factory]
    module = model().eval()
    make = (
        (lambda b: torch.randint(0, 100, (b, shape[1])))
        if len(shape) == 2
        else (lambda b: torch.randn(b, *shape[1:]))
    )
    graph = capture(module, (make(1),))
    batch = make(3)
    with torch.no_grad():
        reference = module(batch)
    reference = reference if isinstance(reference, tuple) else (reference,)
    out = run_stages(split(graph, list(range(len(graph.pieces) - 1))), (batch,))
    assert all(torch.equal(a, b) for a, b in zip(out, reference, strict=True))
