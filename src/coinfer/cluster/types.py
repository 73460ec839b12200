"""In-memory cluster types: devices, directed links, bandwidth traces, the cluster itself.

Everything here is already in coinfer's base units (seconds, bytes, bytes per second); the YAML
parser in :mod:`coinfer.cluster.load` is the only place that converts from human units. All types
are frozen so a cluster can be shared by planners, the simulator and the runtime without copies.

Why one module: these are the in-memory forms of one file's schema — a device, a link, a medium,
their calibrated corrections (per piece range, and what the testbed emulates) and the cluster
holding them — and each ``to_dict`` must round-trip through :mod:`coinfer.cluster.load`
together; split, the schema would live in as many places as it has blocks.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from ..errors import InputError
from .units import BYTES_PER_S_PER_GBPS, Bps_to_mbps

DeviceKind = Literal["cpu", "gpu", "npu", "core"]
DEVICE_KINDS: tuple[str, ...] = ("cpu", "gpu", "npu", "core")


@dataclass(frozen=True, slots=True)
class DeviceFeatures:
    """What the affinity predictor knows about a device (the ``speed.predict`` block).

    ``quota`` is the CPU share in cores (a cgroup quota of 50 ms per 100 ms period is 0.5);
    ``threads`` the intra-op threads the runtime uses there; ``freq_ghz`` the core clock.
    """

    cores: int = 1
    threads: int = 1
    freq_ghz: float | None = None
    quota: float = 1.0
    mem_bandwidth_Bps: float | None = None
    peak_gflops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cores": self.cores, "threads": self.threads, "quota": self.quota}
        if self.freq_ghz is not None:
            out["freq_ghz"] = self.freq_ghz
        if self.mem_bandwidth_Bps is not None:
            out["mem_bandwidth_gbps"] = self.mem_bandwidth_Bps / BYTES_PER_S_PER_GBPS
        if self.peak_gflops is not None:
            out["peak_gflops"] = self.peak_gflops
        return out


@dataclass(frozen=True, slots=True)
class Emulation:
    """How the local testbed emulates this device: a cgroup CPU quota (cores), a thread count
    and, for a SoC's core group, the host CPUs its threads are pinned to (``None``: the runtime
    packs one-thread devices onto CPUs itself)."""

    cpu_quota: float = 1.0
    threads: int = 1
    cpus: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu_quota": self.cpu_quota, "threads": self.threads}
        if self.cpus is not None:
            out["cpus"] = list(self.cpus)
        return out


@dataclass(frozen=True, slots=True)
class PieceScale:
    """A calibrated correction of pieces ``first..last`` of one model on a device, on top of
    ``speed_scale`` (``coinfer calibrate`` measures every device on several piece ranges).

    Why per range: one factor per device is not enough. The same device's measured/priced ratio
    differs by piece range, most on small models (MobileNetV2 on d0: 0.42 on its first quarter,
    0.90-0.98 on the other three). Valid only for the model it was measured with, cut into the
    same number of ``pieces``; any other model or cut uses ``speed_scale`` alone.
    """

    model: str
    pieces: int
    first: int
    last: int
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def piece_scales_of(model: str, factors: Sequence[float]) -> tuple[PieceScale, ...]:
    """The inverse of :func:`piece_factors`: per-piece multipliers of ``model`` (rounded to 4
    decimals) as entries, each run of equal factors one range; none when every factor is 1."""
    runs: list[PieceScale] = []
    for i, f in enumerate(round(x, 4) for x in factors):
        if runs and runs[-1].scale == f and runs[-1].last == i - 1:
            runs[-1] = replace(runs[-1], last=i)
        else:
            runs.append(PieceScale(model, len(factors), i, i, f))
    return () if all(p.scale == 1.0 for p in runs) else tuple(runs)


def piece_factors(scales: tuple[PieceScale, ...], model: str, pieces: int) -> list[float] | None:
    """Per-piece multipliers of ``model`` cut into ``pieces`` (1.0 where no range covers a
    piece), or ``None`` when no entry is for this model and cut."""
    mine = [s for s in scales if s.model == model and s.pieces == pieces]
    if not mine:
        return None
    out = [1.0] * pieces
    for s in mine:
        for i in range(max(0, s.first), min(pieces - 1, s.last) + 1):
            out[i] = s.scale
    return out


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device of a cluster, with every figure the cost model, planners and runtime need.

    Speed can be given three ways (the cost model prefers them in this order): ``profile``
    (path of a measured profile file), ``features`` (inputs for the affinity predictor), and
    ``gflops`` (effective GFLOP/s for the analytic FLOPs / speed fallback).
    ``dvfs_levels`` are frequency fractions of the maximum (1.0 = f_max), sorted ascending.
    ``speed_scale`` multiplies every piece time from any of the three (``speed.scale``: a
    measured calibration, see ``coinfer calibrate``; 1.0 = as priced); ``piece_scales``
    (``speed.pieces``) refine it per piece range for the model it was calibrated with.
    ``failure_rate_per_h``: expected failures per hour (0 = reliable; see docs/clusters.md).
    ``soc`` and ``cores``: a core group of a multi-core SoC (``socs:`` in the file, expanded by
    :mod:`coinfer.cluster.socs`) names its SoC and the cores it holds; empty for a plain device.
    """

    name: str
    kind: DeviceKind = "cpu"
    mem_bytes: int = 1 << 30
    gflops: float | None = None
    profile: str | None = None
    features: DeviceFeatures | None = None
    power_idle_w: float | None = None
    power_active_w: float | None = None
    power_transmit_w: float | None = None
    dvfs_levels: tuple[float, ...] = (1.0,)
    emulate: Emulation | None = None
    speed_scale: float = 1.0
    failure_rate_per_h: float = 0.0
    soc: str | None = None
    cores: tuple[str, ...] = ()
    piece_scales: tuple[PieceScale, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The YAML-schema form of this device (round-trips through the parser)."""
        speed: dict[str, Any] = {}
        if self.gflops is not None:
            speed["gflops"] = self.gflops
        if self.profile is not None:
            speed["profile"] = self.profile
        if self.features is not None:
            speed["predict"] = self.features.to_dict()
        if self.speed_scale != 1.0:
            speed["scale"] = self.speed_scale
        if self.piece_scales:
            speed["pieces"] = [p.to_dict() for p in self.piece_scales]
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "speed": speed,
            "memory": self.mem_bytes,
        }
        power = {
            k: v
            for k, v in (
                ("idle", self.power_idle_w),
                ("active", self.power_active_w),
                ("transmit", self.power_transmit_w),
            )
            if v is not None
        }
        if power:
            out["power"] = power
        if self.dvfs_levels != (1.0,):
            out["dvfs_levels"] = list(self.dvfs_levels)
        if self.emulate is not None:
            out["emulate"] = self.emulate.to_dict()
        if self.failure_rate_per_h:
            out["failure_rate_per_h"] = self.failure_rate_per_h
        return out


@dataclass(frozen=True, slots=True)
class LinkEmulation:
    """The figures the local testbed's emulation applies to a link or medium, where they differ
    from the ones the cost model prices (``emulate:`` in the file).

    Why: ``coinfer calibrate`` fits each link's priced latency and bandwidth to what transfers
    really took, which includes the transport's own per-message cost. Emulating the fitted
    figures would add that cost a second time; so the calibrated file keeps the configured
    figures here and a run of it emulates the same testbed it was calibrated on."""

    bandwidth_Bps: float
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bandwidth_mbps": Bps_to_mbps(self.bandwidth_Bps),
            "latency_ms": self.latency_s * 1000.0,
        }


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A directed link ``src -> dst``; ``x`` bytes take ``latency_s + x / bandwidth_Bps``.

    ``bandwidth_Bps`` is the nominal rate (the time-weighted trace mean when only a trace was
    given); ``trace`` is the resolved path of the bandwidth trace CSV, if any.
    ``failure_rate_per_h``: expected failures per hour of this direction (0 = reliable).
    ``emulate``: what the testbed's emulation applies instead, if it differs (:class:`LinkEmulation`).
    """

    src: str
    dst: str
    bandwidth_Bps: float
    latency_s: float = 0.0
    trace: str | None = None
    medium: str | None = None
    failure_rate_per_h: float = 0.0
    emulate: LinkEmulation | None = None

    @property
    def pair(self) -> tuple[str, str]:
        return (self.src, self.dst)

    @property
    def emulated(self) -> tuple[float, float]:
        """``(bandwidth_Bps, latency_s)`` the testbed's emulation applies to this hop."""
        e = self.emulate
        return (self.bandwidth_Bps, self.latency_s) if e is None else (e.bandwidth_Bps, e.latency_s)

    def transfer_s(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` at the nominal bandwidth."""
        return self.latency_s + nbytes / self.bandwidth_Bps

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "src": self.src,
            "dst": self.dst,
            "bidirectional": False,
            "bandwidth_mbps": Bps_to_mbps(self.bandwidth_Bps),
            "latency_ms": self.latency_s * 1000.0,
        }
        if self.trace is not None:
            out["trace"] = self.trace
        if self.failure_rate_per_h:
            out["failure_rate_per_h"] = self.failure_rate_per_h
        if self.emulate is not None:
            out["emulate"] = self.emulate.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class MediumSpec:
    """A shared, half-duplex medium (a Wi-Fi cell, a hub) joining ``members``.

    Every ordered pair of members without a dedicated link talks over it at ``bandwidth_Bps``
    and ``latency_s``; all those transfers share the one capacity, in both directions."""

    name: str
    members: tuple[str, ...]
    bandwidth_Bps: float
    latency_s: float = 0.0
    trace: str | None = None
    emulate: LinkEmulation | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "members": list(self.members),
            "bandwidth_mbps": Bps_to_mbps(self.bandwidth_Bps),
            "latency_ms": self.latency_s * 1000.0,
        }
        if self.trace is not None:
            out["trace"] = self.trace
        if self.emulate is not None:
            out["emulate"] = self.emulate.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class BandwidthTrace:
    """Piecewise-constant bandwidth over time: ``bandwidth_Bps[i]`` holds from ``times_s[i]``.

    Before the first sample the first value holds; after the last sample the last value holds
    (a trace describes a window; we do not invent a periodicity the user did not give).
    """

    times_s: tuple[float, ...]
    bandwidth_Bps: tuple[float, ...]
    origin: str = "trace"

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.bandwidth_Bps):
            raise InputError(
                f"{self.origin}: a trace needs matching, non-empty time and bandwidth columns"
            )
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise InputError(f"{self.origin}: trace times must be strictly increasing")
        if any(not (bw > 0 and math.isfinite(bw)) for bw in self.bandwidth_Bps):
            raise InputError(f"{self.origin}: trace bandwidths must be finite and > 0")

    def at(self, t_s: float) -> float:
        """Bandwidth (bytes/s) in effect at time ``t_s``."""
        i = bisect.bisect_right(self.times_s, t_s) - 1
        return self.bandwidth_Bps[max(i, 0)]

    @property
    def duration_s(self) -> float:
        return self.times_s[-1] - self.times_s[0]

    def mean_Bps(self) -> float:
        """Time-weighted mean bandwidth over the trace window (the last sample counts when alone)."""
        if len(self.times_s) == 1:
            return self.bandwidth_Bps[0]
        total = 0.0
        for i in range(len(self.times_s) - 1):
            total += self.bandwidth_Bps[i] * (self.times_s[i + 1] - self.times_s[i])
        return total / self.duration_s

    def finish_s(self, start_s: float, nbytes: float) -> float:
        """Time at which ``nbytes`` sent from ``start_s`` have all left (integrating the trace)."""
        if nbytes <= 0:
            return start_s
        t, left = start_s, float(nbytes)
        i = max(bisect.bisect_right(self.times_s, t) - 1, 0)
        while True:
            bw = self.bandwidth_Bps[i]
            seg_end = self.times_s[i + 1] if i + 1 < len(self.times_s) else math.inf
            cap = (seg_end - t) * bw
            if cap >= left:
                return t + left / bw
            left -= cap
            t = seg_end
            i += 1


@dataclass(frozen=True, slots=True)
class SocSpec:
    """A multi-core SoC as declared (``socs:``): its name, the name of the core group where
    requests enter when the SoC is the source, and its entry in the YAML schema as canonical
    JSON (what :meth:`Cluster.to_dict` writes back; frozen text so the spec stays hashable)."""

    name: str
    source_group: str
    entry_json: str

    def to_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.entry_json))


@dataclass(frozen=True)
class Cluster:
    """Devices, directed links, shared media, the request source and the runtime's shared token.

    Built by :func:`coinfer.cluster.load_cluster` (validated) or directly in tests; links are
    always directed here (the parser expands ``bidirectional: true`` into two links). ``links``
    are the dedicated links; :attr:`all_links` adds the hops the media provide.
    ``traces`` are keyed by ``(src, dst)`` for a link and by the medium's name for a medium.
    """

    name: str
    devices: tuple[DeviceSpec, ...]
    links: tuple[LinkSpec, ...]
    source: str
    token: str | None = None
    traces: Mapping[tuple[str, str] | str, BandwidthTrace] = field(
        default_factory=dict, compare=False
    )
    origin: str = field(default="<memory>", compare=False)
    media: tuple[MediumSpec, ...] = ()
    socs: tuple[SocSpec, ...] = ()

    @cached_property
    def all_links(self) -> tuple[LinkSpec, ...]:
        """Every directed hop: the dedicated links, then one per ordered member pair of each
        medium that has no dedicated link (tagged with the medium's name)."""
        taken = {lk.pair for lk in self.links}
        out = list(self.links)
        for m in self.media:
            for u in m.members:
                for v in m.members:
                    if u != v and (u, v) not in taken:
                        out.append(
                            LinkSpec(
                                u,
                                v,
                                m.bandwidth_Bps,
                                m.latency_s,
                                m.trace,
                                m.name,
                                emulate=m.emulate,
                            )
                        )
        return tuple(out)

    @cached_property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @cached_property
    def _by_name(self) -> dict[str, DeviceSpec]:
        return {d.name: d for d in self.devices}

    @cached_property
    def _links_by_pair(self) -> dict[tuple[str, str], LinkSpec]:
        return {lk.pair: lk for lk in self.all_links}

    def device(self, name: str) -> DeviceSpec:
        """The device called ``name``; unknown names raise :class:`InputError` listing the valid ones."""
        dev = self._by_name.get(name)
        if dev is None:
            raise InputError(
                f"{self.origin}: no device {name!r} (devices: {', '.join(self.device_names)})"
            )
        return dev

    def link(self, src: str, dst: str) -> LinkSpec | None:
        """The direct hop ``src -> dst`` (a dedicated link, or over a shared medium) or ``None``."""
        return self._links_by_pair.get((src, dst))

    def trace(self, link: LinkSpec | tuple[str, str]) -> BandwidthTrace | None:
        """The bandwidth trace of a link (or ``(src, dst)`` pair), ``None`` if it has none; a hop
        over a medium follows the medium's trace."""
        if isinstance(link, LinkSpec) and link.medium is not None:
            return self.traces.get(link.medium)
        pair = link.pair if isinstance(link, LinkSpec) else tuple(link)
        return self.traces.get(pair)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The YAML-schema form (directed links; paths absolute) — parses back to an equal cluster."""
        out: dict[str, Any] = {"name": self.name, "source": self.source}
        if self.token is not None:
            out["token"] = self.token
        scaled = [
            d.name
            for d in self.devices
            if d.soc is not None and (d.speed_scale != 1.0 or d.piece_scales)
        ]
        if scaled:
            # a `socs:` entry has no per-group figures to write them into (coinfer calibrate)
            raise InputError(
                f"{self.origin}: core group {scaled[0]!r} has a calibrated speed scale, which a "
                "'socs:' entry cannot hold yet"
            )
        out["devices"] = [d.to_dict() for d in self.devices if d.soc is None]
        if self.socs:
            out["socs"] = [s.to_dict() for s in self.socs]
        out["links"] = self._links_to_dict()
        if self.media:
            out["media"] = [m.to_dict() for m in self.media]
        return out

    def _links_to_dict(self) -> list[dict[str, Any]]:
        """Directed link entries; a SoC's hand-offs are left out (its entry makes them again) and
        its groups' links to other devices fold back into one entry naming the SoC."""
        soc_of = {d.name: d.soc for d in self.devices if d.soc is not None}
        out: list[dict[str, Any]] = []
        done: set[tuple[str, str]] = set()
        for lk in self.links:
            a, b = soc_of.get(lk.src, lk.src), soc_of.get(lk.dst, lk.dst)
            if lk.src in soc_of and lk.dst in soc_of and a == b:
                continue
            if (a, b) in done:
                continue
            done.add((a, b))
            out.append({**lk.to_dict(), "src": a, "dst": b})
        return out

    def __repr__(self) -> str:
        return (
            f"Cluster({self.name!r}: devices={list(self.device_names)}, {len(self.links)} directed links, "
            f"{len(self.media)} media, "
            f"source={self.source!r})"
        )


__all__ = [
    "DEVICE_KINDS",
    "BandwidthTrace",
    "Cluster",
    "DeviceFeatures",
    "DeviceKind",
    "DeviceSpec",
    "Emulation",
    "LinkEmulation",
    "LinkSpec",
    "MediumSpec",
    "PieceScale",
    "SocSpec",
    "piece_factors",
    "piece_scales_of",
]
