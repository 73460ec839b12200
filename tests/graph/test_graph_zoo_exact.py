"""Every zoo model: split at random cut sets reproduces the unsplit model bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils import _pytree as pytree

from coinfer.graph import capture, run_stages, split
from coinfer.zoo import ZOO, load_model

# Small inputs: the graph structure (and so the exactness question) does not depend on size.
SHAPES: dict[str, tuple[int, ...] | None] = {
    "alexnet": (1, 3, 64, 64),
    "vgg16": (1, 3, 32, 32),
    "resnet18": (1, 3, 32, 32),
    "resnet50": (1, 3, 32, 32),
    "mobilenet_v2": (1, 3, 32, 32),
    "inception": (1, 3, 32, 32),
    "tiny_yolov2": (1, 3, 64, 64),
    "unet": (1, 3, 32, 32),
    "vit_b16_plain": (1, 3, 32, 32),
    "bert_base_plain": (1, 16),
    "gpt2_plain": (1, 16),
    "tiny_cnn": None,
    "tiny_dag": None,
    "tiny_mlp": None,
}
# The transformers builds capture through torch.export (4 s each here, ~15 s on a busy machine):
# one cut set each; the same architectures at tiny sizes are split at every boundary below.
HF_SHAPES = {"vit_b16": (1, 3, 224, 224), "bert_base": (1, 16), "gpt2": (1, 16)}
RANDOM_CUT_SETS = 2


def _leaves(out) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _check(spec: str, shape, cut_sets) -> None:
    model, inputs = load_model(spec, shape)
    # fake=True skips capture's own value check (we compare below) and its two forward passes.
    graph = capture(model, inputs, name=spec, fake=True)
    # Each parameter once, tied ones included: the sum is the model's parameter bytes exactly.
    assert graph.total_param_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        reference = _leaves(model(*inputs))
    n = len(graph.pieces)
    for cuts in cut_sets(n):
        out = run_stages(split(graph, cuts), inputs)
        assert len(out) == len(reference)
        for a, b in zip(out, reference, strict=True):
            assert torch.equal(a, b), (spec, cuts)


def test_every_zoo_model_is_covered() -> None:
    assert set(SHAPES) | set(HF_SHAPES) == set(ZOO)


@pytest.mark.parametrize("spec", list(SHAPES))
def test_zoo_split_exact(spec: str) -> None:
    rng = random.Random(spec)  # deterministic per model

    def cut_sets(n: int):
        boundaries = list(range(n - 1))
        yield []
        yield boundaries
        for _ in range(RANDOM_CUT_SETS):
            yield sorted(rng.sample(boundaries, rng.randint(1, min(6, len(boundaries)))))

    _check(spec, SHAPES[spec], cut_sets)


@pytest.mark.parametrize("spec", list(HF_SHAPES))
def test_zoo_transformers_build_split_exact(spec: str) -> None:
    pytest.importorskip("transformers")

    def cut_sets(n: int):
        yield sorted({n // 4, n // 2, (3 * n) // 4} - {n - 1})

    _check(spec, HF_SHAPES[spec], cut_sets)


@pytest.mark.parametrize("factory", ["tiny_bert_hf", "tiny_gpt2_hf", "tiny_vit_hf"])
def test_tiny_transformers_models_via_export(factory: str) -> None:
    pytest.importorskip("transformers")
    model, inputs = load_model(f"coinfer.zoo.hf:{factory}")
    graph = capture(model, inputs)
    assert graph.backend == "export"
    # Tied GPT-2 head: the embedding matrix is counted once.
    assert graph.total_param_bytes == sum(p.numel() * 4 for p in model.parameters())
    assert {"linear", "attention", "layernorm"} <= {n.op for n in graph.nodes}
    with torch.no_grad():
        reference = _leaves(model(*inputs))
    out = run_stages(split(graph, list(range(len(graph.pieces) - 1))), inputs)
    assert all(torch.equal(a, b) for a, b in zip(out, reference, strict=True))
