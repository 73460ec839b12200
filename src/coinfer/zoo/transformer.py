"""Transformers in plain PyTorch: ViT-B/16, BERT-base (encoder), GPT-2 small (decoder).

Written here so they capture with torch.fx into readable, layer-level graphs (one node per
linear / attention / norm) and need nothing beyond torch. When ``transformers`` is importable
the zoo can build the Hugging Face versions from a config instead (:mod:`coinfer.zoo.hf`);
these plain definitions are the reference path that is always available and tested.

Attention uses ``F.scaled_dot_product_attention`` so it is one graph node that capture prices
as 2·L·S·(E_q + E_v) FLOPs per head (both matmuls) plus the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of a transformer stack (defaults: the "base" size shared by BERT, GPT-2, ViT-B)."""

    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    vocab: int = 30522
    max_positions: int = 512
    layer_norm_eps: float = 1e-12


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate Q, K, V projections and an output projection."""

    def __init__(self, cfg: TransformerConfig, causal: bool = False) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.width, cfg.width)
        self.key = nn.Linear(cfg.width, cfg.width)
        self.value = nn.Linear(cfg.width, cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, W) -> (B, heads, T, W / heads) without reading B or T, so the captured graph
        # has no sizes baked in and its stages accept any batch size and sequence length.
        q = self.query(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k = self.key(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        v = self.value(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Attention + MLP with residuals; ``pre_norm`` (ViT, GPT-2) or post-norm (BERT)."""

    def __init__(self, cfg: TransformerConfig, pre_norm: bool, causal: bool = False) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg, causal)
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.width, cfg.width * cfg.mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.width * cfg.mlp_ratio, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class ViT(nn.Module):
    """Vision Transformer: 16×16 patches, class token, learned positions, pre-norm blocks."""

    def __init__(self, image: int = 224, patch: int = 16, num_classes: int = 1000) -> None:
        super().__init__()
        cfg = TransformerConfig(layer_norm_eps=1e-6)
        tokens = (image // patch) ** 2 + 1
        self.patch = nn.Conv2d(3, cfg.width, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, cfg.width) * 0.02)
        self.blocks = nn.Sequential(*(Block(cfg, pre_norm=True) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        # Images smaller than 224 use the first positions (handy for fast tests); at 224 all.
        x = torch.cat([cls, x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class Bert(nn.Module):
    """BERT-base encoder: word + position + segment embeddings, 12 post-norm blocks, pooler."""

    def __init__(self, cfg: TransformerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TransformerConfig()
        self.word = nn.Embedding(cfg.vocab, cfg.width)
        self.position = nn.Embedding(cfg.max_positions, cfg.width)
        self.segment = nn.Embedding(2, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.blocks = nn.Sequential(*(Block(cfg, pre_norm=False) for _ in range(cfg.depth)))
        self.pooler = nn.Linear(cfg.width, cfg.width)
        self.pool_act = nn.Tanh()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Position ids 0..T-1 and all-zero segment ids are derived from the input, not stored.
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = self.word(ids) + self.position(positions) + self.segment(torch.zeros_like(ids))
        x = self.blocks(self.norm(x))
        return x, self.pool_act(self.pooler(x[:, 0]))


class GPT2(nn.Module):
    """GPT-2 small: causal pre-norm blocks, final norm, LM head tied to the token embedding."""

    def __init__(self, cfg: TransformerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TransformerConfig(vocab=50257, max_positions=1024, layer_norm_eps=1e-5)
        self.wte = nn.Embedding(cfg.vocab, cfg.width)
        self.wpe = nn.Embedding(cfg.max_positions, cfg.width)
        self.blocks = nn.Sequential(
            *(Block(cfg, pre_norm=True, causal=True) for _ in range(cfg.depth))
        )
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device)[None])
        x = self.norm(self.blocks(x))
        return F.linear(x, self.wte.weight)  # tied LM head: the embedding matrix, counted once


def vit_b16() -> nn.Module:
    """ViT-B/16 at 224×224 (~17.6 GMACs, 86.6 M parameters)."""
    return ViT()


def bert_base() -> nn.Module:
    """BERT-base encoder (110 M parameters), token ids in, (sequence, pooled) out."""
    return Bert()


def gpt2() -> nn.Module:
    """GPT-2 small (124 M parameters), token ids in, next-token logits out."""
    return GPT2()
