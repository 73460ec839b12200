"""profile_layer_costs: a few seconds, non-negative coefficients, predictions near the timings."""

from __future__ import annotations

from llm_models import tiny_llama

from coinfer.llm.decoder import decoder_parts
from coinfer.llm.measure import profile_layer_costs


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
    assert len(prof.prefill_samples) == 6 and len(prof.decode_samples) == 4
    # a loaded, shared 2-core machine is noisy: ask only that the fit is not absurd
    assert prof.max_rel_error < 3.0
