"""Bandwidth trace files (CSV) and the one-line error every cluster-file problem becomes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import InputError, read_text
from .types import BandwidthTrace
from .units import mbps_to_Bps


def fail(origin: str, path: str, message: str) -> InputError:
    """``origin: field.path: message``, at most 400 characters."""
    text = f"{origin}: {path}: {message}"
    return InputError(text if len(text) <= 400 else text[:397] + "...")


def load_trace(path: str | Path, *, origin: str | None = None) -> BandwidthTrace:
    """Read a bandwidth trace CSV with columns ``time_s,bandwidth_mbps`` (header optional).

    Raises
    ------
    InputError
        Naming the file and line for an unreadable file, a bad number, non-increasing times or a
        non-positive bandwidth.
    """
    p = Path(path)
    where = origin or str(p)
    text = read_text(p, f"trace file {str(p)!r}", where=where)
    times: list[float] = []
    bws: list[float] = []
    first_row = True  # the first non-comment row may be a header such as "time_s,bandwidth_mbps"
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        header_allowed, first_row = first_row, False
        if len(row) != 2:
            raise InputError(
                f"{where}: {p.name} line {lineno}: expected 2 columns time_s,bandwidth_mbps (got {row!r})"
            )
        try:
            t, bw = float(row[0]), float(row[1])
        except ValueError:
            if header_allowed:
                continue
            raise InputError(
                f"{where}: {p.name} line {lineno}: not a number (got {row!r})"
            ) from None
        if not (math.isfinite(t) and t >= 0):
            raise InputError(f"{where}: {p.name} line {lineno}: time must be >= 0 (got {row[0]!r})")
        if not (math.isfinite(bw) and bw > 0):
            raise InputError(
                f"{where}: {p.name} line {lineno}: bandwidth must be > 0 (got {row[1]!r})"
            )
        if times and t <= times[-1]:
            raise InputError(f"{where}: {p.name} line {lineno}: time {t} is not after {times[-1]}")
        times.append(t)
        bws.append(mbps_to_Bps(bw))
    if not times:
        raise InputError(f"{where}: {p.name}: trace has no samples")
    return BandwidthTrace(tuple(times), tuple(bws), origin=str(p))


def rate_and_trace(
    bandwidth_mbps: float | None, trace: str | None, base: Path, origin: str, field: str
) -> tuple[float, BandwidthTrace | None, str | None]:
    """A link's or medium's nominal bytes/s, its trace and the trace's resolved path, from the
    file's ``bandwidth_mbps`` and ``trace`` fields (``field`` is e.g. ``links[2]``): the given
    rate, else the trace's time-weighted mean; neither is an error naming the field."""
    loaded = None
    path = None
    if trace is not None:
        tp = Path(trace)
        tp = tp if tp.is_absolute() else base / tp
        loaded = load_trace(tp, origin=f"{origin}: {field}.trace")
        path = str(tp.resolve())
    if bandwidth_mbps is not None:
        return mbps_to_Bps(bandwidth_mbps), loaded, path
    if loaded is not None:
        return loaded.mean_Bps(), loaded, path
    raise fail(origin, f"{field}.bandwidth_mbps", "missing required field (or give a 'trace')")
