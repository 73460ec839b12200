"""The split pipeline computes what the unsplit model computes.

- greedy tokens identical to the unsplit model's ``generate(do_sample=False)`` (and to an
  explicit greedy loop with its own cache) for GPT-2, Llama and Qwen2, 1–4 stages, uneven
  splits, batch 1 and 3;
- token-sliced prefill: logits within 1e-4 of the unsliced model, same greedy tokens;
- micro-batches with separate caches give the tokens each would get alone.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_models import prompt, tiny_llama

from coinfer.errors import InputError
from coinfer.llm.decoder import decoder_parts, full_logits
from coinfer.llm.pipeline import build_stages, generate, generate_microbatched, prefill

NEW = 8
# Layer counts per stage for the 6-layer Llama; scaled down for the 5-layer Qwen2 and the
# 4-layer GPT-2 below (1, 2, 3 and 4 stages, even and uneven).
SPLITS = {
    "llama": [[6], [3, 3], [1, 5], [2, 1, 3], [1, 2, 2, 1]],
    "qwen2": [[5], [4, 1], [2, 3], [1, 3, 1], [1, 1, 2, 1]],
    "gpt2": [[4], [2, 2], [3, 1], [1, 2, 1], [1, 1, 1, 1]],
}
CASES = [(name, split) for name, splits in SPLITS.items() for split in splits]


def hf_generate(model, ids: torch.Tensor, new: int) -> torch.Tensor:
    return model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
        do_sample=False, pad_token_id=0, eos_token_id=None,
    )  # fmt: skip


@torch.no_grad()
def hf_greedy_loop(model, ids: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy decoding of the unsplit model with its own cache, written out."""
    out = model(input_ids=ids, use_cache=True)
    cache, seq = out.cache, ids
    for _ in range(new):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        out = model(input_ids=nxt, cache=cache, use_cache=True)
        cache = out.cache
    return seq


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("name", "split"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_greedy_tokens_match_the_unsplit_model(models, name, split, batch) -> None:
    model = models[name]
    ids = prompt(batch, 11, seed=len(split) + batch)
    stages = build_stages(decoder_parts(model), split)
    ours = generate(stages, ids, NEW)
    assert torch.equal(ours, hf_generate(model, ids, NEW))


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
def test_generate_and_the_explicit_loop_agree(models, name) -> None:
    model = models[name]
    ids = prompt(2, 9)
    assert torch.equal(hf_generate(model, ids, NEW), hf_greedy_loop(model, ids, NEW))


@pytest.mark.parametrize("split", [[4], [2, 2], [1, 2, 1]])
def test_plain_gpt2_matches_its_uncached_greedy_loop(plain_gpt2, split) -> None:
    ids = prompt(3, 7)
    parts = decoder_parts(plain_gpt2)
    seq = ids
    with torch.no_grad():
        for _ in range(NEW):
            seq = torch.cat([seq, plain_gpt2(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(build_stages(parts, split), ids, NEW, slices=[3, 4]), seq)


SLICINGS = [[20], [10, 10], [12, 5, 3], [1, 19], [7, 7, 6], [4, 4, 4, 4, 4], [1] * 20]


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
def test_sliced_prefill_logits_match_the_unsliced_model(models, name) -> None:
    model = models[name]
    parts = decoder_parts(model)
    ids = prompt(3, 20)
    ref = full_logits(parts, ids)
    split = SPLITS[name][3]
    for slices in SLICINGS:
        stages = build_stages(parts, split)
        logits = prefill(stages, ids, slices)
        assert logits.shape == ref.shape
        assert (logits - ref).abs().max().item() < 1e-4, slices
        assert torch.equal(logits.argmax(-1), ref.argmax(-1))
        assert all(s.cached_tokens() == 20 for s in stages)


def test_sliced_prefill_plain_gpt2(plain_gpt2) -> None:
    parts = decoder_parts(plain_gpt2)
    ids = prompt(2, 16)
    ref = full_logits(parts, ids)
    for slices in ([16], [5, 11], [1, 2, 3, 4, 6]):
        logits = prefill(build_stages(parts, [1, 3]), ids, slices)
        assert (logits - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_sliced_prefill_then_decode_gives_the_same_tokens(models, name) -> None:
    model = models[name]
    ids = prompt(1, 18)
    stages = build_stages(decoder_parts(model), SPLITS[name][2])
    ref = hf_generate(model, ids, NEW)
    for slices in ([9, 9], [10, 5, 2, 1], [3] * 6):
        assert torch.equal(generate(stages, ids, NEW, slices=slices), ref)


@settings(max_examples=12)
@given(data=st.data())
def test_any_split_and_slicing_matches(data) -> None:
    model = _LLAMA4
    parts = decoder_parts(model)
    cuts = data.draw(st.sets(st.integers(1, 3)), label="layer cuts")
    bounds = [0, *sorted(cuts), 4]
    split = [b - a for a, b in itertools.pairwise(bounds)]
    n = data.draw(st.integers(1, 14), label="tokens")
    tcuts = data.draw(st.sets(st.integers(1, n - 1)) if n > 1 else st.just(set()), label="cuts")
    tb = [0, *sorted(tcuts), n]
    slices = [b - a for a, b in itertools.pairwise(tb)]
    ids = prompt(2, n, seed=n)
    logits = prefill(build_stages(parts, split), ids, slices)
    assert (logits - full_logits(parts, ids)).abs().max().item() < 1e-4


_LLAMA4 = tiny_llama(layers=4)


def test_microbatches_keep_separate_caches(llama) -> None:
    parts = decoder_parts(llama)
    stages = build_stages(parts, [2, 2, 2])
    batches = [prompt(1, 10, seed=1), prompt(2, 10, seed=2), prompt(1, 10, seed=3)]
    outs = generate_microbatched(stages, batches, NEW, slices=[6, 4])
    for ids, out in zip(batches, outs, strict=True):
        assert torch.equal(out, hf_generate(llama, ids, NEW))
    # every stage holds one cache per micro-batch, each with prompt + generated - 1 tokens
    assert all(len(s.caches) == 3 for s in stages)
    assert all(s.cached_tokens(1) == 10 + NEW - 1 for s in stages)


def test_bad_layer_counts_and_slices_are_input_errors(llama) -> None:
    parts = decoder_parts(llama)
    with pytest.raises(InputError, match="sum to the model's 6 layers"):
        build_stages(parts, [2, 2])
    with pytest.raises(InputError, match="positive"):
        build_stages(parts, [6, 0])
    with pytest.raises(InputError, match="chunk sizes"):
        prefill(build_stages(parts, [6]), prompt(1, 5), [2, 2])
