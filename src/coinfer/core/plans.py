"""Plans: ordered stages of contiguous pieces mapped to devices, plus their predicted metrics.

A :class:`Plan` is plain, frozen data that prints readably and round-trips JSON in the format
of DESIGN.md::

    {"algo", "objective", "stages": [{"pieces": [first, last], "devices": [names]}],
     "predicted": {"latency_s", "period_s", "throughput_rps"}, "planning_time_s"}

with pieces 0-based and inclusive. Optional extras (per-device DVFS frequency, the seed of a
randomised planner, algorithm-specific details such as routed paths or fused tiles) travel in
``freqs``, ``seed`` and ``details`` and are omitted from the JSON when empty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError, parse_json, read_text

Objective = Literal["latency", "throughput", "energy"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


class Sample(NamedTuple):
    """One noisy measurement of an objective: its ``value`` and the relative standard error of
    that value as estimated *within* the measurement (``0.0`` = not estimated).

    Why a measurer reports it: a search that measures each candidate once cannot learn from
    repeats how noisy each candidate is, but a measurement made of many timed results can say
    how steady they were (a stage on a throttled core jitters more than one on a big core).
    """

    value: float
    rel_sem: float = 0.0


def check_objective(objective: str) -> Objective:
    """Return ``objective`` if valid, else raise one line listing the valid names."""
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Stage:
    """Pieces ``first..last`` (0-based, inclusive) served by ``devices`` (several = replicas).

    ``freqs`` optionally gives each device's DVFS level (fraction of f_max), aligned with
    ``devices``; ``None`` means every device runs at f_max.
    """

    first: int
    last: int
    devices: tuple[str, ...]
    freqs: tuple[float, ...] | None = None

    def freq_of(self, i: int) -> float:
        return 1.0 if self.freqs is None else self.freqs[i]

    def __str__(self) -> str:
        devs = "+".join(
            d if self.freqs is None or self.freqs[i] == 1.0 else f"{d}@{self.freqs[i]:g}"
            for i, d in enumerate(self.devices)
        )
        span = f"{self.first}" if self.first == self.last else f"{self.first}-{self.last}"
        return f"[{span}]->{devs}"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Predicted figures of a plan under the reference cost model (seconds, joules)."""

    latency_s: float
    period_s: float
    energy_j: float | None = None

    @property
    def throughput_rps(self) -> float:
        return 0.0 if self.period_s <= 0 or math.isinf(self.period_s) else 1.0 / self.period_s

    def value(self, objective: Objective) -> float:
        """The number ``objective`` minimises (period for throughput)."""
        if objective == "latency":
            return self.latency_s
        if objective == "throughput":
            return self.period_s
        return math.inf if self.energy_j is None else self.energy_j

    def to_dict(self) -> dict[str, float]:
        out = {
            "latency_s": self.latency_s,
            "period_s": self.period_s,
            "throughput_rps": self.throughput_rps,
        }
        if self.energy_j is not None:
            out["energy_j"] = self.energy_j
        return out


@dataclass(frozen=True)
class Plan:
    """An executable partition + placement: stages in pipeline order and their predictions."""

    algo: str
    objective: Objective
    stages: tuple[Stage, ...]
    predicted: Metrics
    planning_time_s: float = 0.0
    seed: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def cuts(self) -> tuple[int, ...]:
        """0-based piece indices after which the plan cuts (the input of ``coinfer.split``)."""
        return tuple(s.last for s in self.stages[:-1])

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(d for s in self.stages for d in s.devices)

    def with_timing(self, planning_time_s: float) -> Plan:
        return replace(self, planning_time_s=planning_time_s)

    def __str__(self) -> str:
        stages = " | ".join(str(s) for s in self.stages)
        p = self.predicted
        return (
            f"Plan({self.algo}, {self.objective}: {stages}; latency {p.latency_s * 1e3:.3f} ms, "
            f"{p.throughput_rps:.3f} req/s)"
        )

    # ----- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            sd: dict[str, Any] = {"pieces": [s.first, s.last], "devices": list(s.devices)}
            if s.freqs is not None:
                sd["freqs"] = list(s.freqs)
            stages.append(sd)
        out: dict[str, Any] = {
            "algo": self.algo,
            "objective": self.objective,
            "stages": stages,
            "predicted": self.predicted.to_dict(),
            "planning_time_s": self.planning_time_s,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.details:
            out["details"] = _jsonable(self.details)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "plan") -> Plan:
        try:
            m = _PlanModel.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            raise InputError(f"{origin}: field '{loc}': {err['msg']}") from None
        stages = tuple(
            Stage(s.pieces[0], s.pieces[1], tuple(s.devices), tuple(s.freqs) if s.freqs else None)
            for s in m.stages
        )
        pred = m.predicted
        return cls(
            algo=m.algo,
            objective=check_objective(m.objective),
            stages=stages,
            predicted=Metrics(pred.latency_s, pred.period_s, pred.energy_j),
            planning_time_s=m.planning_time_s,
            seed=m.seed,
            details=m.details or {},
        )

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        data = parse_json(read_text(p, "plan file"), str(p))
        if not isinstance(data, dict):
            raise InputError(f"{p}: a plan file must hold a JSON object")
        return cls.from_dict(data, origin=str(p))


class _StageModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pieces: tuple[int, int]
    devices: list[str] = Field(min_length=1)
    freqs: list[float] | None = None


class _PredictedModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    latency_s: float
    period_s: float
    energy_j: float | None = None


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algo: str
    objective: str
    stages: list[_StageModel] = Field(min_length=1)
    predicted: _PredictedModel
    planning_time_s: float = 0.0
    seed: int | None = None
    details: dict[str, Any] | None = None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def stages_from_cuts(
    cuts: Sequence[int], devices: Sequence[str], num_pieces: int
) -> tuple[Stage, ...]:
    """Build one-device stages from cut points (0-based, after which to cut) and a device order."""
    bounds = [-1, *sorted(cuts), num_pieces - 1]
    if len(devices) != len(bounds) - 1:
        raise InputError(f"{len(cuts)} cuts need {len(bounds) - 1} devices, got {len(devices)}")
    return tuple(Stage(bounds[i] + 1, bounds[i + 1], (devices[i],)) for i in range(len(devices)))
