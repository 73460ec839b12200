"""Core groups of multi-core SoCs: which devices may share a plan, and the choices to search.

A multi-core SoC (``socs:`` in a cluster file) is expanded into *core groups*: one device per
set of ``k`` consecutive cores of one type (``soc.big0``, ``soc.big0-1``, ...), each priced as
``k`` intra-op threads on those cores. Every group lists the physical cores it holds in
:attr:`Device.cores`. The one rule that makes this a real resource and not a free copy: **two
stages may not run on devices whose cores overlap** — a core runs one stage.

Why consecutive cores only: cores of one type are interchangeable, so any set of ``k`` of them
prices like the first ``k``; every assignment of disjoint core sets to stages is, up to renaming
cores, one of disjoint *intervals*, which keeps the groups to ``n (n + 1) / 2`` per type.

Searching the core-count dimension exactly (:func:`core_families`): a plan's groups are
pairwise disjoint, so they are a subset of some *maximal* family of pairwise-disjoint groups
(extend it with single cores until nothing fits). Planning on each maximal family with every
other device kept — a planner may leave devices unused — and taking the best is therefore
exact over core counts whenever the planner is exact on each family (``dp``, ``brute``).
Families are enumerated per component of the overlap graph (one per core type of a SoC) and
combined; a type with ``n`` cores has ``2^(n-1)`` maximal interval families (its compositions),
so a 4 big + 4 little SoC gives 64 families of at most 9 devices each.

The request source is a place, not a claim on cores: requests enter and leave at the source's
worker, which runs no stage unless the plan puts one there. In a family that does not hold the
source's own group, the source stays in the instance (as the endpoint of the input and output
transfers) with its compute priced out of reach (:data:`UNREACHABLE_FACTOR`) and no cores of its
own, so no planner gains by a stage there (a plan that puts one there anyway, as planners that
use every device do, is dropped by the caller); a plan found that way prices identically on the
full instance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from ..errors import InputError
from .instance import Instance, media_among

# In a family without the source's group, the source's piece times are multiplied so that one
# piece there costs more than the whole model on every other device together: a plan using it
# is then never better than one that does not, for latency, period and energy alike.
UNREACHABLE_FACTOR = 1e6
# More maximal families than this is an instance nobody can plan exactly by enumeration
# (e.g. 16 cores of one type: 32 768 families); the caller is told so instead of waiting.
MAX_FAMILIES = 4096


def has_core_groups(instance: Instance) -> bool:
    """True when some device is a core group (holds named cores)."""
    return any(d.cores for d in instance.devices)


def core_conflict(instance: Instance, devices: Iterable[str]) -> str | None:
    """Why the stage devices ``devices`` cannot share a plan (two hold one core), else ``None``."""
    owner: dict[str, str] = {}
    for name in dict.fromkeys(devices):
        dev = instance.device_by_name.get(name)
        if dev is None:
            continue
        for core in dev.cores:
            other = owner.get(core)
            if other is not None:
                return f"devices {other!r} and {name!r} both hold core {core!r}"
            owner[core] = name
    return None


def core_signature(instance: Instance, device: str) -> tuple[str, ...]:
    """What a device is up to renaming cores of one type: the sorted core types it holds
    (``("soc.big", "soc.big")`` for ``soc.big0-1``; the core's name without its index), or
    ``(device,)`` for a plain device, which has no interchangeable twin here.

    Why: a searcher that measures plans needs to measure ``soc.little0-1`` and
    ``soc.little2-3`` only once — the same two LITTLE cores up to their names — and the
    cost model prices them alike (within its measurement noise)."""
    dev = instance.device_by_name.get(device)
    if dev is None or not dev.cores:
        return (device,)
    return tuple(sorted(c.rstrip("0123456789") for c in dev.cores))


def _components(groups: Sequence[tuple[str, frozenset[str]]]) -> list[list[int]]:
    """Indices of ``groups`` split into connected components of the overlap relation."""
    parent = list(range(len(groups)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_core: dict[str, int] = {}
    for i, (_, cores) in enumerate(groups):
        for c in cores:
            j = by_core.setdefault(c, i)
            parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for i in range(len(groups)):
        comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def _maximal_families(
    members: Sequence[int], cores: Sequence[frozenset[str]]
) -> list[tuple[int, ...]]:
    """Every maximal set of pairwise-disjoint groups among ``members`` (depth-first; a family
    is kept when no other member could still be added)."""
    out: list[tuple[int, ...]] = []

    def grow(k: int, chosen: list[int], used: frozenset[str]) -> None:
        if k == len(members):
            if all(i in chosen or not cores[i].isdisjoint(used) for i in members):
                out.append(tuple(chosen))
            return
        i = members[k]
        if cores[i].isdisjoint(used):
            grow(k + 1, [*chosen, i], used | cores[i])
        grow(k + 1, chosen, used)

    grow(0, [], frozenset())
    return out


def core_families(instance: Instance) -> list[tuple[str, ...]]:
    """The maximal families of pairwise-disjoint core groups, as device-name tuples (instance
    order). Plain devices are not listed: they belong to every family.

    Raises
    ------
    InputError
        More than :data:`MAX_FAMILIES` families.
    """
    groups = [(d.name, frozenset(d.cores)) for d in instance.devices if d.cores]
    if not groups:
        return [()]
    cores = [c for _, c in groups]
    per_comp = [_maximal_families(m, cores) for m in _components(groups)]
    total = math.prod(len(f) for f in per_comp)
    if total > MAX_FAMILIES:
        raise InputError(
            f"{instance.name}: {total} core-group families to search (more than {MAX_FAMILIES}); "
            "declare fewer cores per type"
        )
    order = {name: i for i, (name, _) in enumerate(groups)}
    out = []
    for combo in itertools.product(*per_comp):
        names = [groups[i][0] for fam in combo for i in fam]
        out.append(tuple(sorted(names, key=order.__getitem__)))
    return out


def family_instance(instance: Instance, family: Sequence[str]) -> Instance:
    """``instance`` restricted to the plain devices, the core groups in ``family`` and the
    source (see the module docstring for how a source outside the family is kept)."""
    keep = set(family) | {d.name for d in instance.devices if not d.cores}
    src = instance.source
    outside = src not in keep
    members = keep | {src}
    total = sum(max(pc.time_s.values()) for pc in instance.pieces)
    slow = UNREACHABLE_FACTOR * max(total, 1e-9)

    def times(t: dict[str, float]) -> dict[str, float]:
        out = {d: v for d, v in t.items() if d in members}
        if outside:
            out[src] = slow
        return out

    media = media_among(instance.media, members)
    return replace(
        instance,
        pieces=tuple(replace(pc, time_s=times(dict(pc.time_s))) for pc in instance.pieces),
        # an outside source is only an endpoint here: it holds no cores a stage could clash with
        devices=tuple(
            replace(d, cores=()) if outside and d.name == src else d
            for d in instance.devices
            if d.name in members
        ),
        links=tuple(
            lk for lk in instance.dedicated_links if lk.src in members and lk.dst in members
        ),
        media=media,
        link_failure_per_h={
            pair: r
            for pair, r in instance.link_failure_per_h.items()
            if pair[0] in members and pair[1] in members
        },
        name=f"{instance.name}[{'+'.join(family) or 'no core groups'}]",
    )


__all__ = [
    "MAX_FAMILIES",
    "UNREACHABLE_FACTOR",
    "core_conflict",
    "core_families",
    "family_instance",
    "has_core_groups",
]
