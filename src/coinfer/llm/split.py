"""Layer-to-device splits of a decoder-only LM over an ordered list of devices.

Why three: ``capability_split`` is the PipeLLM idea done exactly — consecutive layers go to
devices so that the slowest pipeline stage (or link) is as fast as possible, under each
device's memory for weights plus the KV cache of the requested context × batch.
``memory_split`` (layers in proportion to memory, what exo and llama.cpp RPC do) and
``even_split`` are the baselines it is measured against; all three price their result with the
same :class:`StageWork`, so their bottlenecks compare directly.

The exact split is a dynamic programme over (layers placed, last device used): a device may
get no layers (it is skipped and the link runs from the previous used device to the next),
so it also decides *which* devices are worth using. With ``order="best"`` and at most
:data:`MAX_ORDERED` devices, every device order is tried too (which device holds the
embedding and the head, and which links the activations cross, depend on it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from .cost import LlmCosts, MemoryModel

MAX_ORDERED = 6
GIB = 1024**3


@dataclass(frozen=True, slots=True)
class LlmDevice:
    """A device as the split sees it: ``speed`` relative to the machine the costs were
    measured on (2.0 = twice as fast) and the bytes of memory it can give the model."""

    name: str
    speed: float
    mem_bytes: int


@dataclass(frozen=True, slots=True)
class StageWork:
    """Reference-machine seconds of one pipeline step: per layer, plus the embedding on the
    first stage and the head on the last, plus ``item_s`` on every stage (the runtime's
    per-item overhead, :attr:`LlmCosts.item_overhead_s`)."""

    layer_s: float
    first_s: float = 0.0
    last_s: float = 0.0
    item_s: float = 0.0

    @classmethod
    def decode(cls, costs: LlmCosts, context: int, batch: int = 1) -> StageWork:
        """One decode step of ``batch`` sequences at ``context`` tokens."""
        return cls(
            costs.decode_s(context, batch), costs.embed_s(batch), costs.head_s(batch),
            costs.item_overhead_s,
        )  # fmt: skip

    @classmethod
    def prefill(cls, costs: LlmCosts, tokens: int, batch: int = 1) -> StageWork:
        """A whole prompt of ``tokens`` tokens as one chunk."""
        return cls(
            costs.chunk_s(tokens, 0, batch), costs.embed_s(tokens * batch), costs.head_s(batch),
            costs.item_overhead_s,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LayerSplit:
    """Devices used (pipeline order), their layer counts, stage times, link times between
    consecutive stages, and bytes per stage."""

    method: str
    devices: tuple[str, ...]
    layer_counts: tuple[int, ...]
    stage_times_s: tuple[float, ...]
    link_times_s: tuple[float, ...]
    stage_bytes: tuple[int, ...]

    @property
    def bottleneck_s(self) -> float:
        """The steady-state period of the pipeline: its slowest stage or link."""
        return max((*self.stage_times_s, *self.link_times_s))


Links = Mapping[tuple[str, str], float] | None


def _link(links: Links, a: str, b: str) -> float:
    if links is None:
        return 0.0
    return links.get((a, b), math.inf)


def _stage(
    n: int, first: bool, last: bool, dev: LlmDevice, mem: MemoryModel, work: StageWork,
    context: int, batch: int,
) -> tuple[float, int]:  # fmt: skip
    t = n * work.layer_s + (work.first_s if first else 0.0) + (work.last_s if last else 0.0)
    t += work.item_s
    return t / dev.speed, mem.stage_bytes(n, first, last, context, batch)


def evaluate_split(
    method: str, devices: Sequence[LlmDevice], counts: Sequence[int], mem: MemoryModel,
    work: StageWork, *, context: int, batch: int = 1, links: Links = None,
) -> LayerSplit:  # fmt: skip
    """Price ``counts[i]`` layers on ``devices[i]`` (zero counts drop the device); raise
    :class:`InputError` naming the first device whose stage does not fit its memory."""
    used = [(d, n) for d, n in zip(devices, counts, strict=True) if n > 0]
    times, sizes = [], []
    for i, (dev, n) in enumerate(used):
        t, b = _stage(n, i == 0, i == len(used) - 1, dev, mem, work, context, batch)
        if b > dev.mem_bytes:
            raise InputError(
                f"{method} split: device {dev.name} gets {n} layers needing {b / GIB:.3f} GiB "
                f"(context {context} × batch {batch}) but has {dev.mem_bytes / GIB:.3f} GiB: "
                f"short by {(b - dev.mem_bytes) / GIB:.3f} GiB"
            )
        times.append(t)
        sizes.append(b)
    names = tuple(d.name for d, _ in used)
    link_times = tuple(_link(links, a, b) for a, b in itertools.pairwise(names))
    return LayerSplit(
        method, names, tuple(n for _, n in used), tuple(times), link_times, tuple(sizes)
    )


def _check_total(
    n_layers: int, devices: Sequence[LlmDevice], mem: MemoryModel, context: int, batch: int
) -> None:
    if n_layers < 1 or not devices:
        raise InputError("a split needs at least one layer and one device")
    need = mem.stage_bytes(n_layers, True, True, context, batch)
    have = sum(d.mem_bytes for d in devices)
    if need > have:
        weights = mem.stage_bytes(n_layers, True, True, 0)
        raise InputError(
            f"the model needs {need / GIB:.3f} GiB (weights {weights / GIB:.3f} GiB + KV cache "
            f"{(need - weights) / GIB:.3f} GiB for context {context} × batch {batch}) but the "
            f"{len(devices)} devices have {have / GIB:.3f} GiB together: short by "
            f"{(need - have) / GIB:.3f} GiB"
        )


def even_split(
    n_layers: int, devices: Sequence[LlmDevice], mem: MemoryModel, work: StageWork, *,
    context: int, batch: int = 1, links: Links = None,
) -> LayerSplit:  # fmt: skip
    """The same number of layers on every device (the first ones get the remainder)."""
    _check_total(n_layers, devices, mem, context, batch)
    k = len(devices)
    counts = [n_layers // k + (1 if i < n_layers % k else 0) for i in range(k)]
    return evaluate_split(
        "even", devices, counts, mem, work, context=context, batch=batch, links=links
    )


def memory_split(
    n_layers: int, devices: Sequence[LlmDevice], mem: MemoryModel, work: StageWork, *,
    context: int, batch: int = 1, links: Links = None,
) -> LayerSplit:  # fmt: skip
    """Layers in proportion to each device's memory (largest remainders round), as exo and
    llama.cpp RPC split; speed is ignored."""
    _check_total(n_layers, devices, mem, context, batch)
    total = sum(d.mem_bytes for d in devices)
    shares = [n_layers * d.mem_bytes / total for d in devices]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(devices)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: n_layers - sum(counts)]:
        counts[i] += 1
    return evaluate_split(
        "memory", devices, counts, mem, work, context=context, batch=batch, links=links
    )


def capability_split(
    n_layers: int, devices: Sequence[LlmDevice], mem: MemoryModel, work: StageWork, *,
    context: int, batch: int = 1, links: Links = None,
    order: Literal["given", "best"] = "given",
) -> LayerSplit:  # fmt: skip
    """The contiguous split with the least bottleneck (slowest stage or link), each stage
    within its device's memory; ties go to the least total stage time. ``order="best"`` also
    tries every order of the devices (at most :data:`MAX_ORDERED` of them)."""
    _check_total(n_layers, devices, mem, context, batch)
    if order == "best" and len(devices) > MAX_ORDERED:
        raise InputError(
            f"order='best' tries every order of at most {MAX_ORDERED} devices, got {len(devices)}"
        )
    orders = list(itertools.permutations(devices)) if order == "best" else [tuple(devices)]
    # Phase 1: the least bottleneck of each order; the best so far caps (prunes) the next.
    necks: list[tuple[float, int]] = []
    cap = math.inf
    for o, devs in enumerate(orders):
        found = _dp(n_layers, devs, mem, work, context, batch, links, cap, totals=False)
        if found is not None:
            necks.append((found[0], o))
            cap = min(cap, found[0] * (1 + 1e-12))
    if not necks:
        via = " and links" if links is not None else ""
        raise InputError(
            f"no contiguous split of {n_layers} layers fits the devices' memory{via} at context "
            f"{context} × batch {batch} (one layer needs {mem.per_layer_bytes(context, batch) / GIB:.3f} GiB, "
            f"the embedding {mem.embed_bytes / GIB:.3f} GiB, the head {mem.head_bytes / GIB:.3f} GiB)"
        )
    # Phase 2: among the orders that reach it, the least total time within that bottleneck.
    best: tuple[float, list[int], Sequence[LlmDevice]] | None = None
    for neck, o in necks:
        if neck <= cap:
            found = _dp(n_layers, orders[o], mem, work, context, batch, links, cap, totals=True)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], found[1], orders[o])
    assert best is not None  # the order that set ``cap`` fits within it
    _, counts, devs = best
    return evaluate_split(
        "capability", devs, counts, mem, work, context=context, batch=batch, links=links
    )


def _dp(
    n_layers: int, devs: Sequence[LlmDevice], mem: MemoryModel, work: StageWork,
    context: int, batch: int, links: Links, cap: float, *, totals: bool,
) -> tuple[float, list[int]] | None:  # fmt: skip
    """``dp[(i, u)]`` = best score with layers ``[0, i)`` placed and device ``u`` the last
    used; the stage of the next used device ``v > u`` takes ``[i, j)``. Every stage and link
    must stay within ``cap``. The score is the bottleneck (``totals=False``) or the sum of
    stage and link times (``totals=True``); both decompose over the stages, so the DP is
    exact for either."""
    dp: dict[tuple[int, int], tuple[float, tuple[int, int] | None, int]] = {}
    for i in range(n_layers):  # i = layers placed so far; 0 means "no device used yet"
        if i == 0:
            starts: list[tuple[int | None, float]] = [(None, 0.0)]
        else:
            starts = [(u, dp[(i, u)][0]) for u in range(len(devs)) if (i, u) in dp]
        for u, score in starts:
            for v in range(0 if u is None else u + 1, len(devs)):
                link = 0.0 if u is None else _link(links, devs[u].name, devs[v].name)
                if link > cap:
                    continue
                for j in range(i + 1, n_layers + 1):
                    t, b = _stage(j - i, i == 0, j == n_layers, devs[v], mem, work, context, batch)
                    if t > cap:
                        break  # more layers only take longer
                    if b > devs[v].mem_bytes:
                        if j < n_layers:
                            break  # more layers only need more memory (as a non-last stage)
                        continue
                    cand = score + t + link if totals else max(score, link, t)
                    if cand < dp.get((j, v), (math.inf, None, 0))[0]:
                        dp[(j, v)] = (cand, None if u is None else (i, u), j - i)
    ends = [(dp[(n_layers, v)][0], v) for v in range(len(devs)) if (n_layers, v) in dp]
    if not ends:
        return None
    score, v = min(ends)
    counts = [0] * len(devs)
    key: tuple[int, int] | None = (n_layers, v)
    while key is not None:
        _, prev, n = dp[key]
        counts[key[1]] = n
        key = prev
    return score, counts
