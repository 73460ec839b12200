"""Pictures: Gantt charts of event traces, latency CDFs, throughput-vs-devices curves.

matplotlib is imported inside each function with the non-interactive Agg backend, so importing
:mod:`coinfer.report` never pulls it in and plots work on headless machines. Every function
writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.trace import TraceEvent, is_link
from ..errors import InputError

# Figure geometry: inches per Gantt row and the minimum height so a 1-row chart stays legible.
ROW_HEIGHT_IN = 0.45
MIN_GANTT_HEIGHT_IN = 2.4
GANTT_WIDTH_IN = 12.0
# Requests are coloured from a qualitative palette of this many colours (cycled beyond it).
PALETTE_SIZE = 20
# Request numbers are printed inside bars wider than this fraction of the time axis.
LABEL_MIN_FRACTION = 0.018
DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_DASHES = ("-", "--", "-.", ":")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    """Lay out, write (creating the folder) and close ``fig``; every plot ends here."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def resource_order(events: Sequence[TraceEvent], devices: Sequence[str] | None = None) -> list[str]:
    """Rows of the chart: devices (in ``devices`` order, else first use) then links (first use)."""
    seen_dev: list[str] = list(devices or [])
    seen_link: list[str] = []
    for e in sorted(events, key=lambda e: e.start_s):
        target = seen_link if is_link(e.resource) else seen_dev
        if e.resource not in target:
            target.append(e.resource)
    return seen_dev + seen_link


def gantt(
    events: Sequence[TraceEvent],
    path: str | Path,
    *,
    title: str = "schedule",
    devices: Sequence[str] | None = None,
    until_s: float | None = None,
) -> Path:
    """Draw ``events`` as a Gantt chart: one row per device, then per directed link.

    Bars are coloured by request (same colour on every resource, so a request can be followed
    through the pipeline); compute bars are solid, transfer bars hatched. ``until_s`` crops the
    time axis ``until_s`` seconds after the first event (long runs are unreadable otherwise). Works
    for simulated and measured traces.
    """
    return gantt_pair([(title, events)], path, devices=devices, until_s=until_s)


def gantt_pair(
    charts: Sequence[tuple[str, Sequence[TraceEvent]]],
    path: str | Path,
    *,
    devices: Sequence[str] | None = None,
    until_s: float | None = None,
) -> Path:
    """Several Gantt charts (``(title, events)``) stacked on one time axis — a measured and a
    simulated run of the same plan, where they disagree shows at a glance. Each chart's time
    starts at its own first event; rows are the union of the charts' resources."""
    if not charts or any(not events for _, events in charts):
        raise InputError("gantt: no events to draw")
    plt = _pyplot()
    windows = []
    for _, events in charts:
        t0 = min(e.start_s for e in events)  # each chart starts at its first event
        shown = [e for e in events if until_s is None or e.start_s - t0 <= until_s]
        t1 = max(e.end_s for e in shown)
        windows.append((t0, shown, min(t1, t0 + until_s) if until_s is not None else t1))
    rows = resource_order([e for _, shown, _ in windows for e in shown], devices)
    span = max(max(t1 - t0 for t0, _, t1 in windows), 1e-12)
    scale, unit = (1e3, "ms") if span < 2.0 else (1.0, "s")
    height = max(MIN_GANTT_HEIGHT_IN, ROW_HEIGHT_IN * len(rows) + 1.2)
    fig, axes = plt.subplots(
        len(charts), 1, figsize=(GANTT_WIDTH_IN, height * len(charts)), sharex=True, squeeze=False
    )
    y = {r: i for i, r in enumerate(rows)}
    for ax, (title, _), (t0, shown, _) in zip(axes[:, 0], charts, windows, strict=True):
        _draw_bars(plt, ax, shown, y, t0, span, scale)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows)
        ax.invert_yaxis()
        ax.set_xlim(0, span * scale)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(f"time ({unit}) — bar label = request; hatched = link transfer")
    return _save(plt, fig, path)


def _draw_bars(plt, ax, shown, y, t0, span, scale) -> None:  # type: ignore[no-untyped-def]
    cmap = plt.get_cmap("tab20")
    for e in shown:
        colour = cmap(e.request % PALETTE_SIZE)
        # clip to the shown window so cropped bars (and their labels) stay inside the axes
        end = min(e.end_s, t0 + span)
        left, width = (e.start_s - t0) * scale, max(end - e.start_s, 0.0) * scale
        ax.barh(
            y[e.resource],
            width,
            left=left,
            height=0.7,
            color=colour,
            edgecolor="black",
            linewidth=0.4,
            hatch="///" if e.kind == "transfer" else None,
        )
        if (end - e.start_s) / span >= LABEL_MIN_FRACTION:
            ax.text(
                left + width / 2,
                y[e.resource],
                str(e.request),
                ha="center",
                va="center",
                fontsize=7,
            )


def latency_cdf(
    series: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "latency CDF"
) -> Path:
    """Empirical CDF of per-request latency (seconds, drawn in ms), one line per series."""
    if not series or not any(len(v) for v in series.values()):
        raise InputError("latency_cdf: no latencies to draw")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in series.items():
        xs = sorted(v * 1e3 for v in values)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{name} (p50 {xs[len(xs) // 2]:.1f} ms)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def session_timeline(report: Mapping[str, object], path: str | Path, *, title: str) -> Path:
    """Throughput of a streaming session over time, with every fail-over (fault, detected,
    first new result) and hand-over (requested, switched, drained) marked: ``report`` is a
    session report's JSON form (``SessionReport.to_dict()``, or ``measured`` of ``coinfer run
    --json`` in session mode)."""
    plt = _pyplot()
    tl = report.get("timeline") or {}
    rps = list(tl.get("rps", [])) if isinstance(tl, Mapping) else []
    if not rps:
        raise InputError(f"{title}: the session completed nothing to plot")
    bin_s = float(tl["bin_s"])  # type: ignore[index]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.step([i * bin_s for i in range(len(rps))], rps, where="post", color="#2b6cb0",
            label=f"completed per second ({bin_s:g} s bins)")  # fmt: skip
    marks = [
        ("fault_s", "#c53030", "fault"),
        ("detected_s", "#dd6b20", "detected"),
        ("first_result_s", "#2f855a", "first new result"),
    ]
    seen: set[str] = set()
    for rec in report.get("recoveries", []) or []:  # type: ignore[union-attr]
        for key, colour, label in marks:
            t = rec.get(key)
            if t is not None:
                ax.axvline(t, color=colour, linestyle="--", linewidth=1.2,
                           label=None if label in seen else label)  # fmt: skip
                seen.add(label)
        ax.annotate(f"{rec['device']} lost", (rec["detected_s"], max(rps) * 0.95),
                    fontsize=8, color="#c53030")  # fmt: skip
    for h in report.get("handovers", []) or []:  # type: ignore[union-attr]
        for key, label in (("switched_s", "hand-over"), ("drained_s", "old plan drained")):
            t = h.get(key)
            if t is not None:
                ax.axvline(t, color="#6b46c1", linestyle=":" if key == "drained_s" else "-.",
                           linewidth=1.2, label=None if label in seen else label)  # fmt: skip
                seen.add(label)
    ax.set_xlabel("time since the session started (s)")
    ax.set_ylabel("samples / s")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    return _save(plt, fig, path)


def line_plot(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    integer_x: bool = False,
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
) -> Path:
    """Lines with markers, one per series of ``(x, y)`` points; ``panels`` draws a row of subplots.

    With ``panels`` (panel title -> series) ``series`` is ignored and every panel shares the
    axis labels; this is how throughput-vs-devices is drawn per model.
    """
    plt = _pyplot()
    groups = dict(panels) if panels else {title: series}
    if not groups or not any(groups.values()):
        raise InputError(f"{title}: nothing to plot")
    n = len(groups)
    cols = 2 if n == 4 else min(n, 3)
    nrows = (n + cols - 1) // cols
    size = (7.5, 4.8) if n == 1 else (4.2 * cols, 3.6 * nrows)  # a lone panel gets room to read
    fig, axes = plt.subplots(nrows, cols, figsize=size, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    # one style per label across every panel, so a label looks the same wherever it appears
    labels = list(dict.fromkeys(lb for ser in groups.values() for lb in ser))
    colours = plt.get_cmap("tab10")
    same_labels = len({tuple(ser) for ser in groups.values()}) == 1
    for ax, (name, ser) in zip(axes.flat, groups.items(), strict=False):
        for label, pts in ser.items():
            i = labels.index(label)
            pts = sorted(pts)
            if pts:
                # distinct colour + marker + dash per series so coinciding lines stay visible
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=colours(i % 10),
                    marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_DASHES[i % len(_DASHES)],
                    markersize=5.5 - 0.5 * (i % 4),
                    linewidth=1.8 - 0.3 * (i % 4),
                    label=label,
                )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[: 1 if same_labels else n]:
        ax.legend(fontsize=7)
    if panels:
        fig.suptitle(title)
    return _save(plt, fig, path)


def search_trace(
    log: Sequence[Mapping[str, object]],
    path: str | Path,
    *,
    title: str,
    best: float | None = None,
    curves: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    scale: float = 1e3,
    unit: str = "ms",
) -> Path:
    """A plan search's measurements: each measured value (initial design and acquisitions),
    the GP's prediction (median and 1 sd) when it chose the configuration, the cost model's
    figure, and the incumbent's measured mean after each measurement. ``log`` is
    ``details["search_log"]`` of a ``bayes`` plan; ``best`` draws a reference line (e.g. the
    best of an exhaustive measurement); ``curves`` adds a second panel of ``(measurements,
    gap %)`` lines, one per search strategy."""
    import math

    plt = _pyplot()
    if not log:
        raise InputError(f"{title}: the search log is empty")
    ncols = 2 if curves else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7.5 * ncols, 4.4), squeeze=False)
    ax = axes[0][0]
    xs = [int(r["index"]) for r in log]  # type: ignore[call-overload]
    for phase, colour, label in (("init", "#718096", "measured (initial design)"),
                                 ("acquire", "#2b6cb0", "measured (chosen by EI)")):  # fmt: skip
        pts = [(int(r["index"]), float(r["measured"]) * scale) for r in log if r["phase"] == phase]  # type: ignore[call-overload, arg-type]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, s=28, zorder=3,
                       label=label)  # fmt: skip
    gp = [r for r in log if r.get("gp_mean") is not None]
    if gp:
        mid = [float(r["gp_mean"]) * scale for r in gp]  # type: ignore[arg-type]
        sd = [float(r["gp_std_log"]) for r in gp]  # type: ignore[arg-type]
        lo = [m - m * math.exp(-s) for m, s in zip(mid, sd, strict=True)]
        hi = [m * math.exp(s) - m for m, s in zip(mid, sd, strict=True)]
        ax.errorbar([int(r["index"]) for r in gp], mid, yerr=[lo, hi], fmt="_", color="#dd6b20",  # type: ignore[call-overload]
                    capsize=3, label="GP prediction (median, 1 sd)")  # fmt: skip
    ax.scatter(xs, [float(r["model"]) * scale for r in log], marker="x", color="#a0aec0", s=20,  # type: ignore[arg-type]
               label="cost model")  # fmt: skip
    ax.step(xs, [float(r["incumbent_mean"]) * scale for r in log], where="post", color="#2f855a",  # type: ignore[arg-type]
            linewidth=1.8, label="incumbent (measured mean)")  # fmt: skip
    if best is not None:
        ax.axhline(best * scale, color="#c53030", linestyle="--", linewidth=1.2,
                   label="best of exhaustive measurement")  # fmt: skip
    values = [float(r["measured"]) for r in log]  # type: ignore[arg-type]
    if max(values) > 20 * min(values):  # plans an order of magnitude apart: log scale
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("measurement")
    ax.set_ylabel(f"objective ({unit})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if curves:
        ax2 = axes[0][1]
        colours = plt.get_cmap("tab10")
        for i, (label, pts) in enumerate(curves.items()):
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], color=colours(i % 10),
                     marker=_MARKERS[i % len(_MARKERS)], linestyle=_DASHES[i % len(_DASHES)],
                     markersize=4, label=label)  # fmt: skip
        ax2.axhline(3.0, color="#c53030", linestyle=":", linewidth=1.0, label="3 % target")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("measurements")
        ax2.set_ylabel("incumbent's gap to the exhaustive best (%)")
        ax2.set_title("median over seeds", fontsize=10)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    return _save(plt, fig, path)


def throughput_vs_devices(
    series: Mapping[str, Sequence[tuple[int, float]]] | None,
    path: str | Path,
    *,
    title: str = "throughput vs devices",
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]] | None = None,
    ylabel: str = "throughput (req/s)",
) -> Path:
    """Throughput (or speed-up) against the number of devices, one line per planner/frequency."""
    return line_plot(
        series or {},
        path,
        title=title,
        xlabel="devices",
        ylabel=ylabel,
        panels=panels,
        integer_x=True,
    )
