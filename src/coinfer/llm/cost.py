"""The time and memory model of a split LLM: chunked prefill, decode, KV cache.

Why a model of its own (not the piece/stage model of :mod:`coinfer.core`): an LLM stage's time
depends on *where in the sequence* it is. A chunk of ``c`` new tokens on one decoder layer
costs a fixed part (weights streamed, kernel launches), a part linear in ``c`` (the q/k/v/o
and MLP matmuls) and an attention part proportional to the ``c · (p + c)`` (query, key) pairs
it scores over ``p`` cached tokens; so later chunks of a prompt cost more than earlier ones,
and decode slows as the context grows. Memory is weights plus a KV cache that grows with
context × batch. Everything here is pure arithmetic on measured coefficients
(:mod:`.measure`), so planners (:mod:`.split`, :mod:`.slices`) can be tested exactly.

Times are seconds on the reference machine (speed 1.0); a device of speed ``v`` takes
``t / v``. Stages alternate with links in a pipeline: resource ``2s`` is stage ``s``,
resource ``2s + 1`` the link from stage ``s`` to ``s + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .decoder import DecoderParts


@dataclass(frozen=True, slots=True)
class LlmCosts:
    """Per-layer (and embedding/head) time coefficients, seconds at speed 1.0.

    Prefill, one layer, ``batch`` sequences each adding ``c`` tokens over ``p`` cached:
    ``layer_fixed_s + batch · (layer_token_s · c + layer_pair_s · c · (p + c))``.
    Decode step, one layer, ``batch`` sequences each adding one token over ``p`` cached:
    ``decode_fixed_s + batch · (decode_seq_s + decode_ctx_s · p)`` — fitted separately
    because one token per sequence is bound by reading the weights, not by arithmetic.
    Embedding: ``embed_token_s`` per token; LM head (final norm + vocabulary matmul):
    ``head_fixed_s + head_token_s`` per token.

    ``decode_batch_s[b - 1]`` and ``head_batch_s[b - 1]``, when measured, replace the linear
    terms for ``b`` sequences (decode at context 0; the context term is still added): on a
    CPU the matrix kernels change with the row count, so a step is far from linear in the
    batch — measured for GPT-2 small at one thread, the head took 12, 25, 38 and then 23 ms for
    1, 2, 3 and 4 rows, and an 8-sequence step 90 ms where the linear fit said 128. Beyond the
    table the last entry grows by the linear per-sequence coefficient.

    ``decode_ctx_points`` ``(batch, context, extra_s)``, when measured, replace
    ``batch · decode_ctx_s · p``: the extra time of a step over its context-0 time, piecewise
    linear in the context for each measured batch (extended past the last point by its last
    slope) and interpolated linearly between batches. Reading the KV cache is cheap while it
    fits the CPU caches and costs ~3.5x more per token past that (GPT-2 small, one thread:
    1.0 µs per cached token at 128 tokens, 3.4 µs at 512), so one slope cannot price both.

    ``item_overhead_s`` is what every stage spends per work item (a prefill chunk or a decode
    step) beyond the in-process profile when it runs in a worker: measured through the real
    runtime (:mod:`.overhead`), since a stage that waits between items and is throttled by its
    quota while computing starts each item with cold caches. Priced like compute (÷ speed).
    """

    layer_fixed_s: float
    layer_token_s: float
    layer_pair_s: float
    decode_fixed_s: float
    decode_seq_s: float
    decode_ctx_s: float
    embed_token_s: float = 0.0
    head_fixed_s: float = 0.0
    head_token_s: float = 0.0
    act_bytes_per_token: int = 0
    decode_batch_s: tuple[float, ...] = ()
    head_batch_s: tuple[float, ...] = ()
    decode_ctx_points: tuple[tuple[int, int, float], ...] = ()
    item_overhead_s: float = 0.0

    def __post_init__(self) -> None:  # JSON gives lists; keep the value hashable
        object.__setattr__(self, "decode_batch_s", tuple(float(x) for x in self.decode_batch_s))
        object.__setattr__(self, "head_batch_s", tuple(float(x) for x in self.head_batch_s))
        points = tuple((int(b), int(p), float(e)) for b, p, e in self.decode_ctx_points)
        object.__setattr__(self, "decode_ctx_points", points)

    def chunk_s(self, c: int, p: int, batch: int = 1) -> float:
        """One layer, a prefill chunk of ``c`` tokens per sequence over ``p`` cached."""
        if c <= 0:
            return 0.0
        return self.layer_fixed_s + batch * (
            self.layer_token_s * c + self.layer_pair_s * c * (p + c)
        )

    def decode_s(self, p: int, batch: int = 1) -> float:
        """One layer, one decode step of ``batch`` sequences at context ``p``."""
        if self.decode_ctx_points:
            context = _context_extra(self.decode_ctx_points, batch, p)
        else:
            context = batch * self.decode_ctx_s * p
        if self.decode_batch_s:
            return _tabled(self.decode_batch_s, batch, self.decode_seq_s) + context
        return self.decode_fixed_s + batch * self.decode_seq_s + context

    def embed_s(self, tokens: int) -> float:
        return self.embed_token_s * tokens

    def head_s(self, tokens: int) -> float:
        if tokens <= 0:
            return 0.0
        if self.head_batch_s:
            return _tabled(self.head_batch_s, tokens, self.head_token_s)
        return self.head_fixed_s + self.head_token_s * tokens


def _tabled(table: tuple[float, ...], n: int, slope: float) -> float:
    """``table[n - 1]``, or past its end the last entry plus ``slope`` per extra row."""
    if n <= len(table):
        return table[n - 1]
    return table[-1] + slope * (n - len(table))


def _along(points: list[tuple[int, float]], x: float) -> float:
    """Piecewise-linear through ``(0, 0)`` and ``points`` (sorted), past the end by the last
    segment's slope (never negative)."""
    xs, ys = [0], [0.0]
    for p, e in points:  # a repeated context (a clamped measurement) keeps its first value
        if p > xs[-1]:
            xs.append(p)
            ys.append(e)
    for i in range(1, len(xs)):
        if x <= xs[i] or i == len(xs) - 1:
            slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
            if x > xs[i]:
                slope = max(slope, 0.0)
            return max(0.0, ys[i - 1] + slope * (x - xs[i - 1]))
    return 0.0


def _context_extra(points: tuple[tuple[int, int, float], ...], batch: int, p: int) -> float:
    """A decode step's time over its context-0 time at ``p`` cached tokens (see
    :class:`LlmCosts`): along the context for each measured batch, then across batches
    (proportional to the batch outside the measured ones)."""
    if p <= 0:
        return 0.0
    by_batch: dict[int, list[tuple[int, float]]] = {}
    for b, ctx, extra in sorted(points):
        by_batch.setdefault(b, []).append((ctx, extra))
    batches = sorted(by_batch)
    at = {b: _along(by_batch[b], p) for b in batches}
    if batch <= batches[0]:
        return at[batches[0]] * batch / batches[0]
    if batch >= batches[-1]:
        return at[batches[-1]] * batch / batches[-1]
    if batch in at:
        return at[batch]
    hi = next(b for b in batches if b > batch)
    lo = max(b for b in batches if b < batch)
    w = (batch - lo) / (hi - lo)
    return at[lo] * (1 - w) + at[hi] * w


@dataclass(frozen=True, slots=True)
class LinkCost:
    """A link between consecutive stages: ``latency_s + bytes / bandwidth_Bps``."""

    latency_s: float = 0.0
    bandwidth_Bps: float = math.inf

    def time_s(self, nbytes: float) -> float:
        return self.latency_s + (nbytes / self.bandwidth_Bps if nbytes > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class MemoryModel:
    """Bytes a stage holds: weights of its layers (+ embedding on the first, final norm + head
    on the last) and a KV cache of ``kv_bytes_per_token_layer`` per token per layer for
    ``context × batch`` tokens. Activations are transient and not counted.

    ``shared_bytes`` is what the embedding and the head have in common (a tied matrix): a
    stage holding both holds it once; split apart, each end keeps a copy.
    """

    layer_bytes: int
    kv_bytes_per_token_layer: int
    embed_bytes: int
    head_bytes: int
    shared_bytes: int = 0

    @classmethod
    def of(cls, parts: DecoderParts) -> MemoryModel:
        return cls(
            layer_bytes=parts.layer_param_bytes,
            kv_bytes_per_token_layer=parts.kv_bytes_per_token_layer,
            embed_bytes=parts.embed_param_bytes,
            head_bytes=parts.head_param_bytes,
            shared_bytes=parts.embed.weight.numel() * parts.bytes_per_param
            if parts.tied_head
            else 0,
        )

    def per_layer_bytes(self, context: int, batch: int = 1) -> int:
        """Weights plus KV cache of one layer at ``context`` tokens × ``batch`` sequences."""
        return self.layer_bytes + self.kv_bytes_per_token_layer * context * batch

    def stage_bytes(
        self, n_layers: int, first: bool, last: bool, context: int, batch: int = 1
    ) -> int:
        extra = (self.embed_bytes if first else 0) + (self.head_bytes if last else 0)
        extra -= self.shared_bytes if first and last else 0
        return n_layers * self.per_layer_bytes(context, batch) + extra


def stage_item_s(
    costs: LlmCosts, layers: int, *, first: bool, last: bool, tokens: int, cached: int,
    batch: int = 1, prefill: bool = True, head: bool = True,
) -> float:  # fmt: skip
    """Reference seconds of one work item on one stage: ``layers`` decoder layers on ``tokens``
    new tokens per sequence over ``cached`` (a prefill chunk; a decode step when ``prefill`` is
    False), the embedding on the first stage, the head on the last when the item makes a token
    (``head``), and the runtime's per-item overhead. Every price of a stage's item is this."""
    per_layer = costs.chunk_s(tokens, cached, batch) if prefill else costs.decode_s(cached, batch)
    t = layers * per_layer + costs.item_overhead_s
    t += costs.embed_s(tokens * batch) if first else 0.0
    t += costs.head_s(batch) if last and head else 0.0
    return t


def _check(layer_counts: Sequence[int], speeds: Sequence[float], links: Sequence[LinkCost] | None):
    if len(layer_counts) != len(speeds) or not layer_counts:
        raise ValueError("one speed per stage is needed (and at least one stage)")
    if any(v <= 0 for v in speeds):
        raise ValueError(f"device speeds must be positive, got {list(speeds)}")
    if links is not None and len(links) != len(layer_counts) - 1:
        raise ValueError(f"{len(layer_counts)} stages need {len(layer_counts) - 1} links")


def chunk_resource_times(
    c: int,
    p: int,
    final: bool,
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None = None,
    batch: int = 1,
) -> list[float]:
    """Times of one prefill chunk (``c`` tokens over ``p`` cached) on each resource: stage,
    link, stage, ... The embedding runs on the first stage; the head runs on the last stage
    for the final chunk only, on its last token (all prefill needs to start decoding)."""
    _check(layer_counts, speeds, links)
    times: list[float] = []
    last = len(layer_counts) - 1
    for s, (n, v) in enumerate(zip(layer_counts, speeds, strict=True)):
        t = stage_item_s(
            costs, n, first=s == 0, last=s == last, tokens=c, cached=p, batch=batch, head=final
        )
        times.append(t / v)
        if s < last:
            link = links[s] if links is not None else LinkCost()
            times.append(link.time_s(c * batch * costs.act_bytes_per_token))
    return times


def prefill_makespan(
    chunk_sizes: Sequence[int],
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None = None,
    *,
    batch: int = 1,
) -> float:
    """Seconds from the first chunk entering stage 0 to the last chunk leaving the last stage.

    Chunk ``k`` on resource ``j`` starts when chunk ``k`` left resource ``j − 1`` and chunk
    ``k − 1`` left resource ``j`` (a flow shop in chunk order):
    ``F[k][j] = max(F[k][j−1], F[k−1][j]) + T[k][j]``.
    """
    finish: list[float] = []
    p = 0
    for k, c in enumerate(chunk_sizes):
        times = chunk_resource_times(
            c, p, k == len(chunk_sizes) - 1, layer_counts, speeds, costs, links, batch
        )
        finish = advance(finish, times)
        p += c
    return finish[-1] if finish else 0.0


def advance(finish: Sequence[float], times: Sequence[float]) -> list[float]:
    """The flow-shop step: finish times per resource after one more chunk of ``times``."""
    out: list[float] = []
    prev = 0.0
    for j, t in enumerate(times):
        prev = max(prev, finish[j] if finish else 0.0) + t
        out.append(prev)
    return out


def decode_resource_times(
    context: int,
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None = None,
    batch: int = 1,
) -> list[float]:
    """One decode step of a micro-batch of ``batch`` sequences at ``context`` on each resource."""
    _check(layer_counts, speeds, links)
    times: list[float] = []
    last = len(layer_counts) - 1
    for s, (n, v) in enumerate(zip(layer_counts, speeds, strict=True)):
        t = stage_item_s(
            costs, n, first=s == 0, last=s == last, tokens=1, cached=context, batch=batch,
            prefill=False,
        )  # fmt: skip
        times.append(t / v)
        if s < last:
            link = links[s] if links is not None else LinkCost()
            times.append(link.time_s(batch * costs.act_bytes_per_token))
    return times


def decode_tokens_per_s(
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    links: Sequence[LinkCost] | None = None,
    *,
    context: int,
    sequences: int = 1,
    microbatches: int | None = None,
    back_link: LinkCost | None = None,
) -> float:
    """Generated tokens per second of ``sequences`` sequences decoding together at ``context``.

    The sequences form ``microbatches`` groups (default: one per stage, at most one per
    sequence) that take turns: a group's next token needs its previous one to have left the
    last stage, so each round every group goes once around the pipeline. The round takes the
    longer of one group's trip (the sum of its resource times) and the busiest resource's
    work for all groups; ``sequences`` tokens come out per round. With one sequence this is
    ``1 / (sum of all stage and link times)``: decode of one sequence gets no pipelining.
    ``back_link`` is the link that carries each new token (8 bytes per sequence) from the last
    stage back to the first; it adds to the trip and is a resource of its own.
    """
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1, got {sequences}")
    m = min(sequences, microbatches or len(layer_counts))
    sizes = [sequences // m + (1 if i < sequences % m else 0) for i in range(m)]
    per_group = [
        decode_resource_times(context, layer_counts, speeds, costs, links, b)
        + ([back_link.time_s(8 * b)] if back_link is not None else [])
        for b in sizes
    ]
    trip = max(sum(t) for t in per_group)
    busiest = max(sum(col) for col in zip(*per_group, strict=True))
    return sequences / max(trip, busiest)
