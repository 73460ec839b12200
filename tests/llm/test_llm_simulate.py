"""The generation simulator (``coinfer.llm.simulate``) against the closed forms of the cost
model where they apply, against a by-hand timeline, and its bookkeeping (busy time, KV bytes,
the item order the stages run)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.llm.cost import (
    LinkCost,
    LlmCosts,
    decode_resource_times,
    decode_tokens_per_s,
    prefill_makespan,
)
from coinfer.llm.items import schedule
from coinfer.llm.simulate import GroupSpec, simulate_generation

# no context term: every decode step of a group costs the same, as the closed form assumes
FLAT = LlmCosts(
    layer_fixed_s=1e-3, layer_token_s=1e-4, layer_pair_s=1e-6,
    decode_fixed_s=2e-3, decode_seq_s=5e-4, decode_ctx_s=0.0,
    embed_token_s=1e-6, head_fixed_s=3e-3, head_token_s=1e-4, act_bytes_per_token=512,
    item_overhead_s=5e-4,
)  # fmt: skip

stages_st = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 4), min_size=n, max_size=n),
        st.lists(st.floats(0.2, 2.0), min_size=n, max_size=n),
        st.lists(
            st.builds(LinkCost, st.floats(0, 2e-3), st.floats(1e5, 1e9)),
            min_size=n - 1,
            max_size=n - 1,
        ),
    )
)


@settings(max_examples=60, deadline=None)
@given(stages_st, st.lists(st.integers(1, 16), min_size=1, max_size=4))
def test_one_group_first_token_is_the_prefill_makespan(stages, chunks) -> None:
    counts, speeds, links = stages
    prompt = sum(chunks)
    sim = simulate_generation(
        counts, speeds, FLAT, [GroupSpec(1, prompt, tuple(chunks))], 1, links=links
    )
    assert sim.ttft_s == pytest.approx(prefill_makespan(chunks, counts, speeds, FLAT, links))
    assert sim.decode_tokens_per_s is None  # one token: nothing after the first


@settings(max_examples=60, deadline=None)
@given(stages_st, st.builds(LinkCost, st.floats(0, 2e-3), st.floats(1e5, 1e9)))
def test_one_sequence_decodes_at_the_closed_form_rate(stages, back) -> None:
    """One sequence gets no pipelining: a token every sum of its stage and link times."""
    counts, speeds, links = stages
    sim = simulate_generation(
        counts, speeds, FLAT, [GroupSpec(1, 8, (8,))], 20, links=links,
        back_link=back if len(counts) > 1 else None,
    )  # fmt: skip
    closed = decode_tokens_per_s(
        counts, speeds, FLAT, links, context=8, sequences=1,
        back_link=back if len(counts) > 1 else None,
    )  # fmt: skip
    assert sim.decode_tokens_per_s == pytest.approx(closed, rel=1e-9)


def test_groups_interleave_at_the_busiest_resource() -> None:
    """Four groups on a 4-stage pipeline whose middle stage is the bottleneck: in steady state
    a round takes the busiest resource's work for all groups (the closed form's max)."""
    counts, speeds = [1, 4, 1, 1], [1.0, 0.5, 1.0, 1.0]
    groups = [GroupSpec(2, 8, (8,)) for _ in range(4)]
    sim = simulate_generation(counts, speeds, FLAT, groups, 60)
    closed = decode_tokens_per_s(counts, speeds, FLAT, context=8, sequences=8, microbatches=4)
    assert sim.decode_tokens_per_s == pytest.approx(closed, rel=0.02)
    stage = decode_resource_times(8, counts, speeds, FLAT, batch=2)[2]  # stage 1
    gaps = [b - a for a, b in zip(sim.token_times[0][10:], sim.token_times[0][11:], strict=False)]
    assert all(g == pytest.approx(4 * stage) for g in gaps)


def test_a_two_stage_timeline_by_hand() -> None:
    """Two stages, one sequence, a 2-token prompt in one chunk, 2 new tokens: every bar."""
    costs = LlmCosts(
        layer_fixed_s=1.0, layer_token_s=0.0, layer_pair_s=0.0,
        decode_fixed_s=0.5, decode_seq_s=0.0, decode_ctx_s=0.0,
        head_fixed_s=0.25, act_bytes_per_token=100,
    )  # fmt: skip
    sim = simulate_generation(
        [1, 2], [1.0, 2.0], costs, [GroupSpec(1, 2, (2,))], 2,
        links=[LinkCost(0.1, 1000.0)], back_link=LinkCost(0.05, float("inf")),
        devices=["a", "b"],
    )  # fmt: skip
    bars = [(e.resource, round(e.start_s, 9), round(e.end_s, 9)) for e in sim.events]
    # prefill: a 1.0; link 0.1 + 200 B / 1000 B/s = 0.3; b (2 layers + head) / 2 = 1.125;
    # token back 0.05; decode: a 0.5; link 0.1 + 0.1; b (1.0 + 0.25) / 2 = 0.625
    assert bars == [
        ("a", 0.0, 1.0), ("a->b", 1.0, 1.3), ("b", 1.3, 2.425), ("b->a", 2.425, 2.475),
        ("a", 2.475, 2.975), ("a->b", 2.975, 3.175), ("b", 3.175, 3.8),
    ]  # fmt: skip
    assert sim.token_times == ((2.425, 3.8),)
    assert sim.ttft_s == 2.425 and sim.decode_tokens_per_s == pytest.approx(1 / 1.375)
    assert sim.busy_s["a"] == pytest.approx(1.5) and sim.busy_s["b"] == pytest.approx(1.75)


def test_kv_bytes_grow_with_every_item() -> None:
    groups = [GroupSpec(2, 6, (4, 2)), GroupSpec(1, 6, (4, 2))]
    sim = simulate_generation([3, 1], [1.0, 1.0], FLAT, groups, 5, kv_bytes_per_token_layer=10)
    for s, layers in enumerate([3, 1]):
        held = [b for _, b in sim.kv_bytes[s]]
        assert held == sorted(held)
        # at the end: (prompt + new - 1) tokens for each of the 3 sequences
        assert held[-1] == layers * 10 * 3 * (6 + 5 - 1)
    assert len(sim.kv_bytes[0]) == len(schedule([{"slices": [4, 2]}] * 2, 5))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate_generation([1, 1], [1.0], FLAT, [GroupSpec(1, 2, (2,))], 2)
    with pytest.raises(ValueError):
        simulate_generation([1], [1.0], FLAT, [], 2)
