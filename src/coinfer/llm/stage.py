"""One pipeline stage of a decoder-only LM: layers ``[a, b)`` with a KV cache of their own.

Why a stage owns its cache: in a split LLM every device keeps the keys and values of *its*
layers only, so prefill chunks and decode steps can flow through the pipeline while each
device attends over what it has cached — nothing but hidden states crosses a link. The stage
also owns everything the unsplit model computes once at the model level and a split model must
recompute per stage: the position embeddings (rotary ``cos``/``sin`` from the token positions
for Llama/Qwen2; learned positions added with the token embedding on the first stage for GPT-2)
and the causal mask over cached + new tokens.

Caches are keyed by a sequence-group id (``seq``), so one stage can interleave several
micro-batches (each ``[batch, tokens]`` of equal-length sequences) without mixing their keys.
Our own :class:`KVCache` (concatenated tensors per layer) is used instead of transformers'
``DynamicCache``: it is keyed by the layer's global index, so a stage holding layers 5–8 needs
no placeholder layers 0–4, and the plain GPT-2 (which has no cache support) uses it too.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError
from .decoder import DecoderParts


class KVCache:
    """Keys and values per layer, ``[batch, kv_heads, tokens, head_dim]``, grown by concat.

    ``update`` has the signature transformers attention layers call (``cache.update(k, v,
    layer_idx, ...)``), and returns the full keys and values to attend over.
    """

    def __init__(self) -> None:
        self.layers: dict[int, tuple[Tensor, Tensor]] = {}

    def update(
        self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        old = self.layers.get(layer_idx)
        if old is not None:
            key = torch.cat([old[0], key], dim=-2)
            value = torch.cat([old[1], value], dim=-2)
        self.layers[layer_idx] = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int | None = None) -> int:
        if not self.layers:
            return 0
        k = self.layers[min(self.layers) if layer_idx is None else layer_idx][0]
        return int(k.shape[-2])

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k, _ in self.layers.values())


def causal_mask(cached: int, new: int, impl: str, dtype: torch.dtype) -> Tensor | None:
    """Mask ``[1, 1, new, cached + new]``: new token ``i`` sees keys ``0 .. cached + i``.

    ``None`` for a single new token (it sees everything). sdpa takes a boolean mask (True =
    attend); eager attention adds the mask to its scores, so it gets 0 / the dtype's minimum.
    """
    if new == 1:
        return None
    keys = torch.arange(cached + new)
    allowed = keys[None, :] <= (cached + torch.arange(new))[:, None]
    if impl == "eager":
        zero = torch.zeros((), dtype=dtype)
        allowed = torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed[None, None]


def run_plain_block(
    block: nn.Module, x: Tensor, mask: Tensor | None, cache: KVCache, idx: int
) -> Tensor:
    """One block of the zoo's plain GPT-2 with a KV cache: its own weights, same arithmetic as
    :class:`coinfer.zoo.transformer.Block` (pre-norm), with keys/values appended to ``cache``."""
    attn = block.attn
    h = block.norm1(x)
    heads = attn.heads
    q = attn.query(h).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = attn.key(h).unflatten(-1, (heads, -1)).transpose(1, 2)
    v = attn.value(h).unflatten(-1, (heads, -1)).transpose(1, 2)
    k, v = cache.update(k, v, idx)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + attn.out(y.transpose(1, 2).flatten(2))
    return x + block.fc2(block.act(block.fc1(block.norm2(x))))


class DecoderStage:
    """Layers ``[first_layer, last_layer)`` of ``parts``; the embedding when ``first_layer`` is
    0, the final norm and LM head when ``last_layer`` is ``n_layers``."""

    def __init__(self, parts: DecoderParts, first_layer: int, last_layer: int) -> None:
        if not 0 <= first_layer < last_layer <= parts.n_layers:
            raise InputError(
                f"bad stage layers [{first_layer}, {last_layer}) for a model of "
                f"{parts.n_layers} layers: need 0 <= first < last <= {parts.n_layers}"
            )
        self.parts = parts
        self.first_layer = first_layer
        self.last_layer = last_layer
        self.caches: dict[Hashable, KVCache] = {}

    @property
    def is_first(self) -> bool:
        return self.first_layer == 0

    @property
    def is_last(self) -> bool:
        return self.last_layer == self.parts.n_layers

    @property
    def n_layers(self) -> int:
        return self.last_layer - self.first_layer

    def cached_tokens(self, seq: Hashable = 0) -> int:
        """Tokens already in this stage's cache for sequence group ``seq``."""
        cache = self.caches.get(seq)
        return cache.get_seq_length() if cache is not None else 0

    def kv_bytes(self) -> int:
        """Bytes held in this stage's caches, over every sequence group."""
        return sum(c.nbytes for c in self.caches.values())

    def reset(self, seq: Hashable | None = None) -> None:
        """Drop the cache of ``seq`` (or of every sequence group when ``None``)."""
        if seq is None:
            self.caches.clear()
        else:
            self.caches.pop(seq, None)

    @torch.no_grad()
    def forward(
        self,
        x: Tensor,
        positions: Tensor | None = None,
        *,
        seq: Hashable = 0,
        last_only: bool = False,
        head: bool = True,
    ) -> Tensor:
        """Run new tokens through this stage, appending their keys/values to the cache.

        Parameters
        ----------
        x : Tensor
            Token ids ``[batch, tokens]`` on the first stage, hidden states
            ``[batch, tokens, hidden]`` on the others.
        positions : Tensor, optional
            Absolute positions of the new tokens, ``[tokens]`` or ``[batch, tokens]``;
            default: right after what the cache holds.
        seq : hashable
            The sequence group whose cache to use (micro-batches keep separate caches).
        last_only : bool
            On the last stage, return logits of the last token only (what decoding needs).
        head : bool
            On the last stage, ``False`` skips the final norm and LM head and returns hidden
            states: a prefill chunk that is not the prompt's last needs no logits.

        Returns
        -------
        Tensor
            Hidden states ``[batch, tokens, hidden]``, or logits ``[batch, tokens, vocab]``
            on the last stage.
        """
        parts = self.parts
        cache = self.caches.setdefault(seq, KVCache())
        cached = cache.get_seq_length()
        new = int(x.shape[1])
        if positions is None:
            positions = torch.arange(cached, cached + new)
        pos = positions if positions.dim() == 2 else positions[None]
        if pos.shape[-1] != new:
            raise InputError(f"{pos.shape[-1]} positions for {new} new tokens")
        if self.is_first:
            if x.is_floating_point():
                raise InputError("the first stage takes token ids, got a float tensor")
            h = parts.embed(x)
            if parts.pos_embed is not None:
                h = h + parts.pos_embed(pos)
        else:
            h = x
        mask = causal_mask(cached, new, parts.attn_impl, h.dtype)
        rope = parts.rotary(h, position_ids=pos) if parts.rotary is not None else None
        for idx in range(self.first_layer, self.last_layer):
            h = self.run_layer(idx, h, pos, mask, rope, cache)
        if not (self.is_last and head):
            return h
        if last_only:
            h = h[:, -1:]
        return parts.lm_head(parts.final_norm(h))

    __call__ = forward

    def run_layer(
        self,
        idx: int,
        h: Tensor,
        pos: Tensor,
        mask: Tensor | None,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache,
    ) -> Tensor:
        """Decoder layer ``idx`` on hidden states ``h`` (``pos`` ``[1 | batch, tokens]``, mask
        from :func:`causal_mask`, rotary ``(cos, sin)`` or None), appending to ``cache``."""
        layer = self.parts.layers[idx]
        if self.parts.family == "plain_gpt2":
            return run_plain_block(layer, h, mask, cache, idx)
        kwargs: dict[str, Any] = {"attention_mask": mask, "cache": cache, "use_cache": True}
        if rope is not None:
            kwargs["position_embeddings"] = rope
            kwargs["position_ids"] = pos
        out = layer(h, **kwargs)
        return out[0] if isinstance(out, tuple) else out
