"""Cluster files: the YAML schema (pydantic, unknown fields forbidden), unit conversion, checks.

Every problem with a cluster file becomes ONE :class:`~coinfer.errors.InputError` line of the form
``<file>: <field path>: <what is wrong> (got <value>)``, e.g.
``lab.yaml: devices[1].speed.gflops: must be > 0 (got -3)``. Field paths use the YAML's own
names so the user can find the line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InputError, read_text
from .network import check_connected, parse_media
from .socs import SocEntry, expand_socs
from .traces import fail as _fail
from .traces import load_trace as load_trace
from .traces import rate_and_trace
from .types import (
    BandwidthTrace,
    Cluster,
    DeviceFeatures,
    DeviceSpec,
    Emulation,
    LinkEmulation,
    LinkSpec,
    PieceScale,
)
from .units import BYTES_PER_S_PER_GBPS, DvfsError, dvfs_fractions, mbps_to_Bps, parse_memory

# Device names become cgroup directory names, process labels and file-name parts, so keep them
# to a portable character set.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PredictEntry(_Strict):
    """``speed.predict``: device features for the affinity predictor."""

    cores: int = Field(default=1, ge=1)
    threads: int | None = Field(default=None, ge=1)
    freq_ghz: float | None = Field(default=None, gt=0)
    quota: float | None = Field(default=None, gt=0)
    mem_bandwidth_gbps: float | None = Field(default=None, gt=0)
    peak_gflops: float | None = Field(default=None, gt=0)


class PieceScaleEntry(_Strict):
    """One ``speed.pieces`` entry: a calibrated factor of one model's piece range."""

    model: str = Field(min_length=1)
    pieces: int = Field(gt=0)
    first: int = Field(ge=0)
    last: int = Field(ge=0)
    scale: float = Field(gt=0)

    @model_validator(mode="after")
    def _range(self) -> PieceScaleEntry:
        if self.last < self.first or self.last >= self.pieces:
            raise ValueError(
                f"need 0 <= first <= last < pieces (got {self.first}..{self.last} of {self.pieces})"
            )
        return self


class SpeedEntry(_Strict):
    """``speed``: at least one of an analytic figure, a measured profile, or predictor features."""

    gflops: float | None = Field(default=None, gt=0)
    profile: str | None = None
    predict: PredictEntry | None = None
    # measured correction of whichever source prices the device (``coinfer calibrate`` writes it)
    scale: float = Field(default=1.0, gt=0)
    # per piece range of one model, on top of ``scale`` (``coinfer calibrate`` writes them too)
    pieces: list[PieceScaleEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> SpeedEntry:
        if self.gflops is None and self.profile is None and self.predict is None:
            raise ValueError("give at least one of 'gflops', 'profile' or 'predict'")
        return self


class PowerEntry(_Strict):
    """``power``: watts when idle, computing, and transmitting."""

    idle: float | None = Field(default=None, ge=0)
    active: float | None = Field(default=None, ge=0)
    transmit: float | None = Field(default=None, ge=0)


class EmulateEntry(_Strict):
    """``emulate``: local-testbed emulation (cgroup CPU quota in cores, intra-op threads)."""

    cpu_quota: float = Field(default=1.0, gt=0)
    threads: int = Field(default=1, ge=1)


class DeviceEntry(_Strict):
    name: str = Field(pattern=_NAME_PATTERN)
    kind: Literal["cpu", "gpu", "npu", "core"] = "cpu"
    speed: SpeedEntry
    memory: int
    power: PowerEntry | None = None
    dvfs_levels: list[float] | None = None
    dvfs_ghz: list[float] | None = None
    emulate: EmulateEntry | None = None
    # expected failures per hour (a constant hazard); 0 = reliable. A rate rather than an MTBF
    # so that "never fails" is the plain default 0 and rates of parts in series add up.
    failure_rate_per_h: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_memory(v)

    @field_validator("dvfs_levels")
    @classmethod
    def _levels(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not (0 < f <= 1.0) for f in v)):
            raise ValueError("must be a non-empty list of frequency fractions in (0, 1]")
        return v

    @field_validator("dvfs_ghz")
    @classmethod
    def _ghz(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not (f > 0 and math.isfinite(f)) for f in v)):
            raise ValueError("must be a non-empty list of frequencies in GHz, each > 0")
        return v

    @model_validator(mode="after")
    def _one_dvfs(self) -> DeviceEntry:
        if self.dvfs_levels is not None and self.dvfs_ghz is not None:
            raise ValueError("give either 'dvfs_levels' (fractions) or 'dvfs_ghz', not both")
        return self


class LinkEmulationEntry(_Strict):
    """``emulate:`` of a link or medium: the figures the testbed emulates, if not the priced ones."""

    bandwidth_mbps: float = Field(gt=0)
    latency_ms: float = Field(default=0.0, ge=0)

    def spec(self) -> LinkEmulation:
        return LinkEmulation(mbps_to_Bps(self.bandwidth_mbps), self.latency_ms / 1000.0)


class LinkEntry(_Strict):
    src: str
    dst: str
    bidirectional: bool = True
    bandwidth_mbps: float | None = Field(default=None, gt=0)
    latency_ms: float = Field(default=0.0, ge=0)
    trace: str | None = None
    # failures per hour; a bidirectional entry gives each direction this rate
    failure_rate_per_h: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    emulate: LinkEmulationEntry | None = None


class MediumEntry(_Strict):
    name: str = Field(min_length=1)
    members: list[str]
    bandwidth_mbps: float | None = Field(default=None, gt=0)
    latency_ms: float = Field(default=0.0, ge=0)
    trace: str | None = None
    emulate: LinkEmulationEntry | None = None


class ClusterFile(_Strict):
    name: str
    source: str
    token: str | None = None
    devices: list[DeviceEntry] = Field(default_factory=list)
    socs: list[SocEntry] = Field(default_factory=list)
    links: list[LinkEntry] = Field(default_factory=list)
    media: list[MediumEntry] = Field(default_factory=list)


# ----- error formatting ----------------------------------------------------------------------


def _loc_path(loc: tuple[Any, ...]) -> str:
    """``('devices', 1, 'speed', 'gflops')`` -> ``devices[1].speed.gflops``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        return f"unknown field (got {err.get('input')!r})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        bound = next(iter(ctx.values()), "?")
        bound = f"{bound:g}" if isinstance(bound, int | float) else bound
        return f"must be {op} {bound} (got {err.get('input')!r})"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    shown = repr(err.get("input"))
    return msg if shown in msg else f"{msg} (got {shown})"


# ----- the loader ------------------------------------------------------------------------------


def cluster_from_dict(
    data: Mapping[str, Any], *, origin: str = "<cluster>", base_dir: str | Path | None = None
) -> Cluster:
    """Validate a parsed cluster document and convert it to a :class:`Cluster`.

    ``base_dir`` resolves relative ``profile:`` and ``trace:`` paths (the YAML file's folder).
    """
    if not isinstance(data, Mapping):
        raise InputError(
            f"{origin}: a cluster file must hold a mapping (got {type(data).__name__})"
        )
    try:
        spec = ClusterFile.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _fail(origin, _loc_path(tuple(err["loc"])), _pydantic_message(err)) from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not spec.devices and not spec.socs:
        raise _fail(origin, "devices", "give at least one device (under 'devices' or 'socs')")

    plain = [d.name for d in spec.devices]
    groups, handoffs, socs = expand_socs(spec.socs, origin)
    # a link or the source may name a SoC: it stands for each of its core groups (links) or
    # the group of its first core (source); see coinfer.cluster.socs
    soc_groups = {s.name: [g.name for g in groups if g.soc == s.name] for s in socs}
    names = plain + [g.name for g in groups]
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen or n in soc_groups:
            at = f"devices[{i}].name" if i < len(plain) else "socs"
            raise _fail(origin, at, f"duplicate device name (got {n!r})")
        seen.add(n)
    soc_names = [s.name for s in socs]
    for j, n in enumerate(soc_names):
        if n in seen or n in soc_names[:j]:
            raise _fail(origin, f"socs[{j}].name", f"duplicate device name (got {n!r})")
    source = next((s.source_group for s in socs if s.name == spec.source), spec.source)
    if source not in seen:
        shown = ", ".join(plain + list(soc_groups))
        raise _fail(origin, "source", f"not a device (got {spec.source!r}; devices: {shown})")

    devices = tuple(_device(d, i, origin, base) for i, d in enumerate(spec.devices)) + groups

    links: list[LinkSpec] = []
    traces: dict[Any, BandwidthTrace] = {}
    pairs: dict[tuple[str, str], int] = {}
    for j, lk in enumerate(spec.links):
        for end in ("src", "dst"):
            v = getattr(lk, end)
            if v not in seen and v not in soc_groups:
                raise _fail(
                    origin,
                    f"links[{j}].{end}",
                    f"unknown device (got {v!r}; devices: {', '.join(plain + list(soc_groups))})",
                )
        if lk.src == lk.dst:
            raise _fail(
                origin, f"links[{j}]", f"a link needs two different devices (got {lk.src!r} twice)"
            )
        bw, trace, trace_path = rate_and_trace(
            lk.bandwidth_mbps, lk.trace, base, origin, f"links[{j}]"
        )
        directions = (
            [(lk.src, lk.dst), (lk.dst, lk.src)] if lk.bidirectional else [(lk.src, lk.dst)]
        )
        directions = [
            (a, b)
            for u, v in directions
            for a in soc_groups.get(u, [u])
            for b in soc_groups.get(v, [v])
        ]
        for a, b in directions:
            if (a, b) in pairs:
                raise _fail(
                    origin, f"links[{j}]", f"duplicate link {a}->{b} (also links[{pairs[(a, b)]}])"
                )
            pairs[(a, b)] = j
            links.append(
                LinkSpec(
                    a,
                    b,
                    bw,
                    lk.latency_ms / 1000.0,
                    trace_path,
                    failure_rate_per_h=lk.failure_rate_per_h,
                    emulate=None if lk.emulate is None else lk.emulate.spec(),
                )
            )
            if trace is not None:
                traces[(a, b)] = trace

    # media join plain devices only: a SoC's groups talk through its shared memory
    media = parse_media(spec.media, set(plain), plain, origin, base, traces)
    cluster = Cluster(
        name=spec.name,
        devices=devices,
        links=tuple(links) + handoffs,
        source=source,
        token=spec.token,
        traces=traces,
        origin=origin,
        media=media,
        socs=socs,
    )
    check_connected(origin, names, source, list(cluster.all_links))
    return cluster


def _device(d: DeviceEntry, i: int, origin: str, base: Path) -> DeviceSpec:
    profile = None
    if d.speed.profile is not None:
        pp = Path(d.speed.profile)
        pp = pp if pp.is_absolute() else base / pp
        if not pp.exists():
            raise _fail(
                origin, f"devices[{i}].speed.profile", f"file not found (got {d.speed.profile!r})"
            )
        profile = str(pp.resolve())
    features = None
    if d.speed.predict is not None:
        pr = d.speed.predict
        threads = (
            pr.threads if pr.threads is not None else (d.emulate.threads if d.emulate else pr.cores)
        )
        features = DeviceFeatures(
            cores=pr.cores,
            threads=threads,
            freq_ghz=pr.freq_ghz,
            # no quota given: the device's own cores are all available
            quota=pr.quota if pr.quota is not None else float(pr.cores),
            mem_bandwidth_Bps=None
            if pr.mem_bandwidth_gbps is None
            else pr.mem_bandwidth_gbps * BYTES_PER_S_PER_GBPS,
            peak_gflops=pr.peak_gflops,
        )
    try:
        levels = dvfs_fractions(d.dvfs_levels, d.dvfs_ghz)
    except DvfsError as exc:
        raise _fail(origin, f"devices[{i}].{exc.field}", str(exc)) from None
    power = d.power or PowerEntry()
    return DeviceSpec(
        name=d.name,
        kind=d.kind,
        mem_bytes=d.memory,
        gflops=d.speed.gflops,
        profile=profile,
        features=features,
        power_idle_w=power.idle,
        power_active_w=power.active,
        power_transmit_w=power.transmit,
        dvfs_levels=levels,
        emulate=None if d.emulate is None else Emulation(d.emulate.cpu_quota, d.emulate.threads),
        speed_scale=d.speed.scale,
        piece_scales=tuple(
            PieceScale(p.model, p.pieces, p.first, p.last, p.scale) for p in d.speed.pieces
        ),
        failure_rate_per_h=d.failure_rate_per_h,
    )


def load_cluster(path: str | Path) -> Cluster:
    """Read and validate a cluster YAML file.

    Parameters
    ----------
    path
        The YAML file; relative ``profile:`` / ``trace:`` paths inside it are resolved against
        its folder.

    Raises
    ------
    InputError
        One line naming the file, the field path and the bad value.
    """
    p = Path(path)
    text = read_text(p, "cluster file")
    return cluster_from_yaml(text, origin=str(p), base_dir=p.parent)


def cluster_from_yaml(
    text: str, *, origin: str = "<cluster>", base_dir: str | Path | None = None
) -> Cluster:
    """Parse cluster YAML text (see :func:`load_cluster`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InputError(f"{origin}: not valid YAML ({where}{problem})") from None
    except RecursionError:
        raise InputError(f"{origin}: YAML nested too deeply") from None
    if data is None:
        raise InputError(f"{origin}: the file is empty")
    return cluster_from_dict(data, origin=origin, base_dir=base_dir)


__all__ = [
    "ClusterFile",
    "cluster_from_dict",
    "cluster_from_yaml",
    "load_cluster",
    "load_trace",
]
