"""DecoderStage: layer ranges, per-stage and per-sequence caches, positions, masks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from llm_models import prompt, tiny_llama

from coinfer.errors import InputError
from coinfer.llm.decoder import decoder_parts, full_logits
from coinfer.llm.pipeline import build_stages, prefill
from coinfer.llm.stage import DecoderStage, causal_mask


@given(cached=st.integers(0, 6), new=st.integers(1, 6))
def test_causal_mask_sees_cached_and_earlier_new_tokens(cached, new) -> None:
    mask = causal_mask(cached, new, "sdpa", torch.float32)
    if new == 1:
        assert mask is None
        return
    assert mask.shape == (1, 1, new, cached + new)
    for i in range(new):
        for j in range(cached + new):
            assert bool(mask[0, 0, i, j]) == (j <= cached + i)
    eager = causal_mask(cached, new, "eager", torch.float32)
    assert torch.equal(eager == 0, mask)


def test_stage_bounds_are_checked(llama) -> None:
    parts = decoder_parts(llama)
    for a, b in [(0, 0), (3, 2), (-1, 2), (0, 7)]:
        with pytest.raises(InputError, match="bad stage layers"):
            DecoderStage(parts, a, b)
    s = DecoderStage(parts, 2, 4)
    assert (s.is_first, s.is_last, s.n_layers) == (False, False, 2)


def test_each_stage_caches_only_its_layers(llama) -> None:
    parts = decoder_parts(llama)
    stages = build_stages(parts, [1, 3, 2])
    prefill(stages, prompt(3, 7), [4, 3])
    for s in stages:
        assert sorted(s.caches[0].layers) == list(range(s.first_layer, s.last_layer))
        assert s.kv_bytes() == s.n_layers * parts.kv_bytes_per_token_layer * 7 * 3


def test_sequence_groups_and_reset(llama) -> None:
    parts = decoder_parts(llama)
    stages = build_stages(parts, [3, 3])
    a, b = prompt(1, 8, seed=1), prompt(1, 5, seed=2)
    la = prefill(stages, a, seq="a")
    prefill(stages, b, seq="b")
    assert [s.cached_tokens("a") for s in stages] == [8, 8]
    assert [s.cached_tokens("b") for s in stages] == [5, 5]
    for s in stages:
        s.reset("a")
    assert stages[0].cached_tokens("a") == 0 and stages[0].cached_tokens("b") == 5
    assert torch.allclose(prefill(stages, a, seq="a"), la, atol=1e-6)
    for s in stages:
        s.reset()
    assert not stages[1].caches


def test_explicit_positions_per_batch_row(llama) -> None:
    """Positions may be given per row; equal rows give what the default positions give."""
    parts = decoder_parts(llama)
    ids = prompt(2, 6)
    (stage,) = build_stages(parts, [6])
    default = stage.forward(ids)
    stage.reset()
    explicit = stage.forward(ids, torch.arange(6).expand(2, 6))
    assert torch.equal(default, explicit)
    stage.reset()
    with pytest.raises(InputError, match="positions"):
        stage.forward(ids, torch.arange(5))


def test_hidden_states_enter_later_stages(llama) -> None:
    parts = decoder_parts(llama)
    first, second = build_stages(parts, [2, 4])
    ids = prompt(1, 5)
    h = first.forward(ids)
    assert h.shape == (1, 5, 128)
    with pytest.raises(InputError, match="token ids"):
        first.forward(h)
    logits = second.forward(h, last_only=True)
    assert logits.shape == (1, 1, 256)


def test_eager_attention_matches_too() -> None:
    model = tiny_llama(layers=3, attn="eager")
    parts = decoder_parts(model)
    assert parts.attn_impl == "eager"
    ids = prompt(2, 10)
    logits = prefill(build_stages(parts, [1, 2]), ids, [3, 3, 4])
    assert (logits - full_logits(parts, ids)).abs().max().item() < 1e-4
