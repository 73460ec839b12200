"""The network part of a cluster file: shared media and the connectivity check.

Split from :mod:`.load` (the schema and the device/link parsing) because media are validated
across entries (names, member pairs shared by two media) and after the links are known.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .traces import fail as _fail
from .traces import rate_and_trace
from .types import BandwidthTrace, LinkSpec, MediumSpec


def parse_media(
    entries: Sequence[Any],
    known: set[str],
    names: list[str],
    origin: str,
    base: Path,
    traces: dict[Any, BandwidthTrace],
) -> tuple[MediumSpec, ...]:
    """Validate the ``media`` block: unique names, known and distinct members (two or more), a
    bandwidth or a trace, and no pair of devices on two media (which one they use would be
    ambiguous). A medium's trace is stored under the medium's name."""
    out: list[MediumSpec] = []
    by_name: dict[str, int] = {}
    pair_on: dict[frozenset[str], str] = {}
    for j, m in enumerate(entries):
        if m.name in by_name:
            raise _fail(origin, f"media[{j}].name", f"duplicate medium name (got {m.name!r})")
        by_name[m.name] = j
        for i, d in enumerate(m.members):
            if d not in known:
                raise _fail(
                    origin,
                    f"media[{j}].members[{i}]",
                    f"unknown device (got {d!r}; devices: {', '.join(names)})",
                )
        if len(set(m.members)) != len(m.members) or len(m.members) < 2:
            raise _fail(
                origin,
                f"media[{j}].members",
                f"needs two or more distinct devices (got {m.members!r})",
            )
        pairs = [frozenset(p) for p in itertools.combinations(sorted(m.members), 2)]
        for key in pairs:
            if key in pair_on:
                a, b = sorted(key)
                raise _fail(
                    origin,
                    f"media[{j}].members",
                    f"{a!r} and {b!r} already share medium {pair_on[key]!r}; a pair of "
                    "devices may share at most one medium",
                )
        pair_on.update(dict.fromkeys(pairs, m.name))
        bw, trace, trace_path = rate_and_trace(
            m.bandwidth_mbps, m.trace, base, origin, f"media[{j}]"
        )
        if trace is not None:
            traces[m.name] = trace
        emulate = None if m.emulate is None else m.emulate.spec()
        out.append(
            MediumSpec(m.name, tuple(m.members), bw, m.latency_ms / 1000.0, trace_path, emulate)
        )
    return tuple(out)


def check_connected(origin: str, names: list[str], source: str, links: list[LinkSpec]) -> None:
    """Every device must be reachable from the source and reach it back (requests return)."""
    fwd: dict[str, list[str]] = {n: [] for n in names}
    back: dict[str, list[str]] = {n: [] for n in names}
    for lk in links:
        fwd[lk.src].append(lk.dst)
        back[lk.dst].append(lk.src)
    for adj, how in ((fwd, "cannot be reached from"), (back, "cannot send back to")):
        seen = {source}
        queue = deque([source])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if v not in seen:
                    seen.add(v)
                    queue.append(v)
        lost = [n for n in names if n not in seen]
        if lost:
            raise _fail(
                origin,
                "links",
                f"network is disconnected: device {lost[0]!r} {how} source {source!r}",
            )
