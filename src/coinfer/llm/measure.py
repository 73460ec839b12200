"""Measure the cost coefficients of :class:`coinfer.llm.cost.LlmCosts` on this machine.

Why measure rather than count FLOPs: on CPUs the fixed per-call part (weights streamed from
memory, thread start-up) dominates decode and small chunks, and the attention part depends on
the kernel; a handful of timings of one real decoder layer, fitted to the model's three terms,
price both regimes. Every timing is the median of a few repeats after a warm-up; the fit is
non-negative least squares on relative error (each sample weighted by ``1 / t``), so small,
fast calls count as much as big ones. Decode steps and the head are tabled per batch instead
(1..:data:`TABLE_BATCH` sequences): their kernels change with the row count. Devices of other
speeds scale all of these by ``1 / speed``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy.optimize import nnls

from .cost import LlmCosts
from .decoder import DecoderParts
from .stage import DecoderStage, KVCache, causal_mask

# (new tokens c, cached tokens p) for prefill; (batch, cached tokens) for decode; chosen to
# span the regimes the fit must separate while keeping the whole profile to a few seconds.
PREFILL_POINTS = ((8, 0), (32, 0), (128, 0), (8, 256), (32, 256), (64, 512))
# Decode and head are also timed at every batch 1..TABLE_BATCH (the per-batch tables of
# LlmCosts): the kernels change with the row count, so these are far from linear in the batch.
TABLE_BATCH = 8
# The context term is timed at two contexts for a few batches (see LlmCosts.decode_ctx_points).
CONTEXT_BATCHES, CONTEXTS = (1, 2, 4, 8), (128, 512)
DECODE_POINTS = (
    *((b, 0) for b in range(1, TABLE_BATCH + 1)),
    *((b, p) for b in CONTEXT_BATCHES for p in CONTEXTS),
)
HEAD_TOKENS = (*range(1, TABLE_BATCH + 1), 32)


@dataclass(frozen=True, slots=True)
class CostProfile:
    """Fitted coefficients, the samples they came from and the fit's worst relative error."""

    costs: LlmCosts
    prefill_samples: tuple[tuple[int, int, float], ...]
    decode_samples: tuple[tuple[int, int, float], ...]
    max_rel_error: float
    seconds: float


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool, lazy kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fit(rows: Sequence[Sequence[float]], t: Sequence[float]) -> tuple[np.ndarray, float]:
    a = np.asarray(rows, dtype=float)
    y = np.asarray(t, dtype=float)
    w = 1.0 / y
    coef, _ = nnls(a * w[:, None], y * w)
    err = float(np.max(np.abs(a @ coef - y) / y))
    return coef, err


@torch.no_grad()
def profile_layer_costs(
    parts: DecoderParts, *, repeats: int = 3, sweeps: int = 3, seed: int = 0
) -> CostProfile:
    """Time a decoder layer (prefill chunks, decode steps), the embedding and the head of
    ``parts`` on this machine, and fit :class:`LlmCosts` to the timings.

    Each timing runs *every* layer once, in order, and takes the mean per layer: a real step
    streams all the layers' weights through the CPU caches, while timing one layer again and
    again keeps its weights cache-resident — measured on GPT-2 small, a decode step priced from
    one repeated layer came out 27 % short of the step itself (26.6 vs 36.2 ms)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    layers = range(parts.n_layers)
    stage = DecoderStage(parts, 0, parts.n_layers)
    dtype = parts.embed.weight.dtype

    def layer_call(batch: int, c: int, p: int) -> Callable[[], object]:
        h = torch.randn(batch, c, parts.hidden, generator=gen, dtype=dtype)
        kv = (batch, parts.n_kv_heads, p, parts.head_dim)
        k, v = (
            torch.randn(kv, generator=gen, dtype=dtype),
            torch.randn(kv, generator=gen, dtype=dtype),
        )
        pos = torch.arange(p, p + c)[None]
        mask = causal_mask(p, c, parts.attn_impl, dtype)
        rope = parts.rotary(h, position_ids=pos) if parts.rotary is not None else None

        def call() -> object:
            cache = KVCache()
            for idx in layers:
                if p:
                    cache.layers[idx] = (k, v)
                stage.run_layer(idx, h, pos, mask, rope, cache)
            return cache

        return call

    # Decode is timed the way a generation runs it: consecutive steps through the whole stage,
    # the cache growing by concatenation, from a cache filled by a real prefill (one sequence's,
    # repeated over the batch). Restoring a fixed cache before every step instead — a fresh
    # allocation of the whole cache per layer per step — measured GPT-2 small at 8 sequences
    # over 512 tokens at 210 ms a step where a generation takes 115.
    # a model with few learned positions is timed at the longest context it can take
    limit = parts.max_positions
    points = list(
        dict.fromkeys(
            (b, p if limit is None else min(p, limit - repeats - 2)) for b, p in DECODE_POINTS
        )
    )
    contexts = sorted({max(p, 1) for _, p in points})
    filled = {}
    for p in contexts:
        stage.reset()
        stage.forward(torch.randint(0, parts.vocab, (1, p), generator=gen), head=False)
        filled[p] = dict(stage.caches[0].layers)
    stage.reset()

    def decode_call(batch: int, p: int) -> Callable[[], float]:
        tok = torch.randint(0, parts.vocab, (batch, 1), generator=gen)

        def call() -> float:
            cache = stage.caches.setdefault("decode", KVCache())
            cache.layers = {
                i: (k.repeat(batch, 1, 1, 1), v.repeat(batch, 1, 1, 1))
                for i, (k, v) in filled[max(p, 1)].items()
            }
            stage.forward(tok, seq="decode", head=False)  # warm-up step
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                stage.forward(tok, seq="decode", head=False)
                times.append(time.perf_counter() - t0)
            stage.reset("decode")
            return statistics.median(times)

        return call

    calls = [partial(_median_time, layer_call(1, c, p), repeats) for c, p in PREFILL_POINTS]
    calls += [decode_call(b, p) for b, p in points]
    # Several sweeps, the median of each point: the runtime meets the host in its typical
    # state, not its best (taking the lowest of two sweeps priced 8 sequences' decode on d0 at
    # 47.7 tokens/s where five generations measured 38-47), and one sweep disturbed by another
    # process on a shared core does not bend the fit.
    per_layer = len(layers)
    sweeps = [[call() / per_layer for call in calls] for _ in range(sweeps)]
    best = [statistics.median(ts) for ts in zip(*sweeps, strict=True)]
    prefill = [(c, p, t) for (c, p), t in zip(PREFILL_POINTS, best, strict=False)]
    decode = [(b, p, t) for (b, p), t in zip(points, best[len(PREFILL_POINTS) :], strict=True)]
    pf, pf_err = _fit([(1.0, c, c * (p + c)) for c, p, _ in prefill], [t for *_, t in prefill])
    # Decode: the table holds each batch at context 0, the context points what a context adds
    # (never below 0: noise), the mean slope over them the linear fallback; the linear fit of
    # the table only extends it past TABLE_BATCH.
    at0 = {b: t for b, p, t in decode if p == 0}
    ctx_points = tuple((b, p, max(0.0, t - at0[b])) for b, p, t in decode if p > 0)
    ctx_s = statistics.mean(e / (b * p) for b, p, e in ctx_points)
    decode_table = tuple(at0[b] for b in range(1, TABLE_BATCH + 1))
    dc, _ = _fit([(1.0, b) for b in at0], list(at0.values()))

    ids = torch.randint(0, parts.vocab, (1, 128), generator=gen)
    embed_s = _median_time(lambda: parts.embed(ids), repeats) / 128
    head = []
    for n in HEAD_TOKENS:  # n sequences' last token each, the shape decode gives the head
        h = torch.randn(n, 1, parts.hidden, generator=gen, dtype=dtype)
        head.append((n, _median_time(lambda h=h: parts.lm_head(parts.final_norm(h)), repeats)))
    hd, _ = _fit([(1.0, n) for n, _ in head], [t for _, t in head])
    head_table = tuple(t for n, t in head if n <= TABLE_BATCH)
    costs = LlmCosts(
        layer_fixed_s=float(pf[0]),
        layer_token_s=float(pf[1]),
        layer_pair_s=float(pf[2]),
        decode_fixed_s=float(dc[0]),
        decode_seq_s=float(dc[1]),
        decode_ctx_s=ctx_s,
        embed_token_s=embed_s,
        head_fixed_s=float(hd[0]),
        head_token_s=float(hd[1]),
        act_bytes_per_token=parts.act_bytes_per_token,
        decode_batch_s=decode_table,
        head_batch_s=head_table,
        decode_ctx_points=ctx_points,
    )
    dc_err = max(abs(costs.decode_s(p, b) - t) / t for b, p, t in decode)
    hd_err = max(abs(costs.head_s(n) - t) / t for n, t in head)
    return CostProfile(
        costs=costs,
        prefill_samples=tuple(prefill),
        decode_samples=tuple(decode),
        max_rel_error=max(pf_err, dc_err, hd_err),
        seconds=time.perf_counter() - start,
    )
