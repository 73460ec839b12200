"""Schedules: per-device ordered actions, the single input of the simulator and the runtime.

A :class:`Schedule` maps each device to the ordered tuple of :class:`Action` it performs. An
action is one of

- ``recv``: receive the activations of ``request`` for ``stage`` from ``peer``;
- ``compute``: run pieces ``first..last`` of ``stage`` on ``request``;
- ``send``: send the result of ``request`` after ``stage`` to ``peer``.

``stage == -1`` denotes the source's own role: sending the input (``send`` with stage -1) and
receiving the final output (``recv`` with stage = number of stages). Each action has a compact
text form (``R3.1<a``, ``C3.1``, ``S3.1>b``) whose parser :meth:`Action.parse` is its exact inverse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, parse_json, read_text

ActionKind = Literal["recv", "compute", "send"]
_KIND_CODE = {"recv": "R", "compute": "C", "send": "S"}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
_PATTERN = re.compile(
    r"^(?P<code>[RCS])(?P<req>\d+)\.(?P<stage>-?\d+)"
    r"(?:(?P<dir>[<>])(?P<peer>[^\s:\[]+))?(?:\[(?P<first>\d+)-(?P<last>\d+)\])?(?::(?P<nbytes>\d+))?$"
)


@dataclass(frozen=True, slots=True)
class Action:
    """One step of one device. ``nbytes`` is the payload of a transfer (0 for compute)."""

    kind: ActionKind
    request: int
    stage: int
    peer: str | None = None
    first: int | None = None
    last: int | None = None
    nbytes: int = 0

    def __str__(self) -> str:
        s = f"{_KIND_CODE[self.kind]}{self.request}.{self.stage}"
        if self.kind == "recv":
            s += f"<{self.peer}"
        elif self.kind == "send":
            s += f">{self.peer}"
        if self.first is not None and self.last is not None:
            s += f"[{self.first}-{self.last}]"
        if self.nbytes:
            s += f":{self.nbytes}"
        return s

    @classmethod
    def parse(cls, text: str) -> Action:
        m = _PATTERN.match(text.strip())
        if m is None:
            raise InputError(f"cannot parse schedule action {text!r}")
        kind = _CODE_KIND[m["code"]]
        return cls(
            kind=kind,  # type: ignore[arg-type]
            request=int(m["req"]),
            stage=int(m["stage"]),
            peer=m["peer"],
            first=int(m["first"]) if m["first"] is not None else None,
            last=int(m["last"]) if m["last"] is not None else None,
            nbytes=int(m["nbytes"]) if m["nbytes"] is not None else 0,
        )


@dataclass(frozen=True)
class Schedule:
    """Per-device action lists plus what produced them.

    ``requests`` is the number of requests (micro-batches) in the stream; ``microbatch`` the
    samples per request; ``assignment[r][k]`` the device serving stage ``k`` of request ``r``
    (replicated stages spread requests over their replicas); ``source`` where requests arrive.
    """

    actions: Mapping[str, tuple[Action, ...]]
    requests: int
    microbatch: int
    source: str
    assignment: tuple[tuple[str, ...], ...]
    plan: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # Closed-loop window: at most this many requests in flight (None = not fixed by the schedule).
    window: int | None = None

    def __str__(self) -> str:
        lines = [f"Schedule({self.requests} requests x {self.microbatch}, source={self.source})"]
        for dev, acts in self.actions.items():
            lines.append(f"  {dev}: " + " ".join(str(a) for a in acts))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "microbatch": self.microbatch,
            "source": self.source,
            "assignment": [list(a) for a in self.assignment],
            "actions": {d: [str(a) for a in acts] for d, acts in self.actions.items()},
            "plan": dict(self.plan),
            **({"window": self.window} if self.window is not None else {}),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        try:
            return cls(
                actions={
                    d: tuple(Action.parse(a) for a in acts) for d, acts in data["actions"].items()
                },
                requests=int(data["requests"]),
                microbatch=int(data["microbatch"]),
                source=str(data["source"]),
                assignment=tuple(tuple(a) for a in data["assignment"]),
                plan=dict(data.get("plan") or {}),
                window=int(data["window"]) if data.get("window") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"schedule: missing or malformed field ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        p = Path(path)
        return cls.from_dict(parse_json(read_text(p, "schedule"), str(p)))
