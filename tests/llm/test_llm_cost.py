"""The cost and memory model: formulas, the chunked-prefill makespan against an independent
longest-path oracle, decode rates, and the memory model against real caches and weights."""

from __future__ import annotations

import dataclasses
import json
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


TABLED = LlmCosts(
    0, 0, 0, decode_fixed_s=1.0, decode_seq_s=0.5, decode_ctx_s=9.0,
    head_fixed_s=1.0, head_token_s=0.25,
    decode_batch_s=(1.0, 3.0, 2.0), head_batch_s=(2.0, 4.0),
    decode_ctx_points=((1, 100, 1.0), (1, 300, 5.0), (4, 100, 2.0)),
)  # fmt: skip


def test_tables_replace_the_linear_terms() -> None:
    """Inside a table its entry, past it the last entry plus the linear slope; the measured
    context points replace the linear context term (decode_ctx_s = 9 is never used)."""
    assert [TABLED.decode_s(0, b) for b in (1, 2, 3, 5)] == [1.0, 3.0, 2.0, 3.0]
    assert [TABLED.head_s(n) for n in (0, 1, 2, 4)] == [0.0, 2.0, 4.0, 4.5]
    # batch 1: through (0, 0), (100, 1), (300, 5), then the last slope 0.02 per token
    assert TABLED.decode_s(50, 1) == pytest.approx(1.0 + 0.5)
    assert TABLED.decode_s(200, 1) == pytest.approx(1.0 + 3.0)
    assert TABLED.decode_s(400, 1) == pytest.approx(1.0 + 7.0)
    # batch 4 at 100: its own point; batch 2: a third of the way from batch 1 to 4
    assert TABLED.decode_s(100, 4) == pytest.approx(TABLED.decode_s(0, 4) + 2.0)
    assert TABLED.decode_s(100, 2) == pytest.approx(3.0 + 1.0 + (2.0 - 1.0) / 3)
    # past the largest measured batch: in proportion to the batch
    assert TABLED.decode_s(100, 8) == pytest.approx(TABLED.decode_s(0, 8) + 4.0)
    # JSON gives lists: the value stays the same (and hashable)
    again = LlmCosts(**json.loads(json.dumps(dataclasses.asdict(TABLED))))
    assert again == TABLED and hash(again) == hash(TABLED)


@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(1, 600), st.floats(0, 1)), max_size=6),
    st.integers(1, 12),
    st.integers(0, 900),
    st.integers(0, 900),
)
def test_context_term_never_negative_and_grows_with_context(points, batch, p, q) -> None:
    points = list({(b, c): (b, c, e) for b, c, e in points}.values())
    costs = LlmCosts(0, 0, 0, 0, 0, 0, decode_ctx_points=tuple(points))
    lo, hi = sorted((p, q))
    assert costs.decode_s(lo, batch) >= 0
    if not points:
        assert costs.decode_s(hi, batch) == 0
    # monotone when every measured curve is (extra time grows with the context)
    by = {}
    for b, _, e in sorted(points):
        by.setdefault(b, []).append(e)
    if all(es == sorted(es) for es in by.values()):
        assert costs.decode_s(hi, batch) >= costs.decode_s(lo, batch) - 1e-12


def test_item_overhead_is_charged_once_per_stage_and_item() -> None:
    """Every stage pays the overhead once per chunk and per decode step, at its speed."""
    with_w = dataclasses.replace(COSTS, item_overhead_s=0.01)
    counts, speeds, links = [2, 3], [1.0, 0.5], [LinkCost(0, 512e3)]
    for fn, args in (
        (chunk_resource_times, (4, 0, True, counts, speeds)),
        (decode_resource_times, (10, counts, speeds)),
    ):
        plain, charged = fn(*args, COSTS, links), fn(*args, with_w, links)
        assert [b - a for a, b in zip(plain, charged, strict=True)] == pytest.approx(
            [0.01, 0.0, 0.02]
        )
    one = decode_tokens_per_s([12], [0.6], COSTS, context=10)
    assert 1 / decode_tokens_per_s([12], [0.6], with_w, context=10) == pytest.approx(
        1 / one + 0.01 / 0.6
    )
    # two chunks: the critical path crosses each stage at least once, at most twice
    plain = prefill_makespan([4, 4], counts, speeds, COSTS, links)
    charged = prefill_makespan([4, 4], counts, speeds, with_w, links)
    assert plain + 0.03 - 1e-12 <= charged <= plain + 0.06 + 1e-12


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
