"""Calibration: short probes through the real runtime, turned into the cluster's figures.

Why: a profile is measured one device at a time; in a run the devices share machines, caches and
the coordinator, and each message costs a little more than its link (the transport's own work).
The planners can only be as right as their figures, so ``coinfer calibrate`` runs the model for
real on every device at once and writes back what it measured:

- **compute**: a pipeline over every device (equal piece counts, :func:`even_pipeline`);
  each device's measured stage time over the cost model's time for the same pieces
  becomes ``speed.scale`` (multiplied into whatever prices the device: profile, predictor or
  FLOPs). Probes with the device order rotated (up to four: on the 4-device testbed every device
  computes every range once) give every device several piece ranges; the scale is the geometric
  mean of its ranges' ratios, and each range's own ratio over that mean, shrunk towards 1 by what
  the probes' noise explains (:class:`Shrinkage`, the noise measured by repeating the first
  probe), becomes a ``speed.pieces`` entry for this model. Why both: the ratio depends on the
  range as much as on the device (MobileNetV2 on the testbed's d0: 0.42 on its first quarter,
  0.90-0.98 on the other three; the same first quarter used 6.7 ms of CPU per request on d0 and
  16 ms on the 0.2-core d3), and one factor per device priced the plan that gave d0 the late
  pieces a third too fast. (Most of that first-quarter gap was the workers' allocator faulting
  fresh pages in every request, removed since: :mod:`coinfer.profile.allocator`.)
- **half ranges** (``offsets``, off by default): as many probes again with the boundaries in
  the middles of the ranges (:func:`offset_probes`). A range's factor spreads evenly over its
  pieces, and a plan cutting inside a range was priced by the profile's split of it
  (MobileNetV2's first six pieces on d1: 13 ms priced, 23.5 ms measured, in a quarter priced
  right); the offset stages' times and the even ranges' prices are fitted together
  (:func:`reprice_offsets`), so every half range costs what it measured. Off by default: on the
  testbed it did not move the fidelity misses (MobileNetV2's ``dp`` stayed ~+26 %, whose cause
  was plan-dependent allocator cost, :mod:`coinfer.profile.allocator`), and it doubles the probes.
- **links**: each hop's transfers (sender's clock: emulated delay plus the real send) are fitted
  to ``latency + bytes / bandwidth`` when the probes sent two clearly different sizes over it,
  else only the latency absorbs the per-message overhead. Links no probe used keep their figures.
  A shared medium is fitted the same way from the transfers of all its hops pooled (each hop's
  event starts when it got the medium, so queueing for the air is not in the sample). The fit
  only prices: a refitted link keeps its configured figures as what the testbed emulates.

The fitting is pure (:func:`fit_devices`, :func:`fit_link`, :func:`apply`), tested on hand-made
traces; :func:`calibrate` is the part that starts processes.

Why one module: the probe plans, the fits of their traces (devices, ranges and their shrinkage,
links and media) and how a fit rewrites a cluster are one procedure over one record
(:class:`Calibration`): each fit depends on how the probes were laid out, and ``apply`` on what
each fit keeps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..cluster.types import (
    Cluster,
    DeviceSpec,
    LinkEmulation,
    PieceScale,
    piece_factors,
    piece_scales_of,
)
from ..core.instance import Instance
from ..core.plans import Metrics, Plan, Stage
from ..errors import InputError
from .refine import StageTime, probe_ranges, reprice, stage_times

# A link's sizes must differ by this factor before bandwidth and latency are fitted separately.
MIN_SIZE_SPREAD = 1.5
# Fewer transfers than this over a link say too little to change its figures.
MIN_TRANSFERS = 3
# Probes per calibration: device orders rotated over the same piece ranges (capped by the count
# of devices). Four gives the 4-device testbed every (device, range) pair; each probe is one run.
DEFAULT_ROTATIONS = 4


@dataclass(frozen=True, slots=True)
class RangeFit:
    """A piece range one device computed in the probes: each probe's measured / priced ratio
    (``samples``; two when the repeated probe ran it) and their geometric mean."""

    first: int
    last: int
    ratio: float
    samples: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class DeviceFit:
    """``ratios``: measured / priced compute per probe; ``ratio``: the geometric mean over the
    device's ranges (each once); new scale = old x ratio. ``ranges``: every piece range the probes
    gave the device."""

    device: str
    ratios: tuple[float, ...]
    ratio: float
    old_scale: float
    new_scale: float
    ranges: tuple[RangeFit, ...] = ()


@dataclass(frozen=True, slots=True)
class Shrinkage:
    """How much of the ranges' spread around their device's mean is kept (``keep``: 1 = all,
    0 = one factor per device) and the noise it was judged against (``noise_sd``: the standard
    deviation of one probe's log ratio, from the ranges probed twice; ``None``: none were).

    Why: every (device, range) ratio is one probe on a shared host, and probes drift by 6-10 %
    between runs (MobileNetV2 and Inception each calibrated twice). The optimising planners then
    pick exactly the ranges whose noise came out low: with the ranges unshrunk, dp's and pico's
    plans on 7 zoo CNNs were priced +8 % too fast in the median (up to +30 %) while the fixed
    plans (even, memory, single) stayed at +0.7 %. Multiplying each range's log deviation by
    ``keep = 1 - noise^2 / spread^2`` (positive part; James-Stein) keeps a structural gap
    (MobileNetV2's first quarter on d0) and drops what the noise alone explains."""

    keep: float
    noise_sd: float | None
    spread_sd: float


@dataclass(frozen=True, slots=True)
class LinkFit:
    """A hop's configured and fitted figures; ``how`` says which fit was possible."""

    src: str
    dst: str
    transfers: int
    bandwidth_Bps: float
    latency_s: float
    fitted_bandwidth_Bps: float
    fitted_latency_s: float
    how: str  # "bandwidth+latency" | "latency" | "unchanged"
    medium: str | None = None  # a shared medium's fit (its hops pooled; src/dst are "*")

    @property
    def label(self) -> str:
        return f"medium {self.medium}" if self.medium is not None else f"{self.src}->{self.dst}"


@dataclass(frozen=True)
class Calibration:
    """What the probes measured; ``pieces`` is the model's piece count the ranges refer to
    (0: no per-range figures)."""

    model: str
    requests: int
    devices: tuple[DeviceFit, ...]
    links: tuple[LinkFit, ...]
    probes: tuple[str, ...]
    pieces: int = 0
    shrinkage: Shrinkage | None = None
    offsets: tuple[StageTime, ...] = ()
    offset_shrinkage: Shrinkage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "requests": self.requests,
            "pieces": self.pieces,
            "shrinkage": None if self.shrinkage is None else asdict(self.shrinkage),
            "probes": list(self.probes),
            "devices": [asdict(d) for d in self.devices],
            "offsets": [asdict(o) for o in self.offsets],
            "offset_shrinkage": None
            if self.offset_shrinkage is None
            else asdict(self.offset_shrinkage),
            "links": [asdict(lk) for lk in self.links],
        }


def even_pipeline(instance: Instance, devices: Sequence[str]) -> Plan:
    """Every device one stage, in ``devices`` order, on contiguous piece ranges of equal count:
    a probe that keeps every device busy at once, whatever it predicts."""
    n, k = len(instance.pieces), len(devices)
    bounds = [round(i * n / k) for i in range(k + 1)]
    stages = tuple(
        Stage(bounds[i], bounds[i + 1] - 1, (devices[i],))
        for i in range(k)
        if bounds[i + 1] > bounds[i]
    )
    return Plan("calibrate", "throughput", stages, Metrics(0.0, 0.0))


def offset_pipeline(instance: Instance, devices: Sequence[str], late: bool = False) -> Plan | None:
    """:func:`even_pipeline` with its boundaries at the middles of its ranges instead: the first
    ``k - 1`` middles (the first stage half a range, the last one and a half), or with ``late``
    the last ``k - 1`` (the first stage one and a half, the last half a range). Together with the
    even pipeline they price every half range. ``None`` when the model has fewer than two pieces
    per device (the halves would be empty)."""
    n, k = len(instance.pieces), len(devices)
    if k < 2 or n < 2 * k:
        return None
    middles = [round((i - 0.5) * n / k) for i in range(1, k + 1)]
    bounds = [0, *(middles[1:] if late else middles[:-1]), n]
    stages = tuple(Stage(bounds[i], bounds[i + 1] - 1, (devices[i],)) for i in range(k))
    return Plan("calibrate-late" if late else "calibrate-offset", "throughput", stages,
                Metrics(0.0, 0.0))  # fmt: skip


def offset_probes(
    instance: Instance, devices: Sequence[str], rotations: int = DEFAULT_ROTATIONS
) -> list[Plan]:
    """The offset probes: as many device orders as :func:`probe_plans` gives, alternately the
    early and the late :func:`offset_pipeline`. On four devices with four rotations every device
    gets a stage ending in the middle of every range (early shifts 0 and 2 cut the first three
    middles, late shifts 1 and 3 the last three); with the early pipeline alone the last range
    was never cut, and MobileNetV2's dp put pieces 58-63 on d3, priced by the profile's split of
    48-63 at 12.0 ms, measured 15.0."""
    early = offset_pipeline(instance, devices)
    late = offset_pipeline(instance, devices, late=True)
    if early is None or late is None:
        return []
    pairs = zip(probe_plans(early, rotations), probe_plans(late, rotations), strict=True)
    return [e if i % 2 == 0 else lt for i, (e, lt) in enumerate(pairs)]


def probe_plans(base: Plan, rotations: int = DEFAULT_ROTATIONS, repeat: bool = False) -> list[Plan]:
    """``base`` (a pipeline over every device) and the same piece ranges with the devices
    rotated: ``rotations`` probes with shifts spread evenly over the device count (2 on four
    devices: shifts 0 and 2; 4: every device computes every range once). ``repeat`` adds
    ``base`` once more at the end, whose differences from the first measure the probes' noise."""
    devs = [st.devices[0] for st in base.stages]
    k = len(devs)
    shifts = sorted({round(i * k / max(1, rotations)) % k for i in range(max(1, rotations))})
    out = [base]
    for shift in shifts:
        if shift == 0:
            continue
        rotated = devs[shift:] + devs[:shift]
        stages = tuple(
            Stage(st.first, st.last, (d,)) for st, d in zip(base.stages, rotated, strict=True)
        )
        out.append(Plan(f"{base.algo}-rot{shift}", base.objective, stages, Metrics(0.0, 0.0)))
    if repeat:
        out.append(replace(base, algo="calibrate-repeat"))
    return out


def fit_devices(
    runs: Sequence[tuple[Plan, Sequence[Any]]],
    instance: Instance,
    old_scale: Mapping[str, float],
) -> tuple[DeviceFit, ...]:
    """Per device, measured median stage time / the instance's time for that stage, per probe
    and per piece range (a range probed twice keeps both samples and their geometric mean)."""
    ratios: dict[str, list[float]] = {}
    by_range: dict[str, dict[tuple[int, int], list[float]]] = {}
    for plan, trace in runs:
        for st in plan.stages:
            for d in st.devices:
                times = [
                    e.end_s - e.start_s for e in trace if e.kind == "compute" and e.resource == d
                ]
                priced = instance.compute_s(st.first, st.last, d)
                if times and priced > 0:
                    r = statistics.median(times) / priced
                    ratios.setdefault(d, []).append(r)
                    by_range.setdefault(d, {}).setdefault((st.first, st.last), []).append(r)
    out = []
    for d, rs in sorted(ratios.items()):
        ranges = tuple(
            RangeFit(a, b, _geomean(v), tuple(v)) for (a, b), v in sorted(by_range[d].items())
        )
        g = _geomean([r.ratio for r in ranges])
        old = float(old_scale.get(d, 1.0))
        out.append(DeviceFit(d, tuple(rs), g, old, old * g, ranges))
    return tuple(out)


def _geomean(xs: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs))


def shrinkage(fits: Sequence[DeviceFit]) -> Shrinkage:
    """How much of the per-range spread to keep (:class:`Shrinkage`), from the fits alone: the
    noise of one probe is the pooled spread of the ranges probed twice; a range's deviation
    from its device's mean carries that noise over its sample count."""
    pooled = [
        statistics.variance([math.log(x) for x in r.samples])
        for f in fits
        for r in f.ranges
        if len(r.samples) >= 2
    ]
    cells = [(math.log(r.ratio / f.ratio), len(r.samples)) for f in fits for r in f.ranges]
    spread = statistics.fmean(x * x for x, _ in cells) if cells else 0.0
    if not pooled:
        return Shrinkage(1.0, None, math.sqrt(spread))
    noise = statistics.fmean(pooled)
    expected = statistics.fmean(noise / n for _, n in cells)
    keep = max(0.0, 1.0 - expected / spread) if spread > 0 else 0.0
    return Shrinkage(keep, math.sqrt(noise), math.sqrt(spread))


def piece_scales_after(
    dev: DeviceSpec, fit: DeviceFit, model: str, pieces: int, keep: float = 1.0
) -> tuple[PieceScale, ...]:
    """``dev``'s ``speed.pieces`` once ``fit`` is applied (its scale becomes ``fit.new_scale``).

    For ``model``: each probed range's factor is its ratio over the device's mean ratio, to the
    power ``keep`` (:class:`Shrinkage`), times the factor it already had; unprobed pieces keep
    theirs. Other models' entries are divided by the mean ratio so their pieces keep the price
    they had. Runs of equal factor merge; a model whose factors are all 1 gets no entries."""
    g = fit.ratio
    factors = piece_factors(dev.piece_scales, model, pieces) or [1.0] * pieces
    for r in fit.ranges:
        for i in range(r.first, min(r.last, pieces - 1) + 1):
            factors[i] *= (r.ratio / g) ** keep
    keep_other = [
        replace(p, scale=round(p.scale / g, 4))
        for p in dev.piece_scales
        if not (p.model == model and p.pieces == pieces)
    ]
    return (*keep_other, *piece_scales_of(model, factors))


def fit_link(
    src: str, dst: str, bandwidth_Bps: float, latency_s: float, samples: Sequence[tuple[int, float]]
) -> LinkFit:
    """Fit ``seconds = latency + nbytes / bandwidth`` to ``(nbytes, seconds)`` transfer samples."""
    n = len(samples)
    if n < MIN_TRANSFERS:
        return LinkFit(src, dst, n, bandwidth_Bps, latency_s, bandwidth_Bps, latency_s, "unchanged")
    sizes = [float(b) for b, _ in samples]
    secs = [float(t) for _, t in samples]
    if min(sizes) > 0 and max(sizes) / min(sizes) >= MIN_SIZE_SPREAD:
        mx, my = statistics.fmean(sizes), statistics.fmean(secs)
        sxx = sum((x - mx) ** 2 for x in sizes)
        slope = sum((x - mx) * (y - my) for x, y in zip(sizes, secs, strict=True)) / sxx
        intercept = my - slope * mx
        if slope > 0 and intercept >= 0:
            return LinkFit(
                src, dst, n, bandwidth_Bps, latency_s, 1.0 / slope, intercept, "bandwidth+latency"
            )
    extra = statistics.median(t - b / bandwidth_Bps for b, t in samples)
    return LinkFit(src, dst, n, bandwidth_Bps, latency_s, bandwidth_Bps, max(0.0, extra), "latency")


def fit_links(
    cluster: Cluster, traces: Sequence[tuple[Sequence[Any], Callable[[Any], int | None]]]
) -> tuple[LinkFit, ...]:
    """Every cluster link and shared medium, fitted from the transfer events of ``traces``
    (``resource`` = ``u->v``; a medium pools the events of every hop over it), each trace with
    its own function giving an event's bytes (probes cut the model at different pieces)."""
    samples: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for trace, nbytes_of in traces:
        for e in trace:
            if e.kind != "transfer":
                continue
            nb = nbytes_of(e)
            if nb is None:
                continue
            u, v = e.resource.split("->", 1)
            samples.setdefault((u, v), []).append((nb, e.end_s - e.start_s))
    fits = [
        fit_link(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s, samples.get((lk.src, lk.dst), []))
        for lk in cluster.links
    ]
    for m in getattr(cluster, "media", ()):
        pooled = [
            s
            for hop in cluster.all_links
            if hop.medium == m.name
            for s in samples.get((hop.src, hop.dst), [])
        ]
        fit = fit_link("*", "*", m.bandwidth_Bps, m.latency_s, pooled)
        fits.append(replace(fit, medium=m.name))
    return tuple(fits)


def apply(cluster: Cluster, cal: Calibration) -> Cluster:
    """``cluster`` with the fitted figures (traced links keep their trace, only latency moves).
    A refitted link or medium keeps its configured figures as ``emulate`` (:class:`LinkEmulation`:
    the testbed still emulates what it was calibrated on; the fit only prices)."""
    fits = {d.device: d for d in cal.devices}
    keep = 1.0 if cal.shrinkage is None else cal.shrinkage.keep
    devices = tuple(
        replace(
            d,
            speed_scale=round(fits[d.name].new_scale, 4),
            piece_scales=piece_scales_after(d, fits[d.name], cal.model, cal.pieces, keep)
            if cal.pieces
            else d.piece_scales,
        )
        if d.name in fits
        else d
        for d in cluster.devices
    )
    link_fits = {(f.src, f.dst): f for f in cal.links if f.medium is None}
    media_fits = {f.medium: f for f in cal.links if f.medium is not None}
    media = []
    for m in getattr(cluster, "media", ()):
        f = media_fits.get(m.name)
        if f is None or f.how == "unchanged":
            media.append(m)
            continue
        media.append(_refitted(m, f))
    links = []
    for lk in cluster.links:
        f = link_fits.get((lk.src, lk.dst))
        if f is None or f.how == "unchanged":
            links.append(lk)
            continue
        links.append(_refitted(lk, f))
    return replace(cluster, devices=devices, links=tuple(links), media=tuple(media))


def _refitted(spec: Any, fit: LinkFit) -> Any:
    """A link or medium with ``fit``'s figures priced (a traced one keeps its trace's bandwidth)
    and its configured figures kept as what the testbed emulates."""
    bw = spec.bandwidth_Bps if spec.trace is not None else fit.fitted_bandwidth_Bps
    emulate = spec.emulate or LinkEmulation(spec.bandwidth_Bps, spec.latency_s)
    return replace(spec, bandwidth_Bps=bw, latency_s=fit.fitted_latency_s, emulate=emulate)


def write_calibrated(path: Path, cal: Calibration, calibrated: Cluster, origin: str) -> None:
    """Write the calibrated cluster as YAML (loadable by ``load_cluster``), headed by what was
    measured; an unwritable path is an :class:`InputError`."""
    import yaml

    header = (
        f"# {calibrated.name}, calibrated by `coinfer calibrate` with {cal.model} "
        f"({cal.requests} requests per probe) from {origin}\n"
        + "".join(
            f"# {d.device}: measured/priced compute x{d.ratio:.3f} -> speed.scale {d.new_scale:.4f}\n"
            for d in cal.devices
        )
    )
    try:
        path.write_text(header + yaml.safe_dump(calibrated.to_dict(), sort_keys=False))
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None


def calibrate(
    model: str,
    cluster: Cluster,
    *,
    requests: int = 48,
    rotations: int = DEFAULT_ROTATIONS,
    offsets: bool = False,
    bind: str = "127.0.0.1:0",
    spawn: bool = True,
    log: Callable[[str], None] | None = None,
    source: str | None = None,
) -> tuple[Calibration, Cluster]:
    """Probe ``cluster`` with ``model`` through the real runtime; return the fit and the
    calibrated cluster (see the module docstring). ``source`` is the cost source calibrated
    (``profile``/``predict``/``analytic``; default: the first available per device);
    ``rotations``: how many device orders to probe (:func:`probe_plans`); ``offsets``: also
    run :func:`offset_probes` in as many orders and re-price the half ranges."""
    from ..profile.costmodel import build_instance
    from ..schedule import schedule
    from . import run

    if requests < 8:
        raise InputError(f"--requests must be at least 8 for a steady state (got {requests})")
    instance = build_instance(model, cluster, source=source)
    if len(instance.pieces) < len(cluster.devices):
        raise InputError(
            f"{model} has {len(instance.pieces)} pieces, fewer than the {len(cluster.devices)} "
            "devices to probe: calibrate with a larger model"
        )
    base = even_pipeline(instance, cluster.device_names)
    # the repeated probe measures the noise the per-range factors are shrunk against
    plans = probe_plans(base, rotations, repeat=rotations > 1)
    extra = offset_probes(instance, cluster.device_names, rotations) if offsets else []
    runs, offset_runs = [], []
    for i, p in enumerate(plans + extra):
        if log:
            log(f"probe: {' | '.join(str(s) for s in p.stages)} ({requests} requests)")
        sched = schedule(p, instance, requests)
        res = run(model, cluster, p, requests=requests, instance=instance, schedule=sched,
                  bind=bind, spawn=spawn)  # fmt: skip
        (runs if i < len(plans) else offset_runs).append((p, res.trace))
    devices = fit_devices(runs, instance, {d.name: d.speed_scale for d in cluster.devices})
    links = fit_links(cluster, [(t, _nbytes_of(instance, p)) for p, t in runs + offset_runs])
    probes = tuple(str(p) for p, _ in runs + offset_runs)
    cal = Calibration(
        model, requests, devices, links, probes, len(instance.pieces), shrinkage(devices)
    )
    calibrated = apply(cluster, cal)
    if not offset_runs:
        return cal, calibrated
    return reprice_offsets(model, cal, calibrated, offset_runs, source)


def reprice_offsets(
    model: str,
    cal: Calibration,
    calibrated: Cluster,
    offset_runs: Sequence[tuple[Plan, Sequence[Any]]],
    source: str | None = None,
) -> tuple[Calibration, Cluster]:
    """``calibrated`` with each device's per-piece factors refitted so that the offset probes'
    stages cost what they measured while the even ranges keep their calibrated price, both
    weighing the same (:func:`~.refine.reprice`; both are co-run probes of the same session),
    the refit shrunk by the probes' noise like the ranges' own factors (:func:`offset_keep`).

    Why: a range's factor spreads evenly over its pieces, and a plan that cuts inside a range is
    priced by the profile's split of it, which can be far off (MobileNetV2's first six pieces on
    the testbed: 13 ms priced, 23.5 measured, inside a quarter priced right). Offset stages end
    mid-range, so every half range gets its own measured price."""
    from ..profile.costmodel import build_instance

    instance = build_instance(model, calibrated, source=source)
    n = len(instance.pieces)
    measured = [t for p, trace in offset_runs for t in stage_times(p, trace, instance)]
    priced = {d: [instance.compute_s(i, i, d) for i in range(n)] for d in calibrated.device_names}
    anchors = probe_ranges(cal)  # the even ranges: ``cal`` has no offsets yet
    noise = None if cal.shrinkage is None else cal.shrinkage.noise_sd
    shrunk = offset_keep(measured, noise)
    repriced = reprice(
        calibrated, model, n, priced, measured, anchors, anchor_weight=1.0, keep=shrunk.keep
    )
    return replace(cal, offsets=tuple(measured), offset_shrinkage=shrunk), repriced


def offset_keep(measured: Sequence[StageTime], noise_sd: float | None) -> Shrinkage:
    """How much of the offset refit to keep: ``1 - noise^2 / spread^2`` (positive part), with
    ``spread`` the offset stages' root-mean-square log deviation from their calibrated price and
    ``noise`` one probe's (:class:`Shrinkage`; all of it when the noise is unknown).

    Why: every offset stage is one probe, and an optimising planner picks exactly the cuts whose
    noise came out fast; half ranges double the figures it can pick from. A deviation far beyond
    the noise (MobileNetV2's first pieces) is kept, one the noise explains is dropped."""
    logs = [math.log(t.measured_s / t.priced_s) for t in measured if t.priced_s > 0]
    spread = math.sqrt(statistics.fmean(x * x for x in logs)) if logs else 0.0
    if noise_sd is None:
        return Shrinkage(1.0, None, spread)
    keep = max(0.0, 1.0 - noise_sd**2 / spread**2) if spread > 0 else 0.0
    return Shrinkage(keep, noise_sd, spread)


def _nbytes_of(instance: Instance, plan: Plan) -> Callable[[Any], int | None]:
    """Bytes of a transfer event in a run of ``plan``: the input of its stage (stage ``k`` =
    the output)."""
    sizes = [instance.input_bytes] + [instance.pieces[st.last].out_bytes for st in plan.stages]

    def nbytes(e: Any) -> int | None:
        return None if e.stage is None or int(e.stage) >= len(sizes) else sizes[int(e.stage)]

    return nbytes


__all__ = [
    "Calibration",
    "DeviceFit",
    "LinkFit",
    "RangeFit",
    "Shrinkage",
    "apply",
    "calibrate",
    "even_pipeline",
    "fit_devices",
    "fit_link",
    "fit_links",
    "offset_keep",
    "offset_pipeline",
    "offset_probes",
    "piece_scales_after",
    "probe_plans",
    "reprice_offsets",
    "shrinkage",
    "write_calibrated",
]
