"""Measure the cost coefficients of :class:`coinfer.llm.cost.LlmCosts` on this machine.

Why measure rather than count FLOPs: on CPUs the fixed per-call part (weights streamed from
memory, thread start-up) dominates decode and small chunks, and the attention part depends on
the kernel; a handful of timings of one real decoder layer, fitted to the model's three terms,
price both regimes. Every timing is the median of a few repeats after a warm-up; the fit is
non-negative least squares on relative error (each sample weighted by ``1 / t``), so small,
fast calls count as much as big ones. Devices of other speeds scale these by ``1 / speed``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls

from .cost import LlmCosts
from .decoder import DecoderParts
from .stage import DecoderStage, KVCache, causal_mask

# (new tokens c, cached tokens p) for prefill; (batch, cached tokens) for decode; chosen to
# span the regimes the fit must separate while keeping the whole profile to a few seconds.
PREFILL_POINTS = ((8, 0), (32, 0), (128, 0), (8, 256), (32, 256), (64, 512))
DECODE_POINTS = ((1, 0), (1, 512), (4, 0), (4, 512))
HEAD_TOKENS = (1, 32)


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
    parts: DecoderParts, *, repeats: int = 3, sweeps: int = 2, seed: int = 0
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

    calls = [layer_call(1, c, p) for c, p in PREFILL_POINTS]
    calls += [layer_call(b, 1, p) for b, p in DECODE_POINTS]
    # Two sweeps, the lower median of each point: a sweep disturbed by another process on a
    # shared core (or a cold thread pool) does not bend the fit.
    per_layer = len(layers)
    sweeps = [[_median_time(call, repeats) / per_layer for call in calls] for _ in range(sweeps)]
    best = [min(ts) for ts in zip(*sweeps, strict=True)]
    prefill = [(c, p, t) for (c, p), t in zip(PREFILL_POINTS, best, strict=False)]
    decode = [
        (b, p, t) for (b, p), t in zip(DECODE_POINTS, best[len(PREFILL_POINTS) :], strict=True)
    ]
    pf, pf_err = _fit([(1.0, c, c * (p + c)) for c, p, _ in prefill], [t for *_, t in prefill])
    dc, dc_err = _fit([(1.0, b, b * p) for b, p, _ in decode], [t for *_, t in decode])

    ids = torch.randint(0, parts.vocab, (1, 128), generator=gen)
    embed_s = _median_time(lambda: parts.embed(ids), repeats) / 128
    head = []
    for n in HEAD_TOKENS:
        h = torch.randn(1, n, parts.hidden, generator=gen, dtype=dtype)
        head.append((n, _median_time(lambda h=h: parts.lm_head(parts.final_norm(h)), repeats)))
    hd, hd_err = _fit([(1.0, n) for n, _ in head], [t for _, t in head])
    costs = LlmCosts(
        layer_fixed_s=float(pf[0]),
        layer_token_s=float(pf[1]),
        layer_pair_s=float(pf[2]),
        decode_fixed_s=float(dc[0]),
        decode_seq_s=float(dc[1]),
        decode_ctx_s=float(dc[2]),
        embed_token_s=embed_s,
        head_fixed_s=float(hd[0]),
        head_token_s=float(hd[1]),
        act_bytes_per_token=parts.act_bytes_per_token,
    )
    return CostProfile(
        costs=costs,
        prefill_samples=tuple(prefill),
        decode_samples=tuple(decode),
        max_rel_error=max(pf_err, dc_err, hd_err),
        seconds=time.perf_counter() - start,
    )
