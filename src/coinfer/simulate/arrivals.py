"""Open-loop arrival traces: steady Poisson, bursty on/off, diurnal (seeded, pure numpy).

The same trace drives a load test against ``coinfer serve`` (``benchmarks/loadgen.py``) and the
simulator (:func:`coinfer.simulate.sim.simulate` takes ``arrivals=trace.times``), so measured
and simulated runs see the very same request times. Every generator returns a sorted tuple of
arrival times in seconds from 0, all ``< duration_s``, and is a pure function of its arguments
(one ``numpy.random.default_rng(seed)`` per call).

Processes:

- :func:`poisson`: homogeneous Poisson at ``rate_rps``. The count over the horizon is drawn
  from Poisson(rate x duration) and the times are that many sorted uniforms (the conditional
  property of the Poisson process), so a trace never ends early by accident of a running sum.
- :func:`bursty`: **deterministic** on/off periods — on for ``on_s`` seconds from 0, then off
  for ``off_s``, repeating — with Poisson arrivals at ``on_rate`` inside the on periods and at
  ``off_rate`` inside the off periods. Deterministic rather than Markov-modulated so that the
  bursts fall at the same times in every run and in the simulator: a comparison of two serving
  modes then differs by the server only, not by where a random modulating chain put the bursts.
- :func:`diurnal`: non-homogeneous Poisson by thinning (Lewis and Shedler): candidates at
  ``max_rate``, each kept with probability ``rate(t) / max_rate``, with the sinusoidal rate
  ``min + (max - min) (1 - cos(2 pi t / period)) / 2`` — at ``min`` at 0, rising to ``max`` at
  half a period and back: one "day" per period, a ramp up and a ramp down.

A trace is named by a one-line spec (:func:`make_trace`):
``poisson:rate=20,duration=30,seed=1``, ``bursty:on=40,off=5,on_s=3,off_s=5,duration=60``,
``diurnal:min=5,max=40,period=60,duration=60`` (``seed`` defaults to 0). An
:class:`ArrivalTrace` keeps its name, its parameters and its times, and goes to and from JSON.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

# Expected arrivals above this are refused: a typo (rate=2e6) would otherwise allocate
# gigabytes before anyone notices.
MAX_EXPECTED_ARRIVALS = 10_000_000


def _check_rate(value: float, what: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"{what!r} must be a finite number of requests/s >= 0, got {value!r}")


def _check_seconds(value: float, what: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{what!r} must be a finite number of seconds > 0, got {value!r}")


def _check_expected(expected: float, what: str) -> None:
    if expected > MAX_EXPECTED_ARRIVALS:
        raise InputError(
            f"{what}: {expected:.3g} expected arrivals, more than {MAX_EXPECTED_ARRIVALS:,}"
        )


def _uniform_poisson(rng: np.random.Generator, rate: float, t0: float, t1: float) -> np.ndarray:
    """Poisson arrivals at ``rate`` on ``[t0, t1)``: a Poisson count of sorted uniforms."""
    if rate <= 0 or t1 <= t0:
        return np.empty(0)
    n = int(rng.poisson(rate * (t1 - t0)))
    times = np.sort(rng.uniform(t0, t1, n))
    # uniform() may round up to t1 itself; keep the half-open interval promise
    return times[times < t1]


def _as_times(times: np.ndarray) -> tuple[float, ...]:
    return tuple(float(t) for t in np.sort(times))


def poisson(rate_rps: float, duration_s: float, seed: int = 0) -> tuple[float, ...]:
    """Homogeneous Poisson arrivals at ``rate_rps`` on ``[0, duration_s)``."""
    _check_rate(rate_rps, "rate")
    _check_seconds(duration_s, "duration")
    _check_expected(rate_rps * duration_s, "poisson")
    rng = np.random.default_rng(seed)
    return _as_times(_uniform_poisson(rng, rate_rps, 0.0, duration_s))


def on_periods(on_s: float, off_s: float, duration_s: float) -> list[tuple[float, float]]:
    """The on periods ``[(start, end), ...]`` of :func:`bursty` within ``[0, duration_s)``:
    on from 0 for ``on_s``, then every ``on_s + off_s`` (what a plot or a test shades)."""
    _check_seconds(on_s, "on_s")
    _check_seconds(off_s, "off_s")
    _check_seconds(duration_s, "duration")
    cycle = on_s + off_s
    return [
        (k * cycle, min(k * cycle + on_s, duration_s)) for k in range(math.ceil(duration_s / cycle))
    ]


def bursty(
    on_rate: float, off_rate: float, on_s: float, off_s: float, duration_s: float, seed: int = 0
) -> tuple[float, ...]:
    """Poisson at ``on_rate`` during deterministic on periods (``on_s`` long, the first at 0)
    and at ``off_rate`` during the ``off_s`` gaps between them, on ``[0, duration_s)``."""
    _check_rate(on_rate, "on")
    _check_rate(off_rate, "off")
    periods = on_periods(on_s, off_s, duration_s)
    _check_expected(max(on_rate, off_rate) * duration_s, "bursty")
    rng = np.random.default_rng(seed)
    parts = []
    for start, end in periods:
        parts.append(_uniform_poisson(rng, on_rate, start, end))
        parts.append(_uniform_poisson(rng, off_rate, end, min(end + off_s, duration_s)))
    return _as_times(np.concatenate(parts))


def diurnal_rate(t: float | np.ndarray, min_rate: float, max_rate: float, period_s: float) -> Any:
    """The diurnal intensity at ``t``: ``min`` at 0, ``max`` at half a period (sinusoidal)."""
    return min_rate + (max_rate - min_rate) * (1.0 - np.cos(2.0 * np.pi * t / period_s)) / 2.0


def diurnal_expected(
    t0: float, t1: float, min_rate: float, max_rate: float, period_s: float
) -> float:
    """Expected arrivals of :func:`diurnal` on ``[t0, t1]``: the integral of its intensity
    (what a test checks the thinning against, phase by phase)."""
    w = 2.0 * math.pi / period_s
    sine = (math.sin(w * t1) - math.sin(w * t0)) / w
    return min_rate * (t1 - t0) + (max_rate - min_rate) / 2.0 * ((t1 - t0) - sine)


def diurnal(
    min_rate: float, max_rate: float, period_s: float, duration_s: float, seed: int = 0
) -> tuple[float, ...]:
    """Non-homogeneous Poisson with the sinusoidal intensity of :func:`diurnal_rate`, by
    thinning a Poisson process at ``max_rate`` (exact for a bounded intensity)."""
    _check_rate(min_rate, "min")
    _check_rate(max_rate, "max")
    if min_rate > max_rate:
        raise InputError(f"'min' ({min_rate:g}) is above 'max' ({max_rate:g})")
    _check_seconds(period_s, "period")
    _check_seconds(duration_s, "duration")
    _check_expected(max_rate * duration_s, "diurnal")
    rng = np.random.default_rng(seed)
    candidates = _uniform_poisson(rng, max_rate, 0.0, duration_s)
    keep = rng.uniform(0.0, 1.0, len(candidates)) * max_rate < diurnal_rate(
        candidates, min_rate, max_rate, period_s
    )
    return _as_times(candidates[keep])


@dataclass(frozen=True)
class _Kind:
    """One trace kind for the spec parser: its fields (spec name -> generator argument), in
    the generator's order, and the generator."""

    fields: tuple[tuple[str, str], ...]
    make: Callable[..., tuple[float, ...]]


_KINDS: dict[str, _Kind] = {
    "poisson": _Kind((("rate", "rate_rps"), ("duration", "duration_s")), poisson),
    "bursty": _Kind(
        (
            ("on", "on_rate"),
            ("off", "off_rate"),
            ("on_s", "on_s"),
            ("off_s", "off_s"),
            ("duration", "duration_s"),
        ),
        bursty,
    ),
    "diurnal": _Kind(
        (
            ("min", "min_rate"),
            ("max", "max_rate"),
            ("period", "period_s"),
            ("duration", "duration_s"),
        ),
        diurnal,
    ),
}


def _fmt(value: float) -> str:
    """A parameter as the spec writes it: integers without a decimal point, else ``repr``
    (round-trips exactly through ``float``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class ArrivalTrace:
    """A named arrival trace: ``name`` (``poisson`` | ``bursty`` | ``diurnal``), the spec's
    ``params`` (``seed`` included) and the arrival ``times`` (seconds from 0, sorted)."""

    name: str
    params: Mapping[str, float]
    times: tuple[float, ...] = field(repr=False)

    def __post_init__(self) -> None:
        ts = self.times
        if any(not math.isfinite(t) or t < 0 for t in ts) or any(
            b < a for a, b in itertools.pairwise(ts)
        ):
            raise InputError(f"{self.name} trace: times must be finite, >= 0 and sorted")

    @property
    def duration_s(self) -> float:
        """The horizon the trace was drawn on (its ``duration`` parameter)."""
        return float(self.params.get("duration", self.times[-1] if self.times else 0.0))

    @property
    def mean_rate_rps(self) -> float:
        """Arrivals per second over the horizon (the realised, not the requested, rate)."""
        return len(self.times) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def spec(self) -> str:
        """The one-line spec :func:`make_trace` rebuilds this trace from."""
        return f"{self.name}:" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items())

    def rate_at(self, t: float) -> float:
        """The requested intensity at ``t`` (requests/s): what the trace was drawn from."""
        p = self.params
        if self.name == "poisson":
            return float(p["rate"])
        if self.name == "bursty":
            return float(p["on"] if t % (p["on_s"] + p["off_s"]) < p["on_s"] else p["off"])
        if self.name == "diurnal":
            return float(diurnal_rate(t, p["min"], p["max"], p["period"]))
        raise InputError(f"no intensity for a {self.name!r} trace")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "times": list(self.times)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any) -> ArrivalTrace:
        """Read back :meth:`to_dict`; one :class:`InputError` for anything malformed."""
        if not isinstance(doc, dict) or set(doc) != {"name", "params", "times"}:
            raise InputError("an arrival trace is a JSON object with name, params and times")
        name, params, times = doc["name"], doc["params"], doc["times"]
        if not isinstance(name, str) or not isinstance(params, dict):
            raise InputError("arrival trace: name must be a string and params an object")
        if not isinstance(times, list) or not all(_is_number(t) for t in times):
            raise InputError("arrival trace: times must be a list of numbers")
        if not all(isinstance(k, str) and _is_number(v) for k, v in params.items()):
            raise InputError("arrival trace: params must map names to numbers")
        return cls(name, dict(params), tuple(float(t) for t in times))

    @classmethod
    def from_json(cls, text: str) -> ArrivalTrace:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"arrival trace is not JSON ({exc})"[:200]) from None
        return cls.from_dict(doc)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_fields(kind: str, body: str) -> dict[str, float]:
    """``k=v,k=v`` -> numbers, naming the field in any error."""
    values: dict[str, float] = {}
    for item in body.split(","):
        key, eq, raw = (s.strip() for s in item.partition("="))
        if not key or not eq:
            raise InputError(f"{kind} trace: expected field=value, got {item.strip()!r}")
        if key in values:
            raise InputError(f"{kind} trace: field {key!r} given twice")
        try:
            values[key] = float(raw)
        except ValueError:
            raise InputError(f"{kind} trace: field {key!r} is not a number: {raw!r}") from None
        if not math.isfinite(values[key]):
            raise InputError(f"{kind} trace: field {key!r} must be finite, got {raw!r}")
    return values


def _seed(kind: str, values: dict[str, float]) -> int:
    seed = values.pop("seed", 0.0)
    if not seed.is_integer() or seed < 0:
        raise InputError(f"{kind} trace: field 'seed' must be an integer >= 0, got {_fmt(seed)}")
    return int(seed)


def make_trace(spec: str) -> ArrivalTrace:
    """``KIND:field=value,...`` -> :class:`ArrivalTrace` (see the module docstring for the
    kinds and their fields; ``seed`` is optional, default 0). Errors are one line naming the
    bad field."""
    kind, colon, body = spec.strip().partition(":")
    if kind not in _KINDS:
        raise InputError(
            f"arrival trace {spec!r}: kind must be one of {', '.join(_KINDS)} (KIND:field=value,...)"
        )
    k = _KINDS[kind]
    names = [name for name, _ in k.fields]
    if not colon or not body.strip():
        raise InputError(f"{kind} trace needs fields {', '.join(names)} (e.g. {names[0]}=...)")
    values = _parse_fields(kind, body)
    seed = _seed(kind, values)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(
            f"{kind} trace: unknown field {unknown[0]!r}; it takes {', '.join(names)}, seed"
        )
    missing = [n for n in names if n not in values]
    if missing:
        raise InputError(f"{kind} trace: missing field {missing[0]!r}")
    try:
        times = k.make(*(values[n] for n in names), seed=seed)
    except InputError as exc:
        raise InputError(f"{kind} trace: {exc}") from None
    params = {n: values[n] for n in names} | {"seed": seed}
    return ArrivalTrace(kind, params, times)


__all__ = [
    "MAX_EXPECTED_ARRIVALS",
    "ArrivalTrace",
    "bursty",
    "diurnal",
    "diurnal_expected",
    "diurnal_rate",
    "make_trace",
    "on_periods",
    "poisson",
]
