"""What every device does for one request of a fused (tiled) plan — derived, not negotiated.

Why a shared program: the devices of a tiled run exchange many small messages per request
(input tiles out, output tiles back, then the layer-wise suffix), and each directed pair numbers
its messages by position. Every worker derives the same :func:`messages` list from the same
:class:`TiledProgram`, so both ends of every pair agree on the numbering without a word.

The program follows the ``"links"`` model of :mod:`coinfer.plan.fused.placement` (the price the
planner gives this plan): the source ships each tile's input region (halo included) in shipping
order, over the link to the tile's device — links to different devices carry tiles at the same
time — while it computes its own tiles; a device computes a tile when it has arrived and the
device is free, and returns the output over its own link; the source stitches the block's output
and the suffix stages run one after another, layer-wise, back to the source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.tiles import LayerSpec, Region, tile_plan
from ..errors import InputError


@dataclass(frozen=True, slots=True)
class TiledProgram:
    """A fused plan as the runtime needs it.

    ``devices`` is the rank order (``devices[0]`` is the source, where requests arrive and
    results leave); the first ``depth`` pieces are tiled on a ``grid``; ``assignment[t]`` is the
    device of tile ``t`` (tiles in row-major grid order), ``order`` the shipping order;
    ``suffix`` lists the layer-wise stages after the block as ``(first, last, device)``.
    """

    model: str
    devices: tuple[str, ...]
    depth: int
    grid: tuple[int, int]
    assignment: tuple[str, ...]
    order: tuple[int, ...]
    suffix: tuple[tuple[int, int, str], ...]
    input_shape: tuple[int, ...] | None = None
    max_pieces: int | None = None

    @property
    def source(self) -> str:
        return self.devices[0]

    def rank(self, device: str) -> int:
        return self.devices.index(device)

    @property
    def cuts(self) -> tuple[int, ...]:
        """Where the model is split: after the block, then after every suffix stage but the last."""
        return (self.depth - 1, *(last for _first, last, _d in self.suffix[:-1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "devices": list(self.devices),
            "depth": self.depth,
            "grid": list(self.grid),
            "assignment": list(self.assignment),
            "order": list(self.order),
            "suffix": [list(s) for s in self.suffix],
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "max_pieces": self.max_pieces,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TiledProgram:
        return cls(
            str(d["model"]),
            tuple(str(x) for x in d["devices"]),
            int(d["depth"]),
            (int(d["grid"][0]), int(d["grid"][1])),
            tuple(str(x) for x in d["assignment"]),
            tuple(int(x) for x in d["order"]),
            tuple((int(a), int(b), str(c)) for a, b, c in d["suffix"]),
            tuple(int(x) for x in d["input_shape"]) if d.get("input_shape") else None,
            d.get("max_pieces"),
        )


def program_of(
    plan: Any,
    model: str,
    source: str,
    num_pieces: int,
    *,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
) -> TiledProgram:
    """The program of a ``fused`` plan (``plan.details["fused"]`` used); :class:`InputError`
    for any other plan, or one whose suffix stages are not one device each."""
    fused = (getattr(plan, "details", None) or {}).get("fused")
    if not fused or not fused.get("used"):
        raise InputError(
            "the plan is not a fused (tiled) plan: plan it with --algo fused; a layer-wise plan "
            "runs through the ordinary pipeline"
        )
    depth = int(fused["depth"])
    stages = plan.stages
    if not stages or stages[0].first != 0 or stages[0].last != depth - 1:
        raise InputError(f"fused plan: its first stage must be the tiled block 0..{depth - 1}")
    suffix = []
    for st in stages[1:]:
        if len(st.devices) != 1:
            raise InputError(f"fused plan: suffix stage {st} must run on one device")
        suffix.append((st.first, st.last, st.devices[0]))
    if (suffix[-1][1] if suffix else depth - 1) != num_pieces - 1:
        raise InputError(f"fused plan does not cover the model's {num_pieces} pieces")
    assignment = tuple(str(d) for d in fused["assignment"])
    order = tuple(int(t) for t in fused.get("order") or range(len(assignment)))
    if sorted(order) != list(range(len(assignment))):
        raise InputError("fused plan: 'order' is not a permutation of its tiles")
    names = [source]
    for d in (*assignment, *(s[2] for s in suffix)):
        if d not in names:
            names.append(d)
    return TiledProgram(
        model, tuple(names), depth, (int(fused["grid"][0]), int(fused["grid"][1])), assignment,
        order, tuple(suffix), None if input_shape is None else tuple(int(x) for x in input_shape),
        max_pieces,
    )  # fmt: skip


def tile_regions_of(
    prog: TiledProgram, specs: Sequence[LayerSpec], input_hw: tuple[int, int]
) -> list[tuple[Region, ...]]:
    """Per tile, its region at every level of the block (level 0: the input with its halo)."""
    tp = tile_plan(specs, input_hw, prog.grid)
    if len(tp.tiles) != len(prog.assignment):
        raise InputError(
            f"fused plan: {len(prog.assignment)} tile devices for a {prog.grid} grid of {len(tp.tiles)}"
        )
    return [t.regions for t in tp.tiles]


@dataclass(frozen=True, slots=True)
class Message:
    """One transfer of a request: ``what`` is ``("in", tile)``, ``("out", tile)`` or
    ``("stage", j)`` (the input of suffix stage ``j``; ``j = len(suffix)``: the result)."""

    src: str
    dst: str
    what: tuple[str, int]


def messages(prog: TiledProgram) -> list[Message]:
    """Every transfer of one request, in program order (the order each pair numbers them)."""
    src = prog.source
    out = [
        Message(src, prog.assignment[t], ("in", t)) for t in prog.order if prog.assignment[t] != src
    ]
    out += [
        Message(prog.assignment[t], src, ("out", t))
        for t in prog.order
        if prog.assignment[t] != src
    ]
    holder = src
    for j, (_f, _l, dev) in enumerate(prog.suffix):
        if dev != holder:
            out.append(Message(holder, dev, ("stage", j)))
        holder = dev
    if holder != src:
        out.append(Message(holder, src, ("stage", len(prog.suffix))))
    return out


def message_ids(prog: TiledProgram, requests: int) -> dict[tuple[int, tuple[str, int]], int]:
    """``(request, what) -> id`` on its pair: ids count up per directed pair across requests."""
    per_pair: dict[tuple[str, str], int] = {}
    ids: dict[tuple[int, tuple[str, int]], int] = {}
    msgs = messages(prog)
    for r in range(requests):
        for m in msgs:
            k = per_pair.get((m.src, m.dst), 0)
            ids[(r, m.what)] = k
            per_pair[(m.src, m.dst)] = k + 1
    return ids


def pairs(prog: TiledProgram) -> set[tuple[str, str]]:
    """The directed pairs that carry messages (the links a run shapes)."""
    return {(m.src, m.dst) for m in messages(prog)}


__all__ = [
    "Message",
    "TiledProgram",
    "message_ids",
    "messages",
    "pairs",
    "program_of",
    "tile_regions_of",
]
