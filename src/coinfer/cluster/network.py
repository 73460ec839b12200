"""The network part of a cluster file: shared media and the connectivity check.

Split from :mod:`.load` (the schema and the device/link parsing) because media are validated
across entries (names, member pairs shared by two media) and after the links are known.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .traces import fail as _fail
from .traces import load_trace
from .types import BandwidthTrace, LinkSpec, MediumSpec
from .units import mbps_to_Bps


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
        for a in m.members:
            for b in m.members:
                key = frozenset((a, b))
                if a < b and key in pair_on:
                    raise _fail(
                        origin,
                        f"media[{j}].members",
                        f"{a!r} and {b!r} already share medium {pair_on[key]!r}; a pair of "
                        "devices may share at most one medium",
                    )
        for a in m.members:
            for b in m.members:
                if a < b:
                    pair_on[frozenset((a, b))] = m.name
        trace = None
        trace_path = None
        if m.trace is not None:
            tp = Path(m.trace)
            tp = tp if tp.is_absolute() else base / tp
            trace = load_trace(tp, origin=f"{origin}: media[{j}].trace")
            trace_path = str(tp.resolve())
            traces[m.name] = trace
        if m.bandwidth_mbps is not None:
            bw = mbps_to_Bps(m.bandwidth_mbps)
        elif trace is not None:
            bw = trace.mean_Bps()
        else:
            raise _fail(
                origin, f"media[{j}].bandwidth_mbps", "missing required field (or give a 'trace')"
            )
        out.append(MediumSpec(m.name, tuple(m.members), bw, m.latency_ms / 1000.0, trace_path))
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
