"""DecoderParts: the facts of each family, unwrapping, loading specs, refusing what it cannot
split, and never touching the user's model."""

from __future__ import annotations

import pytest
import torch
from llm_models import prompt, tiny_gpt2
from torch import nn

from coinfer.errors import InputError
from coinfer.llm.decoder import decoder_parts, full_logits, load_causal_lm
from coinfer.llm.pipeline import build_stages, generate
from coinfer.zoo.hf import HFWrapper


def test_llama_facts(llama) -> None:
    p = decoder_parts(llama)
    assert (p.family, p.model_type, p.n_layers, p.hidden) == ("hf", "llama", 6, 128)
    assert (p.n_heads, p.n_kv_heads, p.head_dim, p.vocab) == (4, 2, 32, 256)
    assert p.bytes_per_param == 4 and not p.tied_head
    assert p.rotary is not None and p.pos_embed is None
    assert p.kv_bytes_per_token_layer == 2 * 2 * 32 * 4
    assert p.layer_param_bytes == sum(x.numel() for x in llama.model.layers[0].parameters()) * 4


def test_qwen2_and_gpt2_facts(qwen2, gpt2) -> None:
    q = decoder_parts(qwen2)
    assert (q.model_type, q.n_layers, q.n_kv_heads, q.head_dim) == ("qwen2", 5, 2, 32)
    g = decoder_parts(gpt2)
    assert (g.model_type, g.n_layers, g.n_heads, g.n_kv_heads, g.head_dim) == ("gpt2", 4, 4, 4, 32)
    assert g.tied_head and g.pos_embed is not None and g.rotary is None


def test_weights_add_up(llama, gpt2) -> None:
    for model in (llama, gpt2):
        p = decoder_parts(model)
        total = sum(x.numel() * 4 for x in model.parameters())
        shared = p.embed.weight.numel() * 4 if p.tied_head else 0
        parts_sum = p.n_layers * p.layer_param_bytes + p.embed_param_bytes + p.head_param_bytes
        assert parts_sum - shared == total


def test_the_zoo_wrapper_is_unwrapped(gpt2) -> None:
    p = decoder_parts(HFWrapper(gpt2, "input_ids"))
    assert p.source is gpt2 and p.n_layers == 4


def test_zoo_gpt2_on_meta_device() -> None:
    p = load_causal_lm("gpt2", meta=True)
    assert (p.model_type, p.n_layers, p.hidden, p.n_heads, p.vocab) == ("gpt2", 12, 768, 12, 50257)
    assert p.tied_head and p.kv_bytes_per_token_layer == 2 * 768 * 4
    plain = load_causal_lm("gpt2_plain", meta=True)
    assert (plain.family, plain.n_layers, plain.layer_param_bytes) == (
        "plain_gpt2",
        12,
        p.layer_param_bytes,
    )


def test_file_factory_spec(tmp_path) -> None:
    src = tmp_path / "lm.py"
    src.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "from llm_models import tiny_qwen2\n"
        "def make():\n    return tiny_qwen2(layers=3)\n"
    )
    p = load_causal_lm(f"{src}:make")
    assert (p.model_type, p.n_layers) == ("qwen2", 3)
    ids = prompt(1, 6)
    out = generate(build_stages(p, [1, 2]), ids, 4)
    ref = p.source.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                            do_sample=False, pad_token_id=0, eos_token_id=None)  # fmt: skip
    assert torch.equal(out, ref)


def test_unsupported_models_are_input_errors() -> None:
    with pytest.raises(InputError, match="not a supported decoder-only LM"):
        decoder_parts(nn.Linear(3, 3))
    from coinfer.zoo.hf import tiny_bert_hf

    with pytest.raises(InputError, match="type 'bert'"):
        decoder_parts(tiny_bert_hf()[0])


def test_training_mode_is_refused_not_changed() -> None:
    model = tiny_gpt2(layers=2).train()
    with pytest.raises(InputError, match="training mode"):
        decoder_parts(model)
    assert model.training


def test_the_users_model_is_untouched(llama) -> None:
    before = {k: v.clone() for k, v in llama.state_dict().items()}
    modules = {n: type(m) for n, m in llama.named_modules()}
    ids = prompt(2, 9)
    ref = full_logits(decoder_parts(llama), ids)
    generate(build_stages(decoder_parts(llama), [2, 4]), ids, 5, slices=[4, 5])
    after = llama.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert modules == {n: type(m) for n, m in llama.named_modules()}
    assert not llama.training
    assert torch.equal(full_logits(decoder_parts(llama), ids), ref)
