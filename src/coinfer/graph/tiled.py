"""Tiled execution of a fused conv block: compute each output tile through every layer, stitch.

The fused planner (:mod:`coinfer.plan.fused.planner`) decides how to tile a block of conv-like layers and
which device computes which tile; this module does the computing on real tensors, with the
regions of :mod:`coinfer.core.tiles`, and shows the tiled result equals the untiled forward.
It lives in ``graph`` (beside the stage modules) because it runs torch; planners never do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.tiles import LayerKind, LayerSpec, Region, output_hw, splits, tile_regions
from ..errors import InputError
from .model_graph import ModelGraph


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# Element-wise modules that commute with spatial tiling (names, so torch is not imported here).
_POINTWISE = {
    "ReLU", "ReLU6", "LeakyReLU", "SiLU", "GELU", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid",
    "ELU", "Identity", "Dropout", "Dropout2d", "BatchNorm2d",
}  # fmt: skip


def specs_from_modules(modules: Sequence[nn.Module], in_channels: int) -> tuple[LayerSpec, ...]:
    """Layer specs of a sequence of conv-ish modules; :class:`InputError` for anything else.

    Refused, with the reason: non-zero padding modes, string padding, ``ceil_mode`` pooling,
    average pooling that excludes padding from the count, batch norm or dropout in training
    mode (they would mix statistics across tiles).
    """
    specs: list[LayerSpec] = []
    ch = in_channels
    for i, m in enumerate(modules):
        name = type(m).__name__
        where = f"layer {i} ({name})"
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise InputError(
                    f"{where}: only explicit zero padding can be tiled (got {m.padding!r}, {m.padding_mode})"
                )
            if m.in_channels != ch:
                raise InputError(f"{where}: expects {m.in_channels} input channels, gets {ch}")
            specs.append(
                LayerSpec(
                    "conv",
                    _pair(m.kernel_size),
                    _pair(m.stride),
                    _pair(m.padding),
                    _pair(m.dilation),
                    ch,
                    m.out_channels,
                    m.groups,
                )
            )
            ch = m.out_channels
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            if m.ceil_mode:
                raise InputError(f"{where}: ceil_mode pooling cannot be tiled")
            if isinstance(m, nn.AvgPool2d) and (not m.count_include_pad or m.divisor_override):
                raise InputError(
                    f"{where}: average pooling must count padding (count_include_pad=True)"
                )
            dil = _pair(m.dilation) if isinstance(m, nn.MaxPool2d) else (1, 1)
            kind: LayerKind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
            specs.append(
                LayerSpec(
                    kind, _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), dil, ch, ch
                )
            )
        elif name in _POINTWISE:
            if name.startswith(("BatchNorm", "Dropout")) and m.training:
                raise InputError(
                    f"{where}: put the model in eval mode; training-mode {name} mixes tiles"
                )
            specs.append(LayerSpec("pointwise", in_ch=ch, out_ch=ch))
        else:
            raise InputError(
                f"{where}: cannot tile this layer (conv, pooling and element-wise layers only)"
            )
    if not specs:
        raise InputError("fused: no layers to tile")
    return tuple(specs)


def run_tile(
    modules: Sequence[nn.Module],
    specs: Sequence[LayerSpec],
    regions: Sequence[Region],
    t: torch.Tensor,
) -> torch.Tensor:
    """One tile through every fused layer: ``t`` is the input ``regions[0]`` (halo included),
    the result the output ``regions[-1]``.

    At every layer the tile is padded exactly where the untiled layer would pad (zeros for
    conv/avg-pool, ``-inf`` for max-pool) and run with padding 0, so a stitched output equals
    the untiled forward up to float round-off in convolutions. This is all a device computing
    tiles needs — the regions come with the tile (see :func:`coinfer.core.tiles.tile_plan`).
    """
    with torch.no_grad():
        for lvl, (s, m) in enumerate(zip(specs, modules, strict=True), start=1):
            if s.kind == "pointwise":
                t = m(t)
                continue
            have, want = regions[lvl - 1], regions[lvl]
            lo_r, hi_r = s.in_range(want[0], want[1], 0)
            lo_c, hi_c = s.in_range(want[2], want[3], 1)
            # F.pad order: left, right, top, bottom — what the image border clipped away
            pad = (have[2] - lo_c, hi_c - have[3], have[0] - lo_r, hi_r - have[1])
            fill = -math.inf if s.kind == "maxpool" else 0.0
            if any(pad):
                t = F.pad(t, pad, value=fill)
            if s.kind == "conv":
                t = F.conv2d(t, m.weight, m.bias, s.stride, 0, s.dilation, s.groups)
            elif s.kind == "maxpool":
                t = F.max_pool2d(t, s.kernel, s.stride, 0, s.dilation)
            else:
                t = F.avg_pool2d(t, s.kernel, s.stride, 0)
    return t


def run_tiled(
    modules: nn.Sequential | Sequence[nn.Module], x: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Run ``modules`` on ``x`` tile by tile (fused through every layer) and stitch the output.

    Each output tile's input region comes from :func:`tile_regions`, and :func:`run_tile`
    computes it. ``x`` is ``(N, C, H, W)``. Raises :class:`InputError` for layers that cannot be
    tiled (see :func:`specs_from_modules`).
    """
    if x.dim() != 4:
        raise InputError(f"run_tiled: input must be (N, C, H, W), got shape {tuple(x.shape)}")
    mods = list(modules)
    specs = specs_from_modules(mods, int(x.shape[1]))
    sizes = output_hw(specs, (int(x.shape[2]), int(x.shape[3])))
    H, W = sizes[-1]
    gh, gw = grid
    if not (1 <= gh <= H and 1 <= gw <= W):
        raise InputError(f"run_tiled: grid {grid} does not fit the {H}x{W} output")
    out = x.new_empty((x.shape[0], specs[-1].out_ch, H, W))
    for r0, r1 in splits(H, gh):
        for c0, c1 in splits(W, gw):
            regs = tile_regions(specs, sizes, (r0, r1, c0, c1))
            a = regs[0]
            out[:, :, r0:r1, c0:c1] = run_tile(mods, specs, regs, x[:, :, a[0] : a[1], a[2] : a[3]])
    return out


def fusable_prefix(graph: ModelGraph) -> list[list[nn.Module]]:
    """The modules of each leading piece of ``graph`` that a fused block can tile, in order.

    A piece qualifies when it is a straight chain of tileable modules (see
    :func:`specs_from_modules`) fed only by the previous piece's single output (the first by
    the model's single 4-d input) and whose intermediate values nothing else reads; the walk
    stops at the first piece that does not. Empty when the model does not start that way.
    The modules are the captured graph's own (the model's weights, never copies).
    """
    c = graph._captured
    if c is None or len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 4:
        return []
    modules = dict(c.gm.named_modules())
    prev = c.input_names[0]
    ch = int(graph.inputs[0].shape[1])
    out: list[list[nn.Module]] = []
    for piece in graph.pieces:
        mods: list[nn.Module] = []
        for name in piece.nodes:
            node = graph.node(name)
            path = node.target.partition(":")[2]
            if node.op == "output" or not path or node.inputs != (prev,) or path not in modules:
                return out
            if len(c.users.get(prev, ())) != 1 and prev != c.input_names[0]:
                return out  # an intermediate value read elsewhere (a skip) cannot be tiled
            mods.append(modules[path])
            prev = name
        try:
            specs = specs_from_modules(mods, ch)
        except InputError:
            return out
        ch = specs[-1].out_ch
        if len(piece.cut_tensors) != 1:
            return out
        out.append(mods)
    return out


def fusable_meta(graph: ModelGraph) -> dict[str, Any]:
    """What the ``fused`` planner reads from an instance: the layer specs of every tileable
    leading piece (``conv_piece_layers``) and the input's rows x cols; ``{}`` when none."""
    prefix = fusable_prefix(graph)
    if not prefix:
        return {}
    shape = graph.inputs[0].shape
    ch, groups = int(shape[1]), []
    for mods in prefix:
        specs = specs_from_modules(mods, ch)
        # lists, not tuples: the meta is JSON (an instance file round-trips it unchanged)
        groups.append(
            [
                {k: list(v) if isinstance(v, tuple) else v for k, v in s.to_dict().items()}
                for s in specs
            ]
        )
        ch = specs[-1].out_ch
    return {"conv_piece_layers": groups, "conv_input_hw": [int(shape[2]), int(shape[3])]}
