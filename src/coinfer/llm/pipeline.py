"""The in-process reference pipeline: stages in order, token-sliced prefill, greedy decode.

Why in-process: this is the definition of what a split LLM computes, with no processes,
sockets or timing in the way. The multi-process runtime must produce exactly these tokens;
the tests pin these functions to the unsplit model (same greedy tokens, logits within 1e-4).

Token-sliced prefill (PipeLLM): the prompt is cut along the token dimension into chunks; chunk
``k`` runs through every stage in order, and on each stage it attends causally to the keys and
values the stage cached for chunks ``0 .. k-1``. In a real pipeline stage ``s`` works on chunk
``k`` while stage ``s+1`` works on chunk ``k-1``; here they simply run one after another, which
computes the same numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from .decoder import DecoderParts
from .stage import DecoderStage


def build_stages(parts: DecoderParts, layer_counts: Sequence[int]) -> list[DecoderStage]:
    """Consecutive stages holding ``layer_counts[i]`` layers each (every count ≥ 1, summing
    to the model's layer count)."""
    counts = [int(n) for n in layer_counts]
    if not counts or any(n < 1 for n in counts) or sum(counts) != parts.n_layers:
        raise InputError(
            f"layer counts {counts} must be positive and sum to the model's {parts.n_layers} layers"
        )
    bounds = [0]
    for n in counts:
        bounds.append(bounds[-1] + n)
    return [DecoderStage(parts, a, b) for a, b in itertools.pairwise(bounds)]


def check_slices(total: int, slices: Sequence[int] | None) -> list[int]:
    """``slices`` as a list of positive chunk sizes summing to ``total`` (default: one chunk)."""
    sizes = [total] if slices is None else [int(c) for c in slices]
    if not sizes or any(c < 1 for c in sizes) or sum(sizes) != total:
        raise InputError(f"chunk sizes {sizes} must be positive and sum to the {total} tokens")
    return sizes


def run_chunk(
    stages: Sequence[DecoderStage], ids: Tensor, *, seq: Hashable = 0, last_only: bool = False
) -> Tensor:
    """One chunk of new tokens ``[batch, c]`` through every stage; the last stage's logits."""
    start = stages[0].cached_tokens(seq)
    positions = torch.arange(start, start + ids.shape[1])
    x: Tensor = ids
    for stage in stages:
        x = stage.forward(x, positions, seq=seq, last_only=last_only)
    return x


def prefill(
    stages: Sequence[DecoderStage],
    ids: Tensor,
    slices: Sequence[int] | None = None,
    *,
    seq: Hashable = 0,
    last_only: bool = False,
) -> Tensor:
    """Run the prompt ``ids`` (``[batch, tokens]``) cut into chunks of ``slices`` tokens.

    Returns the logits of every prompt token ``[batch, tokens, vocab]`` (or of the last one,
    ``[batch, 1, vocab]``, with ``last_only``). The caches of ``seq`` keep the prompt.
    """
    if ids.dim() != 2:
        raise InputError(f"token ids must be [batch, tokens], got shape {tuple(ids.shape)}")
    sizes = check_slices(int(ids.shape[1]), slices)
    out = []
    start = 0
    for c in sizes:
        out.append(run_chunk(stages, ids[:, start : start + c], seq=seq, last_only=last_only))
        start += c
    return out[-1] if last_only else torch.cat(out, dim=1)


def reset(stages: Sequence[DecoderStage], seq: Hashable | None = None) -> None:
    """Drop the caches of ``seq`` (every sequence group when ``None``) on every stage."""
    for stage in stages:
        stage.reset(seq)


def generate(
    stages: Sequence[DecoderStage],
    ids: Tensor,
    max_new_tokens: int,
    *,
    slices: Sequence[int] | None = None,
    seq: Hashable = 0,
) -> Tensor:
    """Greedy decoding: prefill (token-sliced by ``slices``), then one token at a time
    through every stage. Returns ``[batch, prompt + max_new_tokens]`` ids; the caches of
    ``seq`` are reset first."""
    return generate_microbatched(stages, [ids], max_new_tokens, slices=slices, seqs=[seq])[0]


def generate_microbatched(
    stages: Sequence[DecoderStage],
    batches: Sequence[Tensor],
    max_new_tokens: int,
    *,
    slices: Sequence[int] | None = None,
    seqs: Sequence[Hashable] | None = None,
) -> list[Tensor]:
    """Greedy decoding of several micro-batches that take turns in the pipeline.

    Micro-batch ``m`` uses cache group ``seqs[m]`` (default ``m``); each decode round runs one
    step of every micro-batch in order — the order a pipeline of S stages interleaves S
    micro-batches so that no stage waits for the token it just produced. Prompts may differ in
    length between micro-batches (not within one).
    """
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    keys = list(range(len(batches))) if seqs is None else list(seqs)
    if len(keys) != len(batches) or len(set(keys)) != len(keys):
        raise InputError("one distinct cache group per micro-batch is needed")
    outs: list[Tensor] = []
    for ids, key in zip(batches, keys, strict=True):
        reset(stages, key)
        outs.append(ids)
        if max_new_tokens:
            logits = prefill(stages, ids, slices, seq=key, last_only=True)
            outs[-1] = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    for _ in range(max_new_tokens - 1):
        for m, key in enumerate(keys):
            logits = run_chunk(stages, outs[m][:, -1:], seq=key, last_only=True)
            outs[m] = torch.cat([outs[m], logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return outs
