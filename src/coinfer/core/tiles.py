"""Fused-layer tile geometry: which input region each output tile of a conv block needs.

A run of convolution-like layers can be cut spatially into a grid of output tiles; walking a
tile backwards through the layers widens its region by each layer's receptive field, so
neighbouring tiles overlap (the halo) and compute some of the same pixels. The fused planner
(:mod:`coinfer.plan.fused.planner`) prices tiles with these regions and the tiled executor
(:mod:`coinfer.graph.tiled`) computes them; both must agree on every region, so the geometry
is shared vocabulary and lives here, free of torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import InputError

LayerKind = Literal["conv", "maxpool", "avgpool", "pointwise"]
Region = tuple[int, int, int, int]  # rows [r0, r1), cols [c0, c1)

# float32 activations: 4 bytes per element (what the capture helper counts too).
BYTES_PER_ELEMENT = 4
# FLOPs per output element per channel of an element-wise layer (relu = 1 compare; batch
# norm = 1 multiply + 1 add after folding: counted as 1, an order-of-magnitude figure).
POINTWISE_FLOPS = 1.0


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One fusable layer: its kind, window geometry (rows, cols) and channels."""

    kind: LayerKind
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    in_ch: int = 1
    out_ch: int = 1
    groups: int = 1

    def out_len(self, n: int, axis: int) -> int:
        """Output length along ``axis`` (0 rows, 1 cols) for input length ``n`` (floor mode)."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return (n + 2 * p - d * (k - 1) - 1) // s + 1

    def in_range(self, a: int, b: int, axis: int) -> tuple[int, int]:
        """Unclipped input range ``[lo, hi)`` that outputs ``[a, b)`` read along ``axis``."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return a * s - p, (b - 1) * s - p + d * (k - 1) + 1

    def flops_per_output(self) -> float:
        """FLOPs per output element per output channel (2 x MACs for conv, as the graph helper)."""
        if self.kind == "conv":
            return 2.0 * (self.in_ch // self.groups) * self.kernel[0] * self.kernel[1]
        if self.kind in ("maxpool", "avgpool"):
            return float(self.kernel[0] * self.kernel[1])
        return POINTWISE_FLOPS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "layer") -> LayerSpec:
        try:
            kind = d["kind"]
            if kind not in ("conv", "maxpool", "avgpool", "pointwise"):
                raise InputError(
                    f"{where}: kind {kind!r} is not conv, maxpool, avgpool or pointwise"
                )
            pair = {
                k: tuple(int(x) for x in d[k])
                for k in ("kernel", "stride", "padding", "dilation")
                if k in d
            }
            other = {k: int(d[k]) for k in ("in_ch", "out_ch", "groups") if k in d}
            spec = cls(kind, **pair, **other)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: bad layer spec {dict(d)!r} ({exc})") from None
        if any(len(getattr(spec, k)) != 2 for k in ("kernel", "stride", "padding", "dilation")):
            raise InputError(f"{where}: kernel/stride/padding/dilation must be pairs (rows, cols)")
        if min(*spec.kernel, *spec.stride, *spec.dilation) < 1 or min(spec.padding) < 0:
            raise InputError(f"{where}: kernel/stride/dilation must be >= 1 and padding >= 0")
        return spec


# ----- geometry and the tile plan ---------------------------------------------------------------


def output_hw(specs: Sequence[LayerSpec], input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Spatial size at every level: ``[input, after layer 1, ..., after layer L]``."""
    sizes = [tuple(input_hw)]
    for i, s in enumerate(specs):
        h, w = s.out_len(sizes[-1][0], 0), s.out_len(sizes[-1][1], 1)
        if h < 1 or w < 1:
            raise InputError(f"fused: layer {i} ({s.kind}) shrinks {sizes[-1]} to nothing")
        sizes.append((h, w))
    return sizes  # type: ignore[return-value]


def tile_regions(
    specs: Sequence[LayerSpec], sizes: Sequence[tuple[int, int]], out: Region
) -> list[Region]:
    """Clipped region of every level that output tile ``out`` needs (level 0 = input)."""
    regs = [out]
    for lvl in range(len(specs), 0, -1):
        s = specs[lvl - 1]
        r0, r1, c0, c1 = regs[-1]
        lo_r, hi_r = s.in_range(r0, r1, 0)
        lo_c, hi_c = s.in_range(c0, c1, 1)
        h, w = sizes[lvl - 1]
        regs.append((max(0, lo_r), min(h, hi_r), max(0, lo_c), min(w, hi_c)))
    return regs[::-1]


def splits(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` near-equal contiguous ranges covering ``[0, n)``."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


@dataclass(frozen=True, slots=True)
class Tile:
    """One output tile: grid position, per-level regions, FLOPs (halo included), bytes in/out."""

    pos: tuple[int, int]
    regions: tuple[Region, ...]
    flops: float
    in_elems: int
    out_elems: int


@dataclass(frozen=True, slots=True)
class TilePlan:
    """Every tile of a grid, with the halo redundancy it costs."""

    grid: tuple[int, int]
    sizes: tuple[tuple[int, int], ...]
    tiles: tuple[Tile, ...]
    untiled_flops: float

    @property
    def tiled_flops(self) -> float:
        return sum(t.flops for t in self.tiles)

    @property
    def redundancy(self) -> float:
        """Extra FLOPs from halos, as a fraction of the untiled FLOPs (0 = none)."""
        return self.tiled_flops / self.untiled_flops - 1.0


def _region_flops(specs: Sequence[LayerSpec], regs: Sequence[Region]) -> float:
    total = 0.0
    for lvl, s in enumerate(specs, start=1):
        r0, r1, c0, c1 = regs[lvl]
        total += (r1 - r0) * (c1 - c0) * s.out_ch * s.flops_per_output()
    return total


def tile_plan(
    specs: Sequence[LayerSpec], input_hw: tuple[int, int], grid: tuple[int, int]
) -> TilePlan:
    """Split the block's output into a ``grid = (rows, cols)`` of tiles and cost each tile."""
    sizes = output_hw(specs, input_hw)
    H, W = sizes[-1]
    gh, gw = grid
    if not (1 <= gh <= H and 1 <= gw <= W):
        raise InputError(f"fused: grid {grid} does not fit the {H}x{W} output")
    full = tile_regions(specs, sizes, (0, H, 0, W))
    tiles = []
    for i, (r0, r1) in enumerate(splits(H, gh)):
        for j, (c0, c1) in enumerate(splits(W, gw)):
            regs = tile_regions(specs, sizes, (r0, r1, c0, c1))
            a = regs[0]
            tiles.append(
                Tile(
                    (i, j),
                    tuple(regs),
                    _region_flops(specs, regs),
                    (a[1] - a[0]) * (a[3] - a[2]) * specs[0].in_ch,
                    (r1 - r0) * (c1 - c0) * specs[-1].out_ch,
                )
            )
    return TilePlan((gh, gw), tuple(sizes), tuple(tiles), _region_flops(specs, full))


# ----- cost model and assignment --------------------------------------------------------------
