"""Pieces: the DAG cut into an ordered list whose boundaries are the legal cut points.

This is PICO's graph partition in its simplest exact form: fix one topological order of the
nodes; a *piece* is a run of consecutive nodes; a cut after piece ``p`` carries every tensor
produced at or before ``p`` (model inputs included) and consumed after ``p``, each counted once.
Inception branches, residual adds and U-Net skips are all handled by that rule — a cut inside
a block simply carries several tensors, and its byte count says so.

Default granularity ("layer-like"): every node starts a new piece except

* view-like nodes (reshape, flatten, getitem, size, dropout, ...; ``VIEW_KINDS``) and nodes
  whose result is not a tensor (size arithmetic, tuples), which join the current piece, and
* single-input element-wise nodes (batch norm, ReLU, GELU, ...; ``FUSABLE_KINDS``) whose inputs
  all come from the current piece, which fuse into it (conv + BN + ReLU is one piece: a cut
  between them would carry the same bytes);

then any boundary crossed by a non-tensor value that cannot be baked into the next stage (a
tuple of tensors, an object) is removed by merging its two pieces. Small constants such as sizes
are baked into the consuming stage instead (shapes are specialised at capture).

``max_pieces`` merging is described in :func:`choose_boundaries`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ._captured import CONST, OTHER, OUTPUT, TENSOR, Captured
from ._costs import FUSABLE_KINDS, VIEW_KINDS
from .types import PieceInfo, TensorMeta

# Balance factor of max-pieces merging: no merged piece may exceed this many times the
# average FLOPs per piece (unless one default piece alone is larger). 2 is the smallest factor
# for which a partition into at most N pieces always exists (greedy packing argument).
BALANCE_FACTOR = 2.0


def base_groups(c: Captured) -> list[tuple[str, ...]]:
    """The default (finest legal) pieces as groups of node names, in topological order."""
    groups: list[list[str]] = []
    for name in c.order:
        node = c.nodes[name]
        if groups and (
            node.op in VIEW_KINDS
            or c.values[name].category != TENSOR  # size arithmetic, tuples: no tensor out
            or (node.op in FUSABLE_KINDS and all(i in groups[-1] for i in node.inputs))
        ):
            groups[-1].append(name)
        else:
            groups.append([name])
    if not groups:
        return []
    # Remove boundaries that a non-bakeable, non-tensor value would have to cross.
    group_of = _group_index(groups)
    illegal = [False] * len(groups)
    for value in (*c.input_names, *c.order):
        if c.values[value].category != OTHER:
            continue
        first = group_of.get(value, -1)
        last = _last_use(c, value, group_of, len(groups))
        for p in range(max(first, 0), min(last, len(groups) - 1)):
            illegal[p] = True
    merged: list[list[str]] = [groups[0]]
    for p in range(1, len(groups)):
        if illegal[p - 1]:
            merged[-1].extend(groups[p])
        else:
            merged.append(groups[p])
    return [tuple(g) for g in merged]


def choose_boundaries(c: Captured, max_pieces: int | None) -> list[tuple[str, ...]]:
    """Groups of node names after merging the default pieces down to at most ``max_pieces``.

    Algorithm: keep exactly ``N - 1`` of the ``P - 1`` default boundaries, minimising the
    **sum of bytes of the kept boundaries** subject to a balance constraint: no merged piece
    may hold more than ``cap = max(largest default piece, BALANCE_FACTOR × total / N)`` FLOPs.
    The constraint matters: the cheapest boundaries alone cluster where activations are small
    (VGG's classifier), leaving one piece with most of the compute that no planner can
    balance. Exact dynamic programme over (pieces used, prefix length); the window of feasible
    predecessors only moves forward, so a monotone deque gives ``O(N · P)`` time and memory.
    Ties go to the earliest boundary, so the result is deterministic.
    """
    groups = base_groups(c)
    n = len(groups)
    if max_pieces is None or max_pieces >= n or n == 0:
        return groups
    if max_pieces < 1:
        raise ValueError(f"max_pieces must be >= 1, got {max_pieces}")
    flops = [sum(c.nodes[name].flops for name in g) for g in groups]
    cut_bytes = _boundary_bytes(c, groups)
    keep = merge_boundaries(flops, cut_bytes, max_pieces)
    merged: list[tuple[str, ...]] = []
    start = 0
    for end in [*keep, n - 1]:
        merged.append(tuple(name for g in groups[start : end + 1] for name in g))
        start = end + 1
    return merged


def merge_boundaries(flops: Sequence[int], cut_bytes: Sequence[int], max_pieces: int) -> list[int]:
    """Indices ``p`` of the kept boundaries (cut after piece ``p``), ascending.

    Parameters
    ----------
    flops : sequence of int
        FLOPs of each of the ``P`` default pieces.
    cut_bytes : sequence of int
        Bytes of the ``P - 1`` boundaries (``cut_bytes[p]`` = cut after piece ``p``).
    max_pieces : int
        ``N``; exactly ``min(N, P) - 1`` boundaries are kept.

    See :func:`choose_boundaries` for the objective and constraint.
    """
    n = len(flops)
    k_target = min(max_pieces, n)
    if k_target >= n:
        return list(range(n - 1))
    if k_target <= 1:
        return []
    total = sum(flops)
    cap = max(max(flops), math.ceil(BALANCE_FACTOR * total / k_target))
    prefix = [0]
    for f in flops:
        prefix.append(prefix[-1] + f)
    inf = math.inf
    # best[i]: min kept-bytes for splitting pieces [0, i) into k pieces; parent[k][i]: the j.
    best = [0.0] + [inf] * n
    parents: list[list[int]] = []
    for _ in range(k_target):
        # g[j] = best_{k-1}[j] + cost of the boundary before piece j (none when j == 0).
        g = [best[j] + (cut_bytes[j - 1] if j > 0 else 0) for j in range(n)]
        new = [inf] * (n + 1)
        parent = [-1] * (n + 1)
        window: deque[int] = deque()
        lo = 0
        nxt = 0  # next j to push
        for i in range(1, n + 1):
            while nxt <= i - 1:
                while window and g[window[-1]] > g[nxt]:
                    window.pop()
                window.append(nxt)
                nxt += 1
            while prefix[i] - prefix[lo] > cap:
                lo += 1
            while window and window[0] < lo:
                window.popleft()
            if window and g[window[0]] < inf:
                new[i] = g[window[0]]
                parent[i] = window[0]
        best = new
        parents.append(parent)
    if best[n] == inf:  # cannot happen for cap >= 2 × average; keep the plain fallback anyway
        order = sorted(range(n - 1), key=lambda p: (cut_bytes[p], p))
        return sorted(order[: k_target - 1])
    kept: list[int] = []
    i = n
    for k in range(k_target, 0, -1):
        j = parents[k - 1][i]
        if j > 0:
            kept.append(j - 1)
        i = j
    return sorted(kept)


def build_pieces(c: Captured, groups: Sequence[tuple[str, ...]]) -> tuple[PieceInfo, ...]:
    """Cost each group: FLOPs, parameter/buffer bytes, cut tensors and bytes, memory."""
    n = len(groups)
    group_of = _group_index(groups)
    crossing = _crossing(c, groups, group_of)
    outputs = tuple(_meta(c, name) for name in c.output_names)
    position = {name: i for i, name in enumerate(c.order)}
    pieces = []
    for p, group in enumerate(groups):
        cut = outputs if p == n - 1 else tuple(_meta(c, v) for v in crossing[p])
        incoming = (
            [c.values[v].nbytes for v in c.input_names]
            if p == 0
            else [c.values[v].nbytes for v in crossing[p - 1]]
        )
        pieces.append(
            PieceInfo(
                index=p,
                nodes=tuple(group),
                flops=sum(c.nodes[name].flops for name in group),
                param_bytes=sum(c.nodes[name].param_bytes for name in group),
                out_bytes=sum(t.nbytes for t in cut),
                mem_bytes=_piece_memory(c, group, sum(incoming), group_of, position, p),
                cut_tensors=cut,
                buffer_bytes=sum(c.nodes[name].buffer_bytes for name in group),
            )
        )
    return tuple(pieces)


def crossing_values(c: Captured, groups: Sequence[tuple[str, ...]]) -> list[list[str]]:
    """For each boundary ``p`` (cut after group ``p``) the tensor values crossing it, ordered."""
    return _crossing(c, groups, _group_index(groups))


def _crossing(
    c: Captured, groups: Sequence[tuple[str, ...]], group_of: dict[str, int]
) -> list[list[str]]:
    n = len(groups)
    result: list[list[str]] = [[] for _ in range(max(n - 1, 0))]
    for value in (*c.input_names, *c.order):
        if c.values[value].category != TENSOR:
            continue
        first = group_of.get(value, -1)
        last = _last_use(c, value, group_of, n)
        for p in range(max(first, 0), min(last, n - 1)):
            result[p].append(value)
    return result


def _boundary_bytes(c: Captured, groups: Sequence[tuple[str, ...]]) -> list[int]:
    return [sum(c.values[v].nbytes for v in vs) for vs in crossing_values(c, groups)]


def _group_index(groups: Sequence[Sequence[str]]) -> dict[str, int]:
    return {name: p for p, g in enumerate(groups) for name in g}


def _last_use(c: Captured, value: str, group_of: dict[str, int], n: int) -> int:
    """Index of the last group consuming ``value`` (``n`` for the model output, -1 if unused)."""
    last = -1
    for user in c.users.get(value, ()):
        last = max(last, n if user == OUTPUT else group_of[user])
    return last


def _meta(c: Captured, name: str) -> TensorMeta:
    meta = c.values[name].meta
    assert meta is not None, name
    return meta


def _piece_memory(
    c: Captured,
    group: Sequence[str],
    incoming_bytes: int,
    group_of: dict[str, int],
    position: dict[str, int],
    p: int,
) -> int:
    """Parameters + buffers used + peak live activation bytes while running ``group`` alone.

    Live set: the incoming cut tensors (held for the whole piece: some are consumed late, some
    pass through), plus each produced value from its production until its last use inside the
    piece, or to the end when it is needed later. Views are counted as if they owned their
    bytes, so this is an upper bound.
    """
    # Every parameter/buffer the piece touches, once — including tied weights owned by another
    # piece (GPT-2's LM head needs the embedding matrix too).
    state = sum(dict(kv for name in group for kv in c.state.get(name, ())).values())
    live = incoming_bytes
    peak = live
    in_group = set(group)
    release_after: dict[str, list[str]] = {}
    for name in group:
        info = c.values[name]
        if info.category == CONST:
            continue
        users = c.users.get(name, ())
        if any(u == OUTPUT or group_of.get(u, p) > p for u in users):
            continue  # leaves the piece: held to the end
        local = [u for u in users if u in in_group]
        last = max(local, key=position.__getitem__) if local else name
        release_after.setdefault(last, []).append(name)
    for name in group:
        live += c.values[name].nbytes
        peak = max(peak, live)
        for done in release_after.get(name, ()):
            live -= c.values[done].nbytes
    return state + peak
