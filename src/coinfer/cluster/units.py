"""Unit parsing for cluster files: the ONLY place coinfer converts human units.

Cluster YAML speaks the units people read on spec sheets (GiB, Mbit/s, ms, GHz); everything
past the parser speaks seconds, bytes and bytes per second, with the unit in the field name.
"""

from __future__ import annotations

import math
import re

# Byte multipliers: SI prefixes are powers of 1000, IEC prefixes powers of 1024 (as on spec
# sheets: a "4 GB" Raspberry Pi has 4 GiB of RAM, but we take the user at their word).
_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_MEMORY_RE = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

# 1 Mbit/s = 10^6 bits/s = 125 000 bytes/s (network rates are decimal).
BYTES_PER_S_PER_MBPS = 1_000_000 / 8
# 1 GB/s of memory bandwidth = 10^9 bytes/s.
BYTES_PER_S_PER_GBPS = 1_000_000_000


def parse_memory(value: int | float | str) -> int:
    """Parse ``"4GiB"``, ``"512 MB"``, ``"1.5e9"`` or a plain number of bytes into bytes.

    Raises
    ------
    ValueError
        If the text is not a non-negative number with a known unit; the pydantic layer turns
        this into one line naming the field.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '4GiB' or a byte count, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        m = _MEMORY_RE.match(str(value))
        if m is None:
            raise ValueError(f"expected a size like '4GiB' or a byte count, got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _MEMORY_UNITS:
        known = ", ".join(u for u in _MEMORY_UNITS if u)
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (known: {known})")
    nbytes = number * _MEMORY_UNITS[unit]
    # a whole number of bytes, at least one: 0.4 bytes would load as 0 and not load again
    if not math.isfinite(nbytes) or round(nbytes) < 1:
        raise ValueError(f"size must be positive and finite, got {value!r}")
    return round(nbytes)


def mbps_to_Bps(mbps: float) -> float:
    """Megabits per second to bytes per second."""
    return float(mbps) * BYTES_PER_S_PER_MBPS


def Bps_to_mbps(bps: float) -> float:
    """Bytes per second to megabits per second (for printing and round-trips)."""
    return float(bps) / BYTES_PER_S_PER_MBPS


def format_bytes(nbytes: float) -> str:
    """Short human form with IEC units (``1.5 GiB``), for tables."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class DvfsError(ValueError):
    """A bad DVFS table: ``field`` is ``dvfs_ghz`` or ``dvfs_levels``, the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def dvfs_fractions(levels: list[float] | None, ghz: list[float] | None) -> tuple[float, ...]:
    """DVFS levels as sorted fractions of f_max from ``dvfs_levels`` or ``dvfs_ghz`` (each
    already checked positive); ``(1.0,)`` when neither is given.

    Raises
    ------
    DvfsError
        A frequency below 1e-6 of the highest, or levels whose highest is not 1.0.
    """
    if ghz is not None:
        top = max(ghz)
        out = tuple(sorted({round(f / top, 6) for f in ghz}))
        if out[0] <= 0:
            raise DvfsError(
                "dvfs_ghz", f"every frequency must be at least 1e-6 of the highest (got {ghz})"
            )
    elif levels is not None:
        out = tuple(sorted(set(levels)))
    else:
        out = (1.0,)
    if out[-1] != 1.0:
        raise DvfsError("dvfs_levels", f"the highest level must be 1.0 (f_max) (got {list(out)})")
    return out


__all__ = [
    "BYTES_PER_S_PER_GBPS",
    "BYTES_PER_S_PER_MBPS",
    "Bps_to_mbps",
    "DvfsError",
    "dvfs_fractions",
    "format_bytes",
    "mbps_to_Bps",
    "parse_memory",
]
