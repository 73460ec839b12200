"""Multi-core SoCs in a cluster file (``socs:``): core types, and their expansion into core groups.

A SoC such as the RK3399 (2 big + 4 LITTLE cores) is not one device and not six: a pipeline
stage may run on any number of cores of one type, with that many intra-op threads. The file
declares the SoC once::

    socs:
      - name: soc
        memory: 1536MiB
        handoff: {bandwidth_mbps: 24000, latency_ms: 0.02}   # between two core groups
        cores:
          - {type: big, count: 2, speed: {gflops: 12}, emulate: {cpu_quota: 0.4, cpus: [0, 1]}}
          - {type: little, count: 4, speed: {gflops: 4.5}, emulate: {cpu_quota: 0.15, cpus: [0, 1]}}

and the loader expands it into *core groups*: one ``kind: core`` device per run of ``k``
consecutive cores of one type (``soc.big0``, ``soc.big1``, ``soc.big0-1``, ``soc.little0-2``,
...; cores of one type are interchangeable, so intervals cover every choice up to renaming).
Each group lists the cores it holds (``DeviceSpec.cores``); planners never put two stages on
groups that share a core (:mod:`coinfer.core.cores`), which is what makes the cores per stage a
search dimension rather than free copies.

What a group of ``k`` cores is, figure by figure (and why):

* **speed** — emulated on this host (``emulate``): ``k`` threads under ``k x cpu_quota`` of CPU,
  pinned to the host CPUs of its cores (core ``i`` of a type lives on ``cpus[i % len(cpus)]``),
  so the cost model *measures* a group like any emulated device, ``k`` threads included — the
  speed-up of ``k`` cores is measured, not assumed. Without emulation the analytic fallback
  prices it at ``gflops x speedup[k-1]`` (``speedup``: measured speed-ups of 1..count cores,
  given in the file) or, without one, at ``k x gflops`` — ideal scaling, an upper bound.
* **memory** — the SoC's memory is shared; each group gets its cores' share
  (``memory x k / total cores``), so groups in any plan together never exceed the SoC's memory.
* **power** — ``k x`` the per-core idle / active figures (cores are powered per core).
* **links** — between any two groups of one SoC, the ``handoff`` figures (a copy through shared
  memory); a link entry naming the SoC applies to each of its groups.
* **source** — ``source: <soc>`` means requests enter at the SoC's first core (its first type,
  core 0): the group holding only that core.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .traces import fail as _fail
from .types import DeviceSpec, Emulation, LinkSpec, SocSpec
from .units import DvfsError, dvfs_fractions, mbps_to_Bps, parse_memory

# SoC names become device-name prefixes; core type names are followed by core indices in group
# names (``big0-1``), so they may not end in a digit or contain the separators.
_SOC_NAME = r"^[A-Za-z0-9][A-Za-z0-9_]*$"
_TYPE_NAME = r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z_])?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoreSpeedEntry(_Strict):
    """``cores[].speed``: per-core effective GFLOP/s, and measured speed-ups of 1..count cores."""

    gflops: float = Field(gt=0)
    speedup: list[float] | None = None

    @field_validator("speedup")
    @classmethod
    def _speedup(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not (s > 0) for s in v)):
            raise ValueError("must be a non-empty list of positive speed-ups (1 core first)")
        return v


class CorePowerEntry(_Strict):
    idle: float | None = Field(default=None, ge=0)
    active: float | None = Field(default=None, ge=0)
    transmit: float | None = Field(default=None, ge=0)


class CoreEmulateEntry(_Strict):
    """``cores[].emulate``: CPU quota of ONE core (in host cores) and the host CPUs the cores
    of this type are spread over."""

    cpu_quota: float = Field(gt=0, le=1)
    cpus: list[int] | None = Field(default=None, min_length=1)

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(c < 0 for c in v):
            raise ValueError("CPU numbers must be >= 0")
        return v


class CoreTypeEntry(_Strict):
    type: str = Field(pattern=_TYPE_NAME)
    count: int = Field(ge=1, le=16)
    speed: CoreSpeedEntry
    power: CorePowerEntry | None = None
    dvfs_levels: list[float] | None = None
    dvfs_ghz: list[float] | None = None
    emulate: CoreEmulateEntry | None = None


class HandoffEntry(_Strict):
    bandwidth_mbps: float = Field(gt=0)
    latency_ms: float = Field(default=0.0, ge=0)


class SocEntry(_Strict):
    name: str = Field(pattern=_SOC_NAME)
    memory: int
    handoff: HandoffEntry
    cores: list[CoreTypeEntry] = Field(min_length=1)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_memory(v)


def group_name(soc: str, core_type: str, first: int, count: int) -> str:
    """``soc.big0`` for one core, ``soc.big0-1`` for cores 0..1."""
    tail = f"{first}" if count == 1 else f"{first}-{first + count - 1}"
    return f"{soc}.{core_type}{tail}"


def _group(
    soc: SocEntry, ct: CoreTypeEntry, first: int, k: int, levels: tuple[float, ...], total: int
) -> DeviceSpec:
    speed = ct.speed
    scale = speed.speedup[k - 1] if speed.speedup is not None else float(k)
    emulate = None
    if ct.emulate is not None:
        cpus = None
        if ct.emulate.cpus is not None:
            n = len(ct.emulate.cpus)
            cpus = tuple(sorted({ct.emulate.cpus[c % n] for c in range(first, first + k)}))
        # rounded: the quota is part of the profile cache key (3 x 0.15 is 0.44999999999999996)
        emulate = Emulation(cpu_quota=round(k * ct.emulate.cpu_quota, 9), threads=k, cpus=cpus)
    power = ct.power or CorePowerEntry()
    return DeviceSpec(
        name=group_name(soc.name, ct.type, first, k),
        kind="core",
        mem_bytes=soc.memory * k // total,
        gflops=speed.gflops * scale,
        power_idle_w=None if power.idle is None else k * power.idle,
        power_active_w=None if power.active is None else k * power.active,
        power_transmit_w=power.transmit,
        dvfs_levels=levels,
        emulate=emulate,
        soc=soc.name,
        cores=tuple(f"{soc.name}.{ct.type}{c}" for c in range(first, first + k)),
    )


def expand_soc(
    soc: SocEntry, index: int, origin: str
) -> tuple[tuple[DeviceSpec, ...], tuple[LinkSpec, ...], SocSpec]:
    """The core groups of ``soc`` (``socs[index]``), the hand-off links between every ordered
    pair of them, and its :class:`SocSpec`.

    Raises
    ------
    InputError
        A duplicate core type, a ``speedup`` list shorter than ``count``, or a bad DVFS table,
        as one line naming the field.
    """
    where = f"socs[{index}]"
    total = sum(ct.count for ct in soc.cores)
    seen: set[str] = set()
    groups: list[DeviceSpec] = []
    for j, ct in enumerate(soc.cores):
        if ct.type in seen:
            raise _fail(
                origin, f"{where}.cores[{j}].type", f"duplicate core type (got {ct.type!r})"
            )
        seen.add(ct.type)
        if ct.speed.speedup is not None and len(ct.speed.speedup) < ct.count:
            raise _fail(
                origin,
                f"{where}.cores[{j}].speed.speedup",
                f"needs one speed-up per core count 1..{ct.count} (got {ct.speed.speedup})",
            )
        try:
            levels = dvfs_fractions(ct.dvfs_levels, ct.dvfs_ghz)
        except DvfsError as exc:
            raise _fail(origin, f"{where}.cores[{j}].{exc.field}", str(exc)) from None
        for k in range(1, ct.count + 1):
            for first in range(ct.count - k + 1):
                groups.append(_group(soc, ct, first, k, levels, total))
    bw, lat = mbps_to_Bps(soc.handoff.bandwidth_mbps), soc.handoff.latency_ms / 1000.0
    links = tuple(
        LinkSpec(a.name, b.name, bw, lat) for a in groups for b in groups if a.name != b.name
    )
    first_type = soc.cores[0].type
    spec = SocSpec(
        name=soc.name,
        source_group=group_name(soc.name, first_type, 0, 1),
        entry_json=json.dumps(soc.model_dump(exclude_none=True), sort_keys=True),
    )
    return tuple(groups), links, spec


def expand_socs(
    entries: Sequence[SocEntry], origin: str
) -> tuple[tuple[DeviceSpec, ...], tuple[LinkSpec, ...], tuple[SocSpec, ...]]:
    """:func:`expand_soc` over every entry, concatenated."""
    devices: list[DeviceSpec] = []
    links: list[LinkSpec] = []
    specs: list[SocSpec] = []
    for i, entry in enumerate(entries):
        d, lk, sp = expand_soc(entry, i, origin)
        devices += d
        links += lk
        specs.append(sp)
    return tuple(devices), tuple(links), tuple(specs)


__all__ = ["SocEntry", "expand_soc", "expand_socs", "group_name"]
