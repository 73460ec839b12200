"""The CostModel: ``t[p][d]`` and transfer times for one model on one cluster, with provenance.

For each device the piece times come from the first available source in ``sources`` order:

``profile``
    a measured profile — the device's ``speed.profile`` file/folder (a profile of this model
    whose graph matches; or, when only the pieces differ, its node times summed per piece), or,
    for a locally emulated device (``emulate:``), a profile measured on this host under that
    device's CPU quota and threads (cached, so the second build is instant);
``predict``
    the affinity predictor, from the device's ``speed.predict`` features (or its ``emulate:``
    quota/threads);
``analytic``
    piece FLOPs / the device's effective ``gflops`` — instant, no torch work beyond capture;
    planner tests use this.

The Instance built from it records in ``meta["cost_source"]`` which source each device used, and
in ``meta["cost_detail"]`` why the earlier sources were skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cluster.types import Cluster, DeviceFeatures, DeviceSpec, piece_factors
from ..core.instance import Device, Instance, Link, Piece, network_of
from ..errors import InputError, parse_json, read_text
from .cache import graph_hash

SOURCES: tuple[str, ...] = ("profile", "predict", "analytic")
DEFAULT_SOURCES: tuple[str, ...] = SOURCES
# The analytic fallback charges every piece at least this long: even an empty piece costs a
# Python call and a tensor hand-off (~tens of microseconds measured for stage modules here).
ANALYTIC_MIN_PIECE_S = 1e-5


@dataclass(frozen=True)
class CostModel:
    """Per-piece, per-device compute seconds plus the cluster's links, and where each came from.

    ``times_s[p][d]`` is the time of piece ``p`` (0-based) on device ``d``; ``sources[d]`` is one
    of :data:`SOURCES`; ``details[d]`` explains the choice (file used, reasons others were skipped).
    """

    model: str
    graph: Any = field(repr=False, compare=False)
    cluster: Cluster = field(repr=False)
    times_s: tuple[Mapping[str, float], ...]
    sources: Mapping[str, str]
    details: Mapping[str, str] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    max_pieces: int | None = None

    def time_s(self, piece: int, device: str) -> float:
        return self.times_s[piece][device]

    def to_instance(
        self, *, request_source: str | None = None, name: str | None = None
    ) -> Instance:
        """The planning problem: pieces (time, memory, cut bytes), devices, links, source."""
        from ..graph.tiled import fusable_meta

        g = self.graph
        src = request_source or self.cluster.source
        if src not in self.cluster.device_names:
            raise InputError(
                f"request source {src!r} is not a device of {self.cluster.name} "
                f"(devices: {', '.join(self.cluster.device_names)})"
            )
        pieces = tuple(
            Piece(f"p{p.index}", dict(self.times_s[i]), int(p.mem_bytes), int(p.out_bytes))
            for i, p in enumerate(g.pieces)
        )
        meta = {
            "model": self.model,
            "cluster": self.cluster.name,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "max_pieces": self.max_pieces,
            "graph_hash": graph_hash(g),
            "cost_source": dict(self.sources),
            "cost_detail": dict(self.details),
            "piece_nodes": [[p.nodes[0], p.nodes[-1]] for p in g.pieces],
            **fusable_meta(g),  # the tileable leading pieces, for the fused planner
        }
        return Instance(
            pieces=pieces,
            input_bytes=int(g.input_bytes),
            devices=cluster_to_instance_devices(self.cluster),
            links=cluster_to_instance_links(self.cluster),
            source=src,
            name=name or f"{self.model}@{self.cluster.name}",
            meta=meta,
            media=network_of(self.cluster)[1],
            link_failure_per_h={
                lk.pair: lk.failure_rate_per_h for lk in self.cluster.links if lk.failure_rate_per_h
            },
        )


def cluster_to_instance_links(cluster: Cluster) -> tuple[Link, ...]:
    """The cluster's dedicated directed links as the Instance's links (nominal bandwidth,
    latency); its shared media go to the Instance's ``media`` (:func:`network_of`)."""
    return network_of(cluster)[0]


def cluster_to_instance_devices(cluster: Cluster) -> tuple[Device, ...]:
    """The cluster's devices as the Instance's devices (memory, power, DVFS, a core group's cores)."""
    return tuple(
        Device(
            name=d.name,
            mem_bytes=d.mem_bytes,
            power_idle_w=d.power_idle_w,
            power_active_w=d.power_active_w,
            power_transmit_w=d.power_transmit_w,
            dvfs_levels=d.dvfs_levels,
            failure_rate_per_h=d.failure_rate_per_h,
            cores=d.cores,
        )
        for d in cluster.devices
    )


# ----- per-source estimators (each returns piece times or raises _Unavailable) -------------------


class _Unavailable(Exception):
    """This source cannot price this device; the message says why (kept in cost_detail)."""


def analytic_times(graph: Any, device: DeviceSpec) -> list[float]:
    """FLOPs / effective GFLOP/s per piece (``speed.gflops``, else ``predict.peak_gflops``)."""
    gflops = device.gflops
    if gflops is None and device.features is not None and device.features.peak_gflops is not None:
        gflops = device.features.peak_gflops
    if gflops is None:
        raise _Unavailable("no 'gflops' (nor predict.peak_gflops) for the analytic model")
    return [max(p.flops / (gflops * 1e9), ANALYTIC_MIN_PIECE_S) for p in graph.pieces]


def device_features(device: DeviceSpec) -> DeviceFeatures | None:
    """Predictor features: the ``speed.predict`` block, else derived from ``emulate:``."""
    if device.features is not None:
        return device.features
    if device.emulate is not None:
        from .predictor import host_features

        return host_features(device.emulate.threads, device.emulate.cpu_quota)
    return None


def predicted_times(graph: Any, device: DeviceSpec, predictor: Any | None) -> list[float]:
    feats = device_features(device)
    if feats is None:
        raise _Unavailable("no 'predict' features or 'emulate' block")
    if predictor is None:
        from .predictor import default_predictor

        try:
            predictor = default_predictor()
        except InputError as exc:
            raise _Unavailable(str(exc)) from None
    ok, why = predictor.covers(feats)
    if not ok:
        raise _Unavailable(f"device outside the predictor's training data ({why})")
    return list(predictor.predict_graph(graph, feats).piece_s)


def _profile_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.json")) if path.is_dir() else [path]


def times_from_profile(graph: Any, profile: Mapping[str, Any]) -> list[float] | None:
    """Piece times for ``graph`` from a profile: exact piece match, else node sums (or ``None``)."""
    if profile.get("graph_hash") == graph_hash(graph) and len(profile.get("pieces", ())) == len(
        graph.pieces
    ):
        return [float(p["time_s"]) for p in profile["pieces"]]
    node_t = {r["name"]: float(r["time_s"]) for r in profile.get("nodes", ())}
    if not node_t or any(n.name not in node_t for n in graph.nodes):
        return None
    # stage execution is cheaper than timing node by node; keep the profile's own ratio
    nsum = float(profile.get("nodes_sum_s") or 0.0)
    ratio = float(profile.get("pieces_sum_s") or nsum) / nsum if nsum > 0 else 1.0
    return [ratio * sum(node_t[n] for n in p.nodes) for p in graph.pieces]


def profiled_times(
    spec: str,
    graph: Any,
    device: DeviceSpec,
    *,
    input_shape: Sequence[int] | None,
    max_pieces: int | None,
    profile_options: Mapping[str, Any],
) -> tuple[list[float], str]:
    if device.profile is not None:
        for f in _profile_files(Path(device.profile)):
            data = parse_json(read_text(f, f"profile of device {device.name!r}"), str(f))
            if not isinstance(data, dict):
                raise InputError(f"{f}: a profile must hold a JSON object")
            if data.get("model") != spec:
                continue
            times = times_from_profile(graph, data)
            if times is not None:
                return times, f"profile file {f}"
        if device.emulate is None:
            raise _Unavailable(f"no profile of {spec!r} matching this graph in {device.profile}")
    if device.emulate is None:
        raise _Unavailable("no 'profile' file and not an emulated local device")
    from .profiler import profile_model

    data, hit = profile_model(
        spec,
        input_shape=input_shape,
        max_pieces=max_pieces,
        threads=device.emulate.threads,
        quota=device.emulate.cpu_quota,
        graph=graph,
        **dict(profile_options),
    )
    times = times_from_profile(graph, data)
    if times is None:
        raise _Unavailable("the local profile does not match the captured graph")
    how = "cached" if hit else "measured"
    return (
        times,
        f"local profile ({how}, quota {device.emulate.cpu_quota:g}, {device.emulate.threads} thread(s), {data.get('emulation')})",
    )


# ----- the entry points ---------------------------------------------------------------------------


def _source_order(source: str | None, sources: Sequence[str]) -> tuple[str, ...]:
    if source in (None, "auto"):
        order = tuple(sources)
    elif source in SOURCES:
        order = (source,)
    else:
        raise InputError(f"unknown cost source {source!r} (valid: auto, {', '.join(SOURCES)})")
    bad = [s for s in order if s not in SOURCES]
    if bad or not order:
        raise InputError(f"unknown cost source(s) {bad} (valid: {', '.join(SOURCES)})")
    return order


def _piece_scaled(times: list[float], dev: DeviceSpec, model_spec: str) -> tuple[list[float], str]:
    """``times`` with ``dev``'s per-range calibration of ``model_spec`` applied, and a note for
    the details; a calibration of another cut of this model is ignored, and said so."""
    factors = piece_factors(dev.piece_scales, model_spec, len(times))
    if factors is not None:
        return [t * f for t, f in zip(times, factors, strict=True)], ", per-range calibration"
    other = {p.pieces for p in dev.piece_scales if p.model == model_spec}
    if other:
        return times, (
            f", per-range calibration ignored (made for {sorted(other)} pieces, not {len(times)})"
        )
    return times, ""


def build_cost_model(
    model_spec: str,
    cluster: Cluster,
    *,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
    source: str | None = None,
    sources: Sequence[str] = DEFAULT_SOURCES,
    predictor: Any | None = None,
    profile_options: Mapping[str, Any] | None = None,
    graph: Any | None = None,
    notice: Callable[[str], None] | None = None,
) -> CostModel:
    """Capture ``model_spec`` and price every piece on every device of ``cluster``.

    Parameters
    ----------
    source
        ``None``/``"auto"``: per device, the first available of ``sources``; or one of
        ``"profile"``, ``"predict"``, ``"analytic"`` to force it (a device it cannot price is an error).
    profile_options
        Passed to :func:`coinfer.profile.profiler.profile_model` (``repeats``, ``progress``, ...).
    graph
        An already captured graph of ``model_spec`` (skips capture).

    Raises
    ------
    InputError
        Bad spec/shape, or a device no allowed source can price (the message names the device
        and every source's reason).
    """
    order = _source_order(source, sources)
    shape = tuple(int(d) for d in input_shape) if input_shape else None
    if graph is None:
        from ..graph import capture
        from ..zoo import load_model

        model, inputs = load_model(model_spec, shape)
        graph = capture(model, inputs, max_pieces=max_pieces, name=model_spec)
    per_device: dict[str, list[float]] = {}
    used: dict[str, str] = {}
    details: dict[str, str] = {}
    for dev in cluster.devices:
        reasons: list[str] = []
        for s in order:
            try:
                if s == "analytic":
                    times, why = (
                        analytic_times(graph, dev),
                        f"{dev.gflops or '?'} GFLOP/s effective",
                    )
                elif s == "predict":
                    times, why = predicted_times(graph, dev, predictor), "affinity predictor"
                else:
                    times, why = profiled_times(
                        model_spec,
                        graph,
                        dev,
                        input_shape=shape,
                        max_pieces=max_pieces,
                        profile_options={"notice": notice, **(profile_options or {})},
                    )
            except _Unavailable as exc:
                reasons.append(f"{s}: {exc}")
                continue
            if dev.speed_scale != 1.0:
                times = [t * dev.speed_scale for t in times]
                why += f", x {dev.speed_scale:g} (calibrated speed.scale)"
            times, note = _piece_scaled(times, dev, model_spec)
            why += note
            per_device[dev.name] = times
            used[dev.name] = s
            details[dev.name] = "; ".join([f"{s}: {why}", *[f"skipped {r}" for r in reasons]])
            break
        else:
            raise InputError(
                f"{cluster.origin}: device {dev.name!r} cannot be priced for {model_spec} ("
                + "; ".join(reasons)
                + ")"
            )
    times_s = tuple(
        {d: per_device[d][i] for d in cluster.device_names} for i in range(len(graph.pieces))
    )
    return CostModel(model_spec, graph, cluster, times_s, used, details, shape, max_pieces)


def build_instance(
    model_spec: str,
    cluster: Cluster,
    *,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
    source: str | None = None,
    sources: Sequence[str] = DEFAULT_SOURCES,
    request_source: str | None = None,
    predictor: Any | None = None,
    profile_options: Mapping[str, Any] | None = None,
    notice: Callable[[str], None] | None = None,
) -> Instance:
    """The Instance (cost model as data) of ``model_spec`` on ``cluster``; see :func:`build_cost_model`.

    ``source`` selects the cost source (``"auto"`` = first available of ``sources`` per device);
    ``request_source`` overrides the device where requests arrive (default ``cluster.source``).
    ``meta`` records the model spec, the cost source per device and why.
    """
    cm = build_cost_model(
        model_spec,
        cluster,
        input_shape=input_shape,
        max_pieces=max_pieces,
        source=source,
        sources=sources,
        predictor=predictor,
        profile_options=profile_options,
        notice=notice,
    )
    return cm.to_instance(request_source=request_source)


__all__ = [
    "DEFAULT_SOURCES",
    "SOURCES",
    "CostModel",
    "analytic_times",
    "build_cost_model",
    "build_instance",
    "cluster_to_instance_devices",
    "cluster_to_instance_links",
    "device_features",
    "times_from_profile",
]
