"""choose_slices: the exact optimum on small prompts (brute force over every slicing), sane
and no worse than equal chunks on long ones."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.llm.cost import LinkCost, LlmCosts, prefill_makespan
from coinfer.llm.slices import choose_slices, equal_slices


def compositions(n: int):
    for cuts in itertools.product((False, True), repeat=n - 1):
        sizes, c = [], 1
        for cut in cuts:
            if cut:
                sizes.append(c)
                c = 1
            else:
                c += 1
        yield [*sizes, c]


costs_st = st.builds(
    LlmCosts,
    layer_fixed_s=st.floats(0, 1e-3), layer_token_s=st.floats(0, 1e-3),
    layer_pair_s=st.floats(0, 3e-4), decode_fixed_s=st.just(0.0), decode_seq_s=st.just(0.0),
    decode_ctx_s=st.just(0.0), embed_token_s=st.floats(0, 1e-4), head_fixed_s=st.floats(0, 1e-3),
    head_token_s=st.floats(0, 1e-3), act_bytes_per_token=st.sampled_from([0, 256]),
)  # fmt: skip


@settings(max_examples=60)
@given(
    costs=costs_st,
    n=st.integers(1, 9),
    stages=st.lists(st.tuples(st.integers(1, 4), st.floats(0.3, 3)), min_size=1, max_size=3),
    link=st.tuples(st.floats(0, 1e-3), st.floats(1e4, 1e7)),
    fixed_k=st.booleans(),
    data=st.data(),
)
def test_optimal_against_brute_force(costs, n, stages, link, fixed_k, data) -> None:
    counts, speeds = [c for c, _ in stages], [v for _, v in stages]
    links = [LinkCost(*link)] * (len(stages) - 1)
    k = data.draw(st.integers(1, n), label="k") if fixed_k else None
    best = min(
        prefill_makespan(s, counts, speeds, costs, links)
        for s in compositions(n)
        if k is None or len(s) == k
    )
    got = choose_slices(n, counts, speeds, costs, links, k=k)
    assert got.exact and sum(got.sizes) == n and (k is None or len(got.sizes) == k)
    assert got.makespan_s == pytest.approx(
        prefill_makespan(got.sizes, counts, speeds, costs, links)
    )
    assert got.makespan_s <= best * (1 + 1e-9) + 1e-15


ATTENTION_HEAVY = LlmCosts(1e-4, 1e-5, 2e-6, 0, 0, 0, head_fixed_s=1e-3, head_token_s=1e-4)


def test_later_chunks_are_shorter_when_attention_dominates() -> None:
    got = choose_slices(64, [4, 4, 4], [1.0, 1.0, 1.0], ATTENTION_HEAVY, k=4)
    assert got.exact and got.sizes[0] > got.sizes[-1]
    equal = prefill_makespan(equal_slices(64, 4), [4, 4, 4], [1.0] * 3, ATTENTION_HEAVY)
    assert got.makespan_s < equal * 0.99


def test_long_prompts_use_a_grid_and_beat_equal_chunks() -> None:
    links = [LinkCost(1e-3, 1e8)] * 3
    got = choose_slices(2000, [6, 6, 6, 6], [1.0, 0.5, 2.0, 1.0], ATTENTION_HEAVY, links)
    assert not got.exact and got.granularity == 32 and sum(got.sizes) == 2000
    assert got.makespan_s == pytest.approx(
        prefill_makespan(got.sizes, [6, 6, 6, 6], [1.0, 0.5, 2.0, 1.0], ATTENTION_HEAVY, links)
    )
    for k in (1, 2, 4, 8, 16, 32, 64):
        eq = prefill_makespan(
            equal_slices(2000, k), [6] * 4, [1.0, 0.5, 2.0, 1.0], ATTENTION_HEAVY, links
        )
        assert got.makespan_s <= eq * (1 + 1e-9)


def test_fixed_k_beyond_the_grid_falls_back_to_every_boundary() -> None:
    got = choose_slices(100, [2, 2], [1.0, 1.0], ATTENTION_HEAVY, k=80, max_points=10)
    assert len(got.sizes) == 80 and got.exact


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        choose_slices(0, [2], [1.0], ATTENTION_HEAVY)
    with pytest.raises(ValueError):
        choose_slices(5, [2], [1.0], ATTENTION_HEAVY, k=6)
    assert equal_slices(10, 3) == [4, 3, 3]
