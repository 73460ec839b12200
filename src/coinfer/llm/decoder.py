"""A uniform view of a decoder-only causal LM: embedding, layers, final norm, LM head.

Why: splitting an LLM across devices means running *some* of its decoder layers in one place
with a KV cache of their own. transformers models only run whole (their ``forward`` builds the
mask, the rotary tables and one cache for every layer), and the zoo's plain GPT-2 has no cache
at all. :class:`DecoderParts` names the pieces every family has, plus the few facts the cost
and memory models need (layers, widths, heads, bytes per parameter), so :mod:`.stage` and
:mod:`.split` never look at a family's attribute names again.

The parts *reference* the user's modules (no copy, nothing is modified): a stage calls them.
Supported: transformers ``GPT2LMHeadModel``, ``LlamaForCausalLM`` and ``Qwen2ForCausalLM``
(full attention), whether given as a model object or wrapped in the zoo's ``HFWrapper``, and
the zoo's plain-PyTorch GPT-2. Other families raise :class:`InputError` until a test covers
them (a family that scales embeddings or slides its window would silently compute the wrong
thing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError
from ..zoo import ZOO, load_model
from ..zoo.transformer import GPT2 as PlainGPT2

# transformers model types whose decoder layers this package drives (tested in tests/llm).
HF_FAMILIES = ("gpt2", "llama", "qwen2")
Family = Literal["hf", "plain_gpt2"]


class TiedHead(nn.Module):
    """The LM head of a model that reuses its token embedding (plain GPT-2): ``x @ Eᵀ``."""

    def __init__(self, embed: nn.Embedding) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.embed.weight)


@dataclass(frozen=True, eq=False)
class DecoderParts:
    """The pieces of a decoder-only LM and the facts the cost model reads.

    ``family`` says how a layer is called: ``"hf"`` layers are transformers decoder layers
    (they take a cache object and, with rotary embeddings, ``position_embeddings``);
    ``"plain_gpt2"`` layers are :class:`coinfer.zoo.transformer.Block` run by
    :func:`coinfer.llm.stage.run_plain_block`. Exactly one of ``pos_embed`` (learned
    positions, GPT-2) and ``rotary`` (a module mapping ``(x, position_ids)`` to
    ``(cos, sin)``, Llama/Qwen2) is set.
    """

    family: Family
    model_type: str
    embed: nn.Embedding
    pos_embed: nn.Embedding | None
    rotary: nn.Module | None
    layers: tuple[nn.Module, ...]
    final_norm: nn.Module
    lm_head: nn.Module
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    bytes_per_param: int
    tied_head: bool
    attn_impl: str = "sdpa"
    max_positions: int | None = None
    source: nn.Module | None = None

    @property
    def layer_param_bytes(self) -> int:
        """Weight bytes of one decoder layer (all layers of these families are the same size)."""
        return _param_bytes(self.layers[0])

    @property
    def embed_param_bytes(self) -> int:
        """Weight bytes the first stage holds besides its layers (token + learned positions)."""
        pos = _param_bytes(self.pos_embed) if self.pos_embed is not None else 0
        return _param_bytes(self.embed) + pos

    @property
    def head_param_bytes(self) -> int:
        """Weight bytes the last stage holds besides its layers: final norm and LM head.

        A tied head is counted in full: when the last stage is not the first, it must hold its
        own copy of the embedding matrix.
        """
        head = self.embed if self.tied_head else self.lm_head
        return _param_bytes(self.final_norm) + _param_bytes(head)

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """KV-cache bytes one token adds to one layer: ``2 · n_kv_heads · head_dim · bytes``."""
        return 2 * self.n_kv_heads * self.head_dim * self.bytes_per_param

    @property
    def act_bytes_per_token(self) -> int:
        """Bytes of one token's hidden state sent between stages."""
        return self.hidden * self.bytes_per_param


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The :class:`DecoderParts` of ``model`` (a transformers causal LM, the zoo's ``HFWrapper``
    around one, or the zoo's plain GPT-2).

    Raises
    ------
    InputError
        The model is not a supported decoder-only LM (the message names what was found).
    """
    inner = getattr(model, "model", None)
    if type(model).__name__ == "HFWrapper" and isinstance(inner, nn.Module):
        model = inner  # the zoo's wrapper: one tensor in, tuple out — unwrap to the LM itself
    if isinstance(model, PlainGPT2):
        return _plain_gpt2(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if config is None or model_type not in HF_FAMILIES:
        raise InputError(
            f"model {type(model).__name__} (type {model_type!r}) is not a supported decoder-only "
            f"LM: expected a transformers causal LM of type {', '.join(HF_FAMILIES)} or the zoo's "
            "plain GPT-2"
        )
    if model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        raise InputError(
            f"{type(model).__name__} is in training mode (dropout active): call .eval() on it "
            "first (coinfer does not change the model it is given)"
        )
    return _hf(model, config, str(model_type))


def _hf(model: nn.Module, config: object, model_type: str) -> DecoderParts:
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or head is None or base is model:
        raise InputError(f"{type(model).__name__} has no LM head: expected a *ForCausalLM model")
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
    if layers is None or norm is None:
        raise InputError(f"{type(model).__name__}: cannot find its decoder layers and final norm")
    layer_types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        raise InputError(f"{type(model).__name__}: sliding-window attention is not supported")
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    if impl not in ("sdpa", "eager"):
        raise InputError(f"attention implementation {impl!r} is not supported (sdpa, eager)")
    n_heads = int(config.num_attention_heads)  # type: ignore[attr-defined]
    hidden = int(config.hidden_size)  # type: ignore[attr-defined]
    head_dim = int(getattr(config, "head_dim", None) or hidden // n_heads)
    embed = base.get_input_embeddings()
    param = next(model.parameters())
    n_layers = len(layers)
    return DecoderParts(
        family="hf",
        model_type=model_type,
        embed=embed,
        pos_embed=getattr(base, "wpe", None),
        rotary=getattr(base, "rotary_emb", None),
        layers=tuple(layers),
        final_norm=norm,
        lm_head=head,
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        head_dim=head_dim,
        vocab=int(config.vocab_size),  # type: ignore[attr-defined]
        bytes_per_param=param.element_size(),
        tied_head=head.weight is embed.weight,
        attn_impl=impl,
        max_positions=getattr(config, "max_position_embeddings", None),
        source=model,
    )


def _plain_gpt2(model: PlainGPT2) -> DecoderParts:
    block = model.blocks[0]
    hidden = model.wte.embedding_dim
    n_heads = block.attn.heads
    return DecoderParts(
        family="plain_gpt2",
        model_type="gpt2_plain",
        embed=model.wte,
        pos_embed=model.wpe,
        rotary=None,
        layers=tuple(model.blocks),
        final_norm=model.norm,
        lm_head=TiedHead(model.wte),
        n_layers=len(model.blocks),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        head_dim=hidden // n_heads,
        vocab=model.wte.num_embeddings,
        bytes_per_param=model.wte.weight.element_size(),
        tied_head=True,
        max_positions=model.wpe.num_embeddings,
        source=model,
    )


def load_causal_lm(spec: str, *, meta: bool = False) -> DecoderParts:
    """Build the LM named by ``spec`` (a zoo name such as ``gpt2``/``gpt2_plain``, or
    ``file.py:factory`` / ``module:factory``) through the zoo loader — same seeded weights as
    every other coinfer command — and return its parts (``parts.source`` is the model).

    ``meta=True`` builds it on the meta device: sizes and byte counts for the memory model and
    the split, in a fraction of the time and with no weight memory, but nothing to run.
    """
    # A factory need not return example inputs (an LM's are just ids); one id satisfies the
    # loader, and the zoo's text entries bring their own.
    model, _ = load_model(spec, None if spec.strip() in ZOO else (1, 1), meta=meta)
    return decoder_parts(model)


@torch.no_grad()
def full_logits(parts: DecoderParts, ids: Tensor) -> Tensor:
    """Logits of the unsplit model for every position of ``ids`` (``[batch, tokens]``), no
    cache: the reference the tests compare split and sliced runs against."""
    model = parts.source
    if model is None:
        raise InputError("these parts have no source model to run unsplit")
    if parts.family == "plain_gpt2":
        return model(ids)
    return model(input_ids=ids, use_cache=False).logits
