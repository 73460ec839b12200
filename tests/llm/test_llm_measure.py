"""profile_layer_costs: a few seconds, non-negative coefficients, predictions near the timings."""

from __future__ import annotations

from llm_models import tiny_llama

from coinfer.llm.decoder import decoder_parts
from coinfer.llm.measure import DECODE_POINTS, TABLE_BATCH, profile_layer_costs


def test_profile_is_quick_and_sane() -> None:
    parts = decoder_parts(tiny_llama(layers=2))
    prof = profile_layer_costs(parts, repeats=3)
    c = prof.costs
    assert prof.seconds < 10
    coefs = (c.layer_fixed_s, c.layer_token_s, c.layer_pair_s, c.decode_fixed_s, c.decode_seq_s,
             c.decode_ctx_s, c.embed_token_s, c.head_fixed_s, c.head_token_s)  # fmt: skip
    assert all(x >= 0 for x in coefs)
    assert c.layer_fixed_s + c.layer_token_s > 0 and c.decode_fixed_s + c.decode_seq_s > 0
    assert c.act_bytes_per_token == 128 * 4
    assert len(prof.prefill_samples) == 6 and len(prof.decode_samples) == len(DECODE_POINTS)
    # the per-batch tables are the timings themselves (context 0), the context points what a
    # longer context added (never negative)
    assert len(c.decode_batch_s) == len(c.head_batch_s) == TABLE_BATCH
    at0 = {b: t for b, p, t in prof.decode_samples if p == 0}
    assert all(c.decode_s(0, b) == at0[b] for b in range(1, TABLE_BATCH + 1))
    # contexts past the model's positions (256 here) are timed at the longest it takes
    longest = parts.max_positions - 3 - 2
    assert {(b, p) for b, p, _ in c.decode_ctx_points} == {
        (b, min(p, longest)) for b, p in DECODE_POINTS if p > 0
    }
    assert all(e >= 0 for *_, e in c.decode_ctx_points)
    # a loaded, shared 2-core machine is noisy: ask only that the fit is not absurd
    assert prof.max_rel_error < 3.0
