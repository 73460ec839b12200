"""The cost and memory model: formulas, the chunked-prefill makespan against an independent
longest-path oracle, decode rates, and the memory model against real caches and weights."""

from __future__ import annotations

import math

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from llm_models import prompt

from coinfer.llm.cost import (
    LinkCost,
    LlmCosts,
    MemoryModel,
    chunk_resource_times,
    decode_resource_times,
    decode_tokens_per_s,
    prefill_makespan,
)
from coinfer.llm.decoder import decoder_parts
from coinfer.llm.pipeline import build_stages, prefill

COSTS = LlmCosts(
    layer_fixed_s=1e-3, layer_token_s=1e-4, layer_pair_s=1e-6,
    decode_fixed_s=2e-3, decode_seq_s=1e-4, decode_ctx_s=1e-6,
    embed_token_s=1e-6, head_fixed_s=1e-3, head_token_s=1e-4, act_bytes_per_token=512,
)  # fmt: skip

costs_st = st.builds(
    LlmCosts,
    *(st.floats(0, 1e-3) for _ in range(6)),
    embed_token_s=st.floats(0, 1e-4), head_fixed_s=st.floats(0, 1e-3),
    head_token_s=st.floats(0, 1e-3), act_bytes_per_token=st.integers(0, 4096),
)  # fmt: skip


def test_formulas() -> None:
    assert COSTS.chunk_s(8, 16) == pytest.approx(1e-3 + 8e-4 + 1e-6 * 8 * 24)
    assert COSTS.chunk_s(8, 16, batch=3) == pytest.approx(1e-3 + 3 * (8e-4 + 1e-6 * 8 * 24))
    assert COSTS.decode_s(100, batch=2) == pytest.approx(2e-3 + 2 * (1e-4 + 1e-4))
    assert COSTS.head_s(0) == 0 and COSTS.head_s(2) == pytest.approx(1.2e-3)
    assert LinkCost(1e-3, 1e6).time_s(1000) == pytest.approx(2e-3)
    times = chunk_resource_times(4, 0, True, [2, 3], [1.0, 2.0], COSTS, [LinkCost(0, 512e3)])
    assert times == pytest.approx(
        [
            2 * COSTS.chunk_s(4, 0) + COSTS.embed_s(4),
            4 * 512 / 512e3,
            (3 * COSTS.chunk_s(4, 0) + COSTS.head_s(1)) / 2,
        ]
    )


def _oracle(chunks, layer_counts, speeds, costs, links) -> float:
    """Longest path through the (chunk, resource) grid: each cell waits for its left and
    upper neighbour (networkx, written independently of the recurrence)."""
    g = nx.DiGraph()
    p = 0
    for k, c in enumerate(chunks):
        times = chunk_resource_times(c, p, k == len(chunks) - 1, layer_counts, speeds, costs, links)
        for j, t in enumerate(times):
            g.add_edge(("in", k, j), ("out", k, j), weight=t)
            if j:
                g.add_edge(("out", k, j - 1), ("in", k, j), weight=0.0)
            if k:
                g.add_edge(("out", k - 1, j), ("in", k, j), weight=0.0)
        p += c
    return nx.dag_longest_path_length(g, weight="weight", default_weight=0)


@given(
    costs=costs_st,
    chunks=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    stages=st.lists(st.tuples(st.integers(1, 6), st.floats(0.1, 4)), min_size=1, max_size=4),
    latency=st.floats(0, 1e-3),
)
def test_makespan_is_the_longest_path(costs, chunks, stages, latency) -> None:
    counts, speeds = [n for n, _ in stages], [v for _, v in stages]
    links = [LinkCost(latency, 1e7)] * (len(stages) - 1)
    got = prefill_makespan(chunks, counts, speeds, costs, links)
    assert got == pytest.approx(_oracle(chunks, counts, speeds, costs, links), rel=1e-9, abs=1e-15)
    # never shorter than the busiest resource, nor than one chunk's trip through everything
    p, work, trips = 0, None, []
    for k, c in enumerate(chunks):
        t = chunk_resource_times(c, p, k == len(chunks) - 1, counts, speeds, costs, links)
        work = t if work is None else [a + b for a, b in zip(work, t, strict=True)]
        trips.append(sum(t))
        p += c
    assert got >= max(max(work), max(trips)) * (1 - 1e-9)


def test_one_chunk_gets_no_overlap() -> None:
    t = chunk_resource_times(32, 0, True, [3, 3], [1.0, 1.0], COSTS)
    assert prefill_makespan([32], [3, 3], [1.0, 1.0], COSTS) == pytest.approx(sum(t))


def test_decode_rates() -> None:
    counts, speeds = [4, 4, 4], [1.0, 1.0, 1.0]
    one = decode_tokens_per_s(counts, speeds, COSTS, context=100)
    assert one == pytest.approx(1 / sum(decode_resource_times(100, counts, speeds, COSTS)))
    three = decode_tokens_per_s(counts, speeds, COSTS, context=100, sequences=3)
    assert one < three <= 3 * one + 1e-9
    per = decode_resource_times(100, counts, speeds, COSTS, batch=1)
    assert three == pytest.approx(3 / max(sum(per), 3 * max(per)))
    # more context, slower; one batch of 6 in one group vs 3 groups of 2
    assert decode_tokens_per_s(counts, speeds, COSTS, context=1000) < one
    assert decode_tokens_per_s(counts, speeds, COSTS, context=100, sequences=6, microbatches=1) > 0
    with pytest.raises(ValueError):
        decode_tokens_per_s(counts, speeds, COSTS, context=1, sequences=0)


def test_speeds_scale_stage_times() -> None:
    slow = prefill_makespan([16, 16], [2, 2], [1.0, 1.0], COSTS)
    fast = prefill_makespan([16, 16], [2, 2], [2.0, 2.0], COSTS)
    assert fast == pytest.approx(slow / 2)
    with pytest.raises(ValueError):
        prefill_makespan([4], [2, 2], [1.0], COSTS)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_memory_model_matches_real_caches_and_weights(models, name) -> None:
    model = models[name]
    parts = decoder_parts(model)
    mem = MemoryModel.of(parts)
    split = [1, 2, parts.n_layers - 3]
    stages = build_stages(parts, split)
    ctx, batch = 13, 3
    prefill(stages, prompt(batch, ctx), [5, 8])
    for s in stages:
        weights = mem.stage_bytes(s.n_layers, s.is_first, s.is_last, 0)
        kv = mem.stage_bytes(s.n_layers, s.is_first, s.is_last, ctx, batch) - weights
        assert kv == s.kv_bytes()
        held = {
            id(p): p
            for i in range(s.first_layer, s.last_layer)
            for p in parts.layers[i].parameters()
        }
        if s.is_first:
            held |= {id(p): p for p in parts.embed.parameters()}
            if parts.pos_embed is not None:
                held |= {id(p): p for p in parts.pos_embed.parameters()}
        real = sum(p.numel() * 4 for p in held.values())
        if s.is_last:  # the last stage holds its own head (a copy of a tied embedding)
            real += mem.head_bytes
        assert weights == real
    whole = mem.stage_bytes(parts.n_layers, True, True, 0)
    assert whole == sum(p.numel() * 4 for p in model.parameters())
    assert math.isclose(
        mem.per_layer_bytes(ctx, batch) - mem.layer_bytes,
        2 * parts.n_kv_heads * parts.head_dim * 4 * ctx * batch,
    )
