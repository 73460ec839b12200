"""Hugging Face transformers built from a config (random weights, nothing downloaded).

``vit_b16``, ``bert_base`` and ``gpt2`` use transformers when it is importable and fall back to
the plain-PyTorch definitions in :mod:`coinfer.zoo.transformer` otherwise; the ``*_hf``
factories insist on transformers. HF models do not trace with torch.fx, so capture uses its
torch.export fallback for them (slower to capture, ~10 s for BERT-base here, and stages run
ATen ops instead of eager modules); the ``*_plain`` zoo entries are the fast path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from . import transformer

# Never reach for the network: configs are built in code, weights are random.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class HFWrapper(nn.Module):
    """Call a transformers model with one tensor; return its tensor outputs as a tuple.

    transformers models take keyword inputs and return ``ModelOutput`` objects; coinfer's
    contract is tensors in, tuple of tensors out.
    """

    def __init__(self, model: nn.Module, input_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(**{self.input_name: x}, return_dict=False)
        return tuple(t for t in out if isinstance(t, Tensor))


def _transformers() -> Any:
    import transformers

    return transformers


def have_transformers() -> bool:
    """True when transformers imports (it is an optional dependency)."""
    try:
        _transformers()
    except Exception:
        return False
    return True


def vit_b16_hf() -> nn.Module:
    """ViT-B/16 (ViTForImageClassification, 1000 classes) from a default config."""
    tf = _transformers()
    cfg = tf.ViTConfig(num_labels=1000, attn_implementation="sdpa")
    return HFWrapper(tf.ViTForImageClassification(cfg), "pixel_values")


def bert_base_hf() -> nn.Module:
    """BERT-base (BertModel with pooler) from a default config: (sequence, pooled) out."""
    tf = _transformers()
    return HFWrapper(tf.BertModel(tf.BertConfig(attn_implementation="sdpa")), "input_ids")


def gpt2_hf() -> nn.Module:
    """GPT-2 small (GPT2LMHeadModel, tied head, no KV cache) from a default config."""
    tf = _transformers()
    cfg = tf.GPT2Config(use_cache=False, attn_implementation="sdpa")
    return HFWrapper(tf.GPT2LMHeadModel(cfg), "input_ids")


def tiny_bert_hf() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A 2-layer, 32-wide BERT with example ids (1×8): fast tests of the transformers path."""
    tf = _transformers()
    cfg = tf.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="sdpa",
    )
    return HFWrapper(tf.BertModel(cfg), "input_ids"), (torch.randint(0, 100, (1, 8)),)


def vit_b16() -> nn.Module:
    """ViT-B/16 from transformers when available, else the plain-PyTorch definition."""
    return vit_b16_hf() if have_transformers() else transformer.vit_b16()


def bert_base() -> nn.Module:
    """BERT-base from transformers when available, else the plain-PyTorch definition."""
    return bert_base_hf() if have_transformers() else transformer.bert_base()


def gpt2() -> nn.Module:
    """GPT-2 small from transformers when available, else the plain-PyTorch definition."""
    return gpt2_hf() if have_transformers() else transformer.gpt2()


def tiny_gpt2_hf() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A 2-layer, 32-wide GPT-2 (tied head) with example ids (1×8): fast transformers tests."""
    tf = _transformers()
    cfg = tf.GPT2Config(
        vocab_size=100,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return HFWrapper(tf.GPT2LMHeadModel(cfg), "input_ids"), (torch.randint(0, 100, (1, 8)),)


def tiny_vit_hf() -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A 2-layer, 32-wide ViT on 32×32 images with 8×8 patches: fast transformers tests."""
    tf = _transformers()
    cfg = tf.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
        attn_implementation="sdpa",
    )
    return HFWrapper(tf.ViTForImageClassification(cfg), "pixel_values"), (
        torch.randn(1, 3, 32, 32),
    )
