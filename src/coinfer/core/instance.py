"""The planning instance: the reference cost model as plain data.

An :class:`Instance` is everything a planner may look at — ordered pieces with per-device
times, memory needs and cut sizes, devices with memory (and optionally power and DVFS levels),
directed links with bandwidth and latency, and the source device. It is what a model + cluster
+ cost model reduce to, and what ``coinfer plan --instance FILE`` reads directly.

Conventions (DESIGN.md, "The reference cost model"): ``pieces[i]`` is piece ``p = i + 1``;
``pieces[i].out_bytes`` is ``b[p]`` (for the last piece: the model's output bytes) and
``input_bytes`` is ``b[0]``. Units are seconds, bytes and bytes/s, and field names carry them.

Transfers between devices with no direct link take the path that is cheapest *for that
transfer's size* (store-and-forward: each hop costs ``L + x / B``), so a path is a function of
``(src, dst, bytes)`` and is cached per triple.

Shared media (:class:`Medium`: a Wi-Fi cell, a hub) give every pair of their members a hop at
the medium's rate; those hops are ordinary :class:`Link` objects tagged with the medium, so
routing is unchanged and only the busy-time accounting (one resource per medium) differs
(:mod:`.network`).

Failure rates (optional, default 0 = never fails): ``Device.failure_rate_per_h`` and, for
dedicated links, ``Instance.link_failure_per_h`` keyed by the directed pair (the Link type is
shared with the network module and carries no rate). Only reliability-aware planning
(:mod:`coinfer.plan.reliability`) and the failure simulator read them; every other cost is
unchanged by them.

Why one module: the dataclasses, their cross-reference checks and the JSON schema at the file
boundary describe the same fields; kept side by side, a field added to one cannot be missed in
the others (the round-trip tests catch what slips through).
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError, parse_json, read_text
from .network import Link as Link
from .network import Medium as Medium
from .network import Resource as Resource
from .network import check_media, medium_links
from .network import network_of as network_of
from .routes import cheapest_paths

# Power scales with frequency as idle + (active - idle) * (f / f_max) ** exponent; a cubic
# exponent is the textbook dynamic-power model (P ~ C V^2 f with V roughly proportional to f).
DEFAULT_POWER_EXPONENT = 3.0


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of the chain: its time on each device, memory need and outgoing cut size."""

    name: str
    time_s: Mapping[str, float]
    mem_bytes: int
    out_bytes: int


@dataclass(frozen=True, slots=True)
class Device:
    """A compute device as planners see it.

    ``dvfs_levels`` are the allowed frequencies as fractions of the maximum (1.0 = f_max); at
    level ``f`` compute time scales by ``1 / f`` and active power by the power curve.
    ``failure_rate_per_h`` is the expected number of failures per hour of operation (0 = never
    fails); times between failures are taken as exponential (a constant hazard).
    ``cores`` names the physical cores a *core group* of a multi-core SoC holds (empty for a
    plain device): two stages may not run on devices whose cores overlap (:mod:`.cores`).
    """

    name: str
    mem_bytes: int
    power_idle_w: float | None = None
    power_active_w: float | None = None
    power_transmit_w: float | None = None
    dvfs_levels: tuple[float, ...] = (1.0,)
    power_exponent: float = DEFAULT_POWER_EXPONENT
    failure_rate_per_h: float = 0.0
    cores: tuple[str, ...] = ()

    @property
    def has_power(self) -> bool:
        return self.power_active_w is not None

    def active_power_w(self, freq: float = 1.0) -> float:
        """Active power at frequency fraction ``freq`` (0 if unknown)."""
        if self.power_active_w is None:
            return 0.0
        idle = self.power_idle_w or 0.0
        return idle + (self.power_active_w - idle) * freq**self.power_exponent


@dataclass(frozen=True)
class Instance:
    """A complete planning problem under the reference cost model (see module docstring)."""

    pieces: tuple[Piece, ...]
    input_bytes: int
    devices: tuple[Device, ...]
    links: tuple[Link, ...]
    source: str
    name: str = "instance"
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    media: tuple[Medium, ...] = ()
    # failures per hour of dedicated directed links (absent pairs: 0, never fail)
    link_failure_per_h: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``links`` always holds every usable hop: the dedicated links as given plus the hops the
        # media provide (re-derived here, so replacing ``media`` or ``links`` stays consistent)
        media = tuple(self.media)
        dedicated = tuple(lk for lk in self.links if lk.medium is None)
        check_media(self.name, media, dedicated, {d.name for d in self.devices})
        object.__setattr__(self, "media", media)
        object.__setattr__(self, "links", dedicated + medium_links(media, dedicated))
        object.__setattr__(
            self,
            "link_failure_per_h",
            {(str(u), str(v)): float(r) for (u, v), r in dict(self.link_failure_per_h).items()},
        )
        _check_instance(self)

    # ----- sizes and lookups -------------------------------------------------------------
    @property
    def num_pieces(self) -> int:
        return len(self.pieces)

    @cached_property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @cached_property
    def device_by_name(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    @cached_property
    def link_by_pair(self) -> dict[tuple[str, str], Link]:
        return {(lk.src, lk.dst): lk for lk in self.links}

    @cached_property
    def dedicated_links(self) -> tuple[Link, ...]:
        """The links given one by one (not provided by a medium)."""
        return tuple(lk for lk in self.links if lk.medium is None)

    @cached_property
    def medium_by_name(self) -> dict[str, Medium]:
        return {m.name: m for m in self.media}

    @cached_property
    def out_links(self) -> dict[str, tuple[Link, ...]]:
        out: dict[str, list[Link]] = {d: [] for d in self.device_names}
        for lk in self.links:
            out[lk.src].append(lk)
        return {d: tuple(v) for d, v in out.items()}

    def link_failure_rate_per_h(self, src: str, dst: str) -> float:
        """Failures per hour of the dedicated link ``src -> dst`` (0 when none is given)."""
        return self.link_failure_per_h.get((src, dst), 0.0)

    @property
    def has_failure_rates(self) -> bool:
        """Whether any device or link may fail (a positive ``failure_rate_per_h``)."""
        return any(d.failure_rate_per_h > 0 for d in self.devices) or any(
            r > 0 for r in self.link_failure_per_h.values()
        )

    def cut_bytes(self, p: int) -> int:
        """``b[p]``: bytes crossing the cut after piece ``p`` (1-based; ``b[0]`` = input)."""
        return self.input_bytes if p == 0 else self.pieces[p - 1].out_bytes

    @property
    def output_bytes(self) -> int:
        return self.pieces[-1].out_bytes

    # ----- prefix sums for O(1) range queries (planners call these in inner loops) ---------
    @cached_property
    def _time_prefix(self) -> dict[str, tuple[float, ...]]:
        pref: dict[str, tuple[float, ...]] = {}
        for d in self.device_names:
            acc = [0.0]
            for pc in self.pieces:
                acc.append(acc[-1] + pc.time_s[d])
            pref[d] = tuple(acc)
        return pref

    @cached_property
    def _mem_prefix(self) -> tuple[int, ...]:
        acc = [0]
        for pc in self.pieces:
            acc.append(acc[-1] + pc.mem_bytes)
        return tuple(acc)

    def compute_s(self, first: int, last: int, device: str, freq: float = 1.0) -> float:
        """Time to compute pieces ``first..last`` (0-based, inclusive) on ``device`` at ``freq``."""
        pref = self._time_prefix[device]
        return (pref[last + 1] - pref[first]) / freq

    def mem_bytes(self, first: int, last: int) -> int:
        """Memory needed to hold pieces ``first..last`` (0-based, inclusive)."""
        return self._mem_prefix[last + 1] - self._mem_prefix[first]

    def boundary_bytes(self, first: int) -> int:
        """Bytes entering a stage that starts at 0-based piece ``first`` (``b[first]``)."""
        return self.cut_bytes(first)

    # ----- transfers ------------------------------------------------------------------------
    def path(self, src: str, dst: str, nbytes: float) -> tuple[Link, ...]:
        """Cheapest store-and-forward path for a transfer of ``nbytes`` (empty when src == dst
        or when ``dst`` is unreachable)."""
        if src == dst:
            return ()
        return self.paths_from(src, nbytes).get(dst, ())

    def paths_from(self, src: str, nbytes: float) -> Mapping[str, tuple[Link, ...]]:
        """``dst -> cheapest path`` from ``src`` for every reachable ``dst`` (one Dijkstra run,
        cached per ``(src, nbytes)``: planners ask for all destinations of one cut at once)."""
        key = (src, float(nbytes))
        cache = self._path_cache
        hit = cache.get(key)
        if hit is None:
            hit = cheapest_paths(self.out_links, self.link_by_pair, src, float(nbytes))
            cache[key] = hit
        return hit

    def transfer_s(self, src: str, dst: str, nbytes: float) -> float:
        """Seconds to move ``nbytes`` from ``src`` to ``dst`` (0 on one device, inf if unreachable)."""
        if src == dst:
            return 0.0
        links = self.path(src, dst, nbytes)
        if not links:
            return math.inf
        return sum(lk.transfer_s(nbytes) for lk in links)

    @cached_property
    def _path_cache(self) -> dict[tuple[str, float], dict[str, tuple[Link, ...]]]:
        return {}

    # ----- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return instance_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "instance") -> Instance:
        return instance_from_dict(data, origin=origin)

    @classmethod
    def load(cls, path: str | Path) -> Instance:
        return load_instance(path)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    def __repr__(self) -> str:
        return (
            f"Instance({self.name!r}: {self.num_pieces} pieces, devices={list(self.device_names)}, "
            f"{len(self.dedicated_links)} links, {len(self.media)} media, source={self.source!r})"
        )


def media_among(media: Sequence[Medium], members: Container[str]) -> tuple[Medium, ...]:
    """The media that still join two or more of ``members``, each reduced to those members."""
    return tuple(
        replace(m, members=tuple(d for d in m.members if d in members))
        for m in media
        if sum(d in members for d in m.members) >= 2
    )


def surviving(inst: Instance, alive: Sequence[str], source: str | None = None) -> Instance:
    """``inst`` with only the devices in ``alive``: what a planner sees after a failure.

    Links and media lose their dead ends (a medium keeps its surviving members); the source is
    ``source``, else the old one if it survived, else the first survivor (the coordinator holds
    every request's inputs, so any device can take over feeding the pipeline).
    """
    keep = [d for d in inst.device_names if d in set(alive)]
    if not keep:
        raise InputError(f"{inst.name}: no device survives (alive: {list(alive)})")
    src = source or (inst.source if inst.source in keep else keep[0])
    if src not in keep:
        raise InputError(f"{inst.name}: new source {src!r} is not a surviving device")
    members = set(keep)
    media = media_among(inst.media, members)
    return replace(
        inst,
        pieces=tuple(
            replace(pc, time_s={d: t for d, t in pc.time_s.items() if d in members})
            for pc in inst.pieces
        ),
        devices=tuple(d for d in inst.devices if d.name in members),
        links=tuple(lk for lk in inst.dedicated_links if lk.src in members and lk.dst in members),
        media=media,
        source=src,
        link_failure_per_h={
            pair: r
            for pair, r in inst.link_failure_per_h.items()
            if pair[0] in members and pair[1] in members
        },
    )


def _check_instance(inst: Instance) -> None:
    """Validate cross-references; messages name the offending field and value."""
    where = inst.name
    if not inst.pieces:
        raise InputError(f"{where}: 'pieces' is empty; an instance needs at least one piece")
    if not inst.devices:
        raise InputError(f"{where}: 'devices' is empty; an instance needs at least one device")
    names = [d.name for d in inst.devices]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"{where}: duplicate device names {dup}")
    known = set(names)
    if inst.source not in known:
        raise InputError(f"{where}: 'source' = {inst.source!r} is not a device (devices: {names})")
    for i, pc in enumerate(inst.pieces):
        missing = known - set(pc.time_s)
        if missing:
            raise InputError(
                f"{where}: pieces[{i}] ({pc.name!r}) has no time for devices {sorted(missing)}"
            )
        for d, t in pc.time_s.items():
            if d not in known:
                raise InputError(f"{where}: pieces[{i}].time names unknown device {d!r}")
            if not (t >= 0 and math.isfinite(t)):
                raise InputError(
                    f"{where}: pieces[{i}].time[{d!r}] = {t!r} must be finite and >= 0"
                )
        if pc.mem_bytes < 0 or pc.out_bytes < 0:
            raise InputError(f"{where}: pieces[{i}] has negative mem or out_bytes")
    for j, lk in enumerate(inst.links):
        for end in (lk.src, lk.dst):
            if end not in known:
                raise InputError(
                    f"{where}: links[{j}] names unknown device {end!r} (devices: {names})"
                )
        if lk.src == lk.dst:
            raise InputError(f"{where}: links[{j}] is a self-loop on {lk.src!r}")
        if not (lk.bandwidth_Bps > 0) or not (lk.latency_s >= 0):
            raise InputError(
                f"{where}: links[{j}] ({lk.src}->{lk.dst}) needs bandwidth > 0 and latency >= 0"
            )
    for d in inst.devices:
        if d.mem_bytes <= 0:
            raise InputError(f"{where}: device {d.name!r} has mem {d.mem_bytes} <= 0")
        if not d.dvfs_levels or any(not (0 < f <= 1.0) for f in d.dvfs_levels):
            raise InputError(f"{where}: device {d.name!r} dvfs_levels must be fractions in (0, 1]")
        if not _valid_rate(d.failure_rate_per_h):
            raise InputError(
                f"{where}: device {d.name!r} failure_rate_per_h must be finite and >= 0 "
                f"(got {d.failure_rate_per_h!r})"
            )
    pairs = {(lk.src, lk.dst) for lk in inst.dedicated_links}
    for (u, v), r in inst.link_failure_per_h.items():
        if (u, v) not in pairs:
            raise InputError(
                f"{where}: link_failure_per_h names {u}->{v}, which is not a dedicated link"
            )
        if not _valid_rate(r):
            raise InputError(
                f"{where}: link {u}->{v} failure_rate_per_h must be finite and >= 0 (got {r!r})"
            )


def _valid_rate(rate: float) -> bool:
    return isinstance(rate, int | float) and math.isfinite(rate) and rate >= 0


# ----- JSON schema at the file boundary (pydantic, extra fields forbidden) ------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PieceModel(_Strict):
    name: str
    time: dict[str, float]
    mem: int = Field(ge=0)
    out_bytes: int = Field(ge=0)


class DeviceModel(_Strict):
    name: str
    mem: int = Field(gt=0)
    power_idle: float | None = Field(default=None, ge=0)
    power_active: float | None = Field(default=None, ge=0)
    power_transmit: float | None = Field(default=None, ge=0)
    dvfs_levels: list[float] | None = None
    power_exponent: float = Field(default=DEFAULT_POWER_EXPONENT, gt=0)
    failure_rate_per_h: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cores: list[str] = []

    @field_validator("dvfs_levels")
    @classmethod
    def _levels(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not (0 < f <= 1.0) for f in v)):
            raise ValueError("dvfs_levels must be a non-empty list of fractions in (0, 1]")
        return v


class LinkModel(_Strict):
    src: str
    dst: str
    bandwidth: float = Field(gt=0)
    latency: float = Field(ge=0)
    failure_rate_per_h: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class MediumModel(_Strict):
    name: str
    members: list[str]
    bandwidth: float = Field(gt=0)
    latency: float = Field(ge=0)


class InstanceModel(_Strict):
    name: str | None = None
    pieces: list[PieceModel]
    input_bytes: int = Field(ge=0)
    devices: list[DeviceModel]
    links: list[LinkModel] = []
    media: list[MediumModel] = []
    source: str
    meta: dict[str, Any] | None = None


def instance_to_dict(inst: Instance) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": inst.name,
        "pieces": [
            {"name": p.name, "time": dict(p.time_s), "mem": p.mem_bytes, "out_bytes": p.out_bytes}
            for p in inst.pieces
        ],
        "input_bytes": inst.input_bytes,
        "devices": [],
        "links": [_link_to_dict(inst, lk) for lk in inst.dedicated_links],
        "source": inst.source,
    }
    if inst.media:
        out["media"] = [
            {
                "name": m.name,
                "members": list(m.members),
                "bandwidth": m.bandwidth_Bps,
                "latency": m.latency_s,
            }
            for m in inst.media
        ]
    for d in inst.devices:
        dd: dict[str, Any] = {"name": d.name, "mem": d.mem_bytes}
        if d.power_idle_w is not None:
            dd["power_idle"] = d.power_idle_w
        if d.power_active_w is not None:
            dd["power_active"] = d.power_active_w
        if d.power_transmit_w is not None:
            dd["power_transmit"] = d.power_transmit_w
        if tuple(d.dvfs_levels) != (1.0,):
            dd["dvfs_levels"] = list(d.dvfs_levels)
        if d.power_exponent != DEFAULT_POWER_EXPONENT:
            dd["power_exponent"] = d.power_exponent
        if d.failure_rate_per_h:
            dd["failure_rate_per_h"] = d.failure_rate_per_h
        if d.cores:
            dd["cores"] = list(d.cores)
        out["devices"].append(dd)
    if inst.meta:
        out["meta"] = dict(inst.meta)
    return out


def _link_to_dict(inst: Instance, lk: Link) -> dict[str, Any]:
    out: dict[str, Any] = {
        "src": lk.src,
        "dst": lk.dst,
        "bandwidth": lk.bandwidth_Bps,
        "latency": lk.latency_s,
    }
    rate = inst.link_failure_rate_per_h(lk.src, lk.dst)
    if rate:
        out["failure_rate_per_h"] = rate
    return out


def instance_from_dict(data: Mapping[str, Any], *, origin: str = "instance") -> Instance:
    try:
        m = InstanceModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(
            f"{origin}: field '{loc}': {err['msg']} (got {err.get('input')!r})"[:400]
        ) from None
    try:
        return _instance_from_model(m, origin)
    except InputError as exc:
        # cross-reference errors are phrased with the instance's name; point at the file too
        msg = str(exc)
        raise InputError(msg if msg.startswith(origin) else f"{origin}: {msg}") from None


def _instance_from_model(m: InstanceModel, origin: str) -> Instance:
    return Instance(
        pieces=tuple(Piece(p.name, dict(p.time), p.mem, p.out_bytes) for p in m.pieces),
        input_bytes=m.input_bytes,
        devices=tuple(
            Device(
                name=d.name,
                mem_bytes=d.mem,
                power_idle_w=d.power_idle,
                power_active_w=d.power_active,
                power_transmit_w=d.power_transmit,
                dvfs_levels=tuple(d.dvfs_levels) if d.dvfs_levels else (1.0,),
                power_exponent=d.power_exponent,
                failure_rate_per_h=d.failure_rate_per_h,
                cores=tuple(d.cores),
            )
            for d in m.devices
        ),
        links=tuple(Link(lk.src, lk.dst, lk.bandwidth, lk.latency) for lk in m.links),
        source=m.source,
        name=m.name or origin,
        meta=m.meta or {},
        media=tuple(Medium(md.name, tuple(md.members), md.bandwidth, md.latency) for md in m.media),
        link_failure_per_h={
            (lk.src, lk.dst): lk.failure_rate_per_h for lk in m.links if lk.failure_rate_per_h
        },
    )


def load_instance(path: str | Path) -> Instance:
    """Read an instance JSON file; any problem is one :class:`InputError` naming the file."""
    p = Path(path)
    data = parse_json(read_text(p, "instance file"), str(p))
    if not isinstance(data, dict):
        raise InputError(f"{p}: an instance file must hold a JSON object")
    return instance_from_dict(data, origin=str(p))


def make_instance(
    times: Sequence[Mapping[str, float]],
    mem: Sequence[int],
    out_bytes: Sequence[int],
    input_bytes: int,
    devices: Sequence[Device],
    links: Sequence[Link],
    source: str,
    name: str = "instance",
    media: Sequence[Medium] = (),
) -> Instance:
    """Convenience constructor from parallel lists (used by tests and generators)."""
    pieces = tuple(
        Piece(f"p{i}", dict(t), int(m), int(b))
        for i, (t, m, b) in enumerate(zip(times, mem, out_bytes, strict=True))
    )
    return Instance(
        pieces,
        int(input_bytes),
        tuple(devices),
        tuple(links),
        source,
        name=name,
        media=tuple(media),
    )
