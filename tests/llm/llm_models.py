"""Small decoder-only LMs built from configs (random weights, nothing downloaded) for tests/llm.

Each is 4–6 layers and at most 128 wide, so a greedy generation takes milliseconds.
"""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers

VOCAB = 256


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def tiny_llama(layers: int = 6, attn: str = "sdpa") -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, attn_implementation=attn,
    )  # fmt: skip
    return _seeded(lambda: transformers.LlamaForCausalLM(cfg))


def tiny_qwen2(layers: int = 5) -> nn.Module:
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, attn_implementation="sdpa",
    )  # fmt: skip
    return _seeded(lambda: transformers.Qwen2ForCausalLM(cfg))


def tiny_gpt2(layers: int = 4) -> nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=128, n_layer=layers, n_head=4, n_positions=256,
        bos_token_id=1, eos_token_id=2, attn_implementation="sdpa",
    )  # fmt: skip
    return _seeded(lambda: transformers.GPT2LMHeadModel(cfg))


def tiny_plain_gpt2(layers: int = 4) -> nn.Module:
    from coinfer.zoo.transformer import GPT2, TransformerConfig

    cfg = TransformerConfig(
        width=64, depth=layers, heads=4, vocab=VOCAB, max_positions=128, layer_norm_eps=1e-5
    )
    return _seeded(lambda: GPT2(cfg))


def prompt(batch: int, tokens: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, tokens), generator=gen)
