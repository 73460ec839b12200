"""The network of an instance: directed links, shared media, and what a hop keeps busy.

A :class:`Link` is one directed hop; a :class:`Medium` (a Wi-Fi cell, a hub) gives every pair
of its members a hop at its rate, and all those hops share its one capacity. Planners, the
simulator and the runtime see both as links (routing is the same); only the busy-time
accounting differs, through :attr:`Link.resource`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

# What a hop occupies while it moves bytes: a directed link ``(src, dst)``, or the name of a
# shared medium (every hop over that medium, in either direction, occupies the same resource).
Resource = tuple[str, str] | str


@dataclass(frozen=True, slots=True)
class Link:
    """A directed link ``src -> dst``: a transfer of ``x`` bytes costs ``latency_s + x / bandwidth_Bps``.

    ``medium`` names the shared medium this hop crosses (``None``: a dedicated link). Hops over
    one medium share its capacity, so they are charged to one :attr:`resource`."""

    src: str
    dst: str
    bandwidth_Bps: float
    latency_s: float
    medium: str | None = None

    def transfer_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_Bps

    @property
    def resource(self) -> Resource:
        """What this hop keeps busy: the medium's name, else the directed pair."""
        return self.medium if self.medium is not None else (self.src, self.dst)


@dataclass(frozen=True, slots=True)
class Medium:
    """A shared, half-duplex medium (a Wi-Fi cell, a hub): one capacity for all its members.

    Every ordered pair of members without a dedicated link between them talks over the medium
    at ``bandwidth_Bps`` and ``latency_s`` per hop, and all such hops, in any direction, take
    turns on it — six boards on one access point cannot all send at the full rate at once."""

    name: str
    members: tuple[str, ...]
    bandwidth_Bps: float
    latency_s: float


def medium_links(media: Sequence[Medium], dedicated: Sequence[Link]) -> tuple[Link, ...]:
    """The directed hops the media provide: every ordered member pair not covered by a dedicated
    link (a wired link between two Wi-Fi stations is used instead of the air for that pair)."""
    taken = {(lk.src, lk.dst) for lk in dedicated}
    out: list[Link] = []
    for m in media:
        for u in m.members:
            for v in m.members:
                if u != v and (u, v) not in taken:
                    out.append(Link(u, v, m.bandwidth_Bps, m.latency_s, m.name))
    return tuple(out)


def network_of(cluster: Any) -> tuple[tuple[Link, ...], tuple[Medium, ...]]:
    """A cluster's dedicated links and shared media as instance data (any object with
    ``links`` and optionally ``media`` in base units, e.g. :class:`coinfer.cluster.Cluster`)."""
    links = tuple(
        Link(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s)
        for lk in cluster.links
        if getattr(lk, "medium", None) is None
    )
    media = tuple(
        Medium(m.name, tuple(m.members), m.bandwidth_Bps, m.latency_s)
        for m in getattr(cluster, "media", ())
    )
    return links, media


def check_media(
    where: str, media: Sequence[Medium], dedicated: Sequence[Link], known: set[str]
) -> None:
    """Names unique, members known and at least two, figures positive, and no pair of devices
    reachable over two media (which one a hop would occupy would be ambiguous)."""
    seen: dict[str, int] = {}
    owner: dict[tuple[str, str], str] = {}
    for j, m in enumerate(media):
        if not m.name:
            raise InputError(f"{where}: media[{j}] has an empty name")
        if m.name in seen:
            raise InputError(
                f"{where}: media[{j}] repeats the name {m.name!r} (media[{seen[m.name]}])"
            )
        seen[m.name] = j
        if len(set(m.members)) < 2 or len(set(m.members)) != len(m.members):
            raise InputError(
                f"{where}: media[{j}] ({m.name!r}) needs at least two distinct members, got {list(m.members)}"
            )
        for d in m.members:
            if d not in known:
                raise InputError(
                    f"{where}: media[{j}] ({m.name!r}) names unknown device {d!r} (devices: {sorted(known)})"
                )
        if not (m.bandwidth_Bps > 0 and math.isfinite(m.bandwidth_Bps)) or not (
            m.latency_s >= 0 and math.isfinite(m.latency_s)
        ):
            raise InputError(
                f"{where}: media[{j}] ({m.name!r}) needs bandwidth > 0 and latency >= 0"
            )
        for u in m.members:
            for v in m.members:
                if u < v and (u, v) in owner:
                    raise InputError(
                        f"{where}: devices {u!r} and {v!r} share both medium {owner[(u, v)]!r} and {m.name!r}; "
                        "a pair of devices may share at most one medium"
                    )
        for u in m.members:
            for v in m.members:
                if u < v:
                    owner[(u, v)] = m.name
