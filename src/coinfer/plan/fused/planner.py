"""Fused-layer spatial partitioning (S2 + DeepThings' fused tile partitioning, FTP).

A run of convolution-like layers (conv, pooling, element-wise activations, eval-mode batch
norm) can be cut *spatially*: split the last layer's output into a grid of tiles, walk each
tile backwards through the layers to find the input region it needs — every layer widens the
region by its receptive field (kernel, stride, padding, dilation), so neighbouring tiles
overlap (the *halo*) — and let several devices each compute whole tiles through all fused
layers with no communication in between. The price is redundant computation in the halos;
the gain is parallelism on one request, which a layer-wise pipeline cannot give to latency.

Two parts:

1. **Planning.** :func:`tile_plan` computes each tile's per-layer regions, FLOPs (halo
   included) and input/output bytes; :func:`assign_tiles` places tiles on devices greedily
   (largest tile first, onto the device that would finish it soonest) under the cost model
   below; :func:`plan_fused` tries every fused depth x grid up to ``max_tiles`` tiles, places
   tiles by PSOMW (S2's swarm with the minimising-waiting repair, :mod:`.placement`, seeded
   with the greedy placements) or greedily, and compares with the best layer-wise plan without
   fused layers (NFL, exact one-device-per-stage latency).
2. **Execution** is not here (planners never run torch): :func:`coinfer.graph.tiled.run_tiled`
   computes the tiles on real tensors with the same regions (:mod:`coinfer.core.tiles`) and
   stitches the output, reproducing the untiled result (bit-exact for pooling/activations,
   float round-off for convolutions, which the tests bound at 1e-5).

Cost model (reduces to the reference model for a 1x1 grid on one device): device ``d``'s
speed is the block's untiled FLOPs divided by ``instance.compute_s(0, P-1, d)``; a tile's
input bytes are ``b[0]`` scaled by its input area, its output bytes ``b[P]`` scaled by its
output area; the source ships input tiles over each device's own link while the devices work
in parallel, each device receiving, computing and returning its tiles one after another:
``finish_d = sum over its tiles (in_s + flops / speed_d + out_s)``, latency = ``max_d finish_d``.
Links to different devices do not contend (the reference model's per-link view).
That is the ``"serial"`` link model; ``FusedOptions(link_model="pipelined")`` instead has the
source ship tiles one at a time over one radio in a chosen order while devices compute (see
:mod:`.placement`), where the shipping order matters.

The reference cost model has no spatial split, so the Plan's single stage lists the devices
that compute tiles (as replicas — every one holds the whole block, as fused tiling requires)
and ``predicted`` is the reference view of that stage; the tiled figures (grid, assignment,
fused latency, redundancy, NFL latency) are in ``details["fused"]``. Via the registry the conv
spec travels in ``instance.meta["conv_layers"]`` (see :func:`conv_instance`); a plain instance
without it is refused with an :class:`InputError`. With one spec layer per piece the fused
depth is searched (the first ``k`` pieces tiled, the rest layer-wise).

Why one module: the planner's candidate loop (depth x grid), its greedy placement, the NFL baseline
and the conv-instance builder share one cost model (the serial/pipelined tile latency above) and
one ``instance.meta`` contract; the geometry and the torch execution already live elsewhere.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...core.evaluate import validate_stages
from ...core.instance import Device, Instance, Link, make_instance
from ...core.plans import Objective, Plan, Stage, check_objective
from ...core.tiles import (
    BYTES_PER_ELEMENT,
    LayerSpec,
    Tile,
    TilePlan,
    output_hw,
    tile_plan,
)
from ...errors import InfeasibleError, InputError
from .._shared import finish, order_dp
from .placement import (
    LINK_MODELS,
    LinkModel,
    Solution,
    TileCosts,
    _check_model,
    eft_pipelined,
    lpt_order,
    mw_order,
    psomw_tiles,
    schedule_latency,
    tile_costs,
)


@dataclass(frozen=True, slots=True)
class FusedResult:
    """A grid, its tile -> device assignment and the figures of the cost model."""

    grid: tuple[int, int]
    assignment: tuple[str, ...]  # device of each tile, in TilePlan.tiles order
    latency_s: float
    finish_s: Mapping[str, float]
    redundancy: float
    order: tuple[int, ...] = ()  # shipping order of the tiles (pipelined link model)


def assign_tiles(instance: Instance, plan: TilePlan, devices: Sequence[str]) -> FusedResult:
    """Greedy list scheduling: largest tile first, onto the device that finishes it soonest.

    Exact for one tile or one device; otherwise the classic LPT heuristic (within 4/3 of the
    best makespan on identical machines).
    """
    if not devices:
        raise InfeasibleError(f"{instance.name}: no device can hold the fused block")
    src = instance.source
    P = instance.num_pieces
    in_area = plan.sizes[0][0] * plan.sizes[0][1]
    out_area = plan.sizes[-1][0] * plan.sizes[-1][1]
    speed = {d: plan.untiled_flops / max(instance.compute_s(0, P - 1, d), 1e-300) for d in devices}

    def cost(tile: Tile, d: str) -> float:
        a = tile.regions[0]
        r = tile.regions[-1]
        nin = instance.input_bytes * (a[1] - a[0]) * (a[3] - a[2]) / in_area
        nout = instance.output_bytes * (r[1] - r[0]) * (r[3] - r[2]) / out_area
        return (
            instance.transfer_s(src, d, nin)
            + tile.flops / speed[d]
            + instance.transfer_s(d, src, nout)
        )

    finish = dict.fromkeys(devices, 0.0)
    assignment: dict[int, str] = {}
    order = sorted(range(len(plan.tiles)), key=lambda i: -plan.tiles[i].flops)
    for i in order:
        d = min(devices, key=lambda x: (finish[x] + cost(plan.tiles[i], x), x != src))
        finish[d] += cost(plan.tiles[i], d)
        assignment[i] = d
    used = {d: t for d, t in finish.items() if t > 0 or d in assignment.values()}
    return FusedResult(
        plan.grid,
        tuple(assignment[i] for i in range(len(plan.tiles))),
        max(finish.values()),
        used,
        plan.redundancy,
    )


@dataclass(frozen=True, slots=True)
class FusedOptions:
    """Options of :func:`plan_fused`.

    ``layers``/``input_hw`` override ``instance.meta["conv_layers"]``/``["conv_input_hw"]``;
    ``max_tiles`` bounds the grids tried (all ``rows x cols <= max_tiles``); ``search_depth``
    also tries fusing only the first ``k`` pieces (needs one spec layer per piece), the rest
    running layer-wise from the source. ``search`` places tiles by PSOMW (``"pso"``, seeded with
    ``seed``, ``particles`` x ``iterations``, over the ``pso_candidates`` best depth x grid
    candidates) or greedy LPT only; ``link_model`` is the cost model of the tile transfers
    (``"serial"`` per-link, ``"pipelined"`` one source radio + overlap, or ``"links"`` one
    link per device + overlap — what the tiled runtime does; see
    :mod:`.placement`).
    """

    layers: tuple[LayerSpec, ...] | None = None
    input_hw: tuple[int, int] | None = None
    max_tiles: int = 16
    search_depth: bool = True
    # PSOMW by default: seeded with greedy's solutions it is never worse (tests check it).
    search: Literal["pso", "greedy"] = "pso"
    link_model: LinkModel = "serial"
    seed: int = 0
    # Swarm size: 30 particles x 60 iterations = 1,800 schedule evaluations, ~0.1-1 s here.
    particles: int = 30
    iterations: int = 60
    # The swarm searches depth x grid among this many best candidates by greedy latency.
    pso_candidates: int = 12


def _spec_of(
    instance: Instance, opts: FusedOptions
) -> tuple[list[tuple[LayerSpec, ...]], tuple[int, int], bool]:
    """The layers of the leading pieces, grouped per piece, the input's rows x cols, and whether
    the grouping is per piece (so the fused depth can be chosen) or one block of all pieces."""
    P = instance.num_pieces
    layers, hw = opts.layers, opts.input_hw
    groups: list[tuple[LayerSpec, ...]] | None = None
    if layers is None and instance.meta.get("conv_piece_layers"):
        raw_groups = instance.meta["conv_piece_layers"]
        if not isinstance(raw_groups, list) or not 1 <= len(raw_groups) <= P:
            raise InputError(
                f"{instance.name}: meta 'conv_piece_layers' must list 1..{P} pieces' layers"
            )
        groups = []
        for p, raw in enumerate(raw_groups):
            if not isinstance(raw, list) or not raw:
                raise InputError(f"{instance.name}: meta.conv_piece_layers[{p}] must list layers")
            groups.append(
                tuple(
                    LayerSpec.from_dict(d, f"meta.conv_piece_layers[{p}][{i}]")
                    for i, d in enumerate(raw)
                )
            )
    elif layers is None:
        raw = instance.meta.get("conv_layers")
        if not raw:
            raise InputError(
                f"{instance.name}: fused needs a conv layer spec (instance meta 'conv_layers' + 'conv_input_hw', "
                "or FusedOptions.layers); build one with coinfer.plan.fused.conv_instance"
            )
        layers = tuple(LayerSpec.from_dict(d, f"meta.conv_layers[{i}]") for i, d in enumerate(raw))
    if hw is None:
        raw_hw = instance.meta.get("conv_input_hw")
        if not raw_hw or len(raw_hw) != 2:
            raise InputError(
                f"{instance.name}: fused needs meta 'conv_input_hw' = [rows, cols] (got {raw_hw!r})"
            )
        hw = (int(raw_hw[0]), int(raw_hw[1]))
    if groups is not None:
        return groups, hw, True
    assert layers is not None
    if len(layers) == P:  # one spec layer per piece
        return [(s,) for s in layers], hw, True
    return [tuple(layers)], hw, False


def nfl_latency(instance: Instance, exact_devices: int = 7) -> tuple[float, tuple[Stage, ...]]:
    """Best layer-wise (no fused layers) latency: exact over one-device-per-stage plans.

    First the layered-graph route: it is the latency optimum over a superset of those plans,
    so when it neither revisits a device nor needed a memory repair it *is* the answer (one
    Dijkstra). Otherwise the fixed-order DP runs over every device order when there are at most
    ``exact_devices`` devices (7! = 5040 orders); above that the route is returned as is.
    """
    from ..graph.route import plan_route

    try:
        p = plan_route(instance, "latency")
    except InfeasibleError:
        p = None
    if p is not None and not p.details["revisits"] and p.details["memory_repairs"] == 0:
        return p.predicted.latency_s, p.stages
    if len(instance.devices) <= exact_devices:
        best: tuple[float, tuple[Stage, ...]] | None = None
        for order in itertools.permutations(instance.device_names):
            res = order_dp(instance, order, "latency")
            if res is not None and (best is None or res[0] < best[0]):
                best = res
        if best is None:
            raise InfeasibleError(f"{instance.name}: no layer-wise plan fits in memory")
        return best
    if p is None:
        raise InfeasibleError(f"{instance.name}: no layer-wise plan fits in memory")
    return p.predicted.latency_s, p.stages


def _greedy_costs(costs: TileCosts, flops: Sequence[float], src: str) -> tuple[int, ...]:
    """:func:`assign_tiles`' LPT rule on a cost table: device index of every tile."""
    finish = [0.0] * costs.num_devices
    tot = costs.total_s
    assign = [0] * costs.num_tiles
    for t in sorted(range(costs.num_tiles), key=lambda i: -flops[i]):
        j = min(
            range(costs.num_devices),
            key=lambda x: (finish[x] + tot[t, x], costs.devices[x] != src),
        )
        finish[j] += tot[t, j]
        assign[t] = j
    return tuple(assign)


def _lower_bound(c: _Cand, model: str) -> float:
    """Latency no placement of ``c``'s tiles can beat: its suffix plus the larger of the slowest
    tile at its best device and the perfectly balanced sum of best-device tile costs (compute
    only when pipelined, as transfers then overlap)."""
    best = c.costs.total_s.min(axis=1)
    work = best if model == "serial" else c.costs.comp_s.min(axis=1)
    return c.suffix[0] + max(float(best.max()), float(work.sum()) / c.costs.num_devices)


@dataclass(frozen=True)
class _Cand:
    """One fused depth x grid: its tile plan, feasible devices, costs and layer-wise suffix."""

    depth: int
    plan: TilePlan
    costs: TileCosts
    suffix: tuple[float, tuple[Stage, ...]]


def plan_fused(
    instance: Instance, objective: Objective = "latency", options: FusedOptions | None = None
) -> Plan:
    """Fused-layer tiling planner (S2 FL + DeepThings FTP). Heuristic (PSOMW or greedy placement).

    Candidates are every fused depth ``k`` (the first ``k`` pieces tiled, gathered at the
    source, the rest planned layer-wise by the exact NFL search) times every grid of at most
    ``max_tiles`` tiles. Each candidate first gets greedy LPT placement (shipped largest tile
    first); with ``search="pso"`` the PSOMW swarm (:func:`~.placement.psomw_tiles`) then searches
    candidate, placement and shipping order jointly over the ``pso_candidates`` best candidates,
    seeded with their greedy solutions (so it is never worse than greedy). Deep layers have
    small feature maps, where halos cost more than parallelism gains — that is what the depth
    choice captures. Latency objective only. Greedy costs ``O(P * G * T * D)`` for ``G`` grids of
    up to ``T`` tiles, plus ``P`` NFL searches; PSOMW adds ``particles * iterations`` schedule
    evaluations. If no fused plan beats the NFL optimum, the NFL plan is returned
    (``details["fused"]["used"] = False``, the best fused figures still reported).
    """
    started = time.perf_counter()
    objective = check_objective(objective)
    if objective != "latency":
        raise InputError(
            f"fused minimises latency (one request split spatially); objective {objective!r} is not supported"
        )
    opts = options or FusedOptions()
    if opts.search not in ("pso", "greedy"):
        raise InputError(f"fused: search {opts.search!r} is not 'pso' or 'greedy'")
    if opts.link_model not in LINK_MODELS:
        raise InputError(
            f"fused: link_model {opts.link_model!r} is not one of {', '.join(LINK_MODELS)}"
        )
    if opts.particles < 1 or opts.iterations < 0 or opts.pso_candidates < 1:
        raise InputError(
            f"fused: particles ({opts.particles}) and pso_candidates ({opts.pso_candidates}) must "
            f"be >= 1 and iterations ({opts.iterations}) >= 0"
        )
    groups, hw, per_piece = _spec_of(instance, opts)
    P = instance.num_pieces
    # per-piece layers: the fused depth can be chosen (up to the last tileable piece)
    if per_piece:
        depths = range(1, len(groups) + 1) if opts.search_depth else [len(groups)]
    else:
        depths = [P]
    cands: list[_Cand] = []
    greedy: list[Solution] = []
    for depth in depths:
        block = sub_instance(instance, 0, depth - 1)
        specs = tuple(s for g in groups[:depth] for s in g) if per_piece else groups[0]
        need = block.mem_bytes(0, depth - 1)
        devices = [d.name for d in instance.devices if d.mem_bytes >= need]
        if not devices:
            continue
        suffix = _suffix(instance, depth)
        if suffix is None:
            continue
        H, W = output_hw(specs, hw)[-1]
        for gh in range(1, min(H, opts.max_tiles) + 1):
            for gw in range(1, min(W, opts.max_tiles // gh) + 1):
                tp = tile_plan(specs, hw, (gh, gw))
                costs = tile_costs(block, tp, devices)
                assign = _greedy_costs(costs, [t.flops for t in tp.tiles], instance.source)
                order = lpt_order(costs, assign)
                lat = schedule_latency(costs, assign, order, opts.link_model)[0]
                greedy.append(Solution(len(cands), assign, order, lat + suffix[0]))
                cands.append(_Cand(depth, tp, costs, suffix))
    if not cands:
        raise InfeasibleError(
            f"{instance.name}: no fused block fits — every tile device must hold the block's "
            f"{instance.pieces[0].mem_bytes}+ bytes (largest device {max(d.mem_bytes for d in instance.devices)})"
        )

    def stages_of(sol: Solution) -> tuple[Stage, ...] | None:
        c = cands[sol.cand]
        names = {c.costs.devices[j] for j in sol.assign}
        used = tuple(d for d in instance.device_names if d in names)
        st = (Stage(0, c.depth - 1, used), *c.suffix[1])
        try:
            validate_stages(instance, st, allow_revisit=True)
        except InfeasibleError:
            return None  # a tile device also serving a suffix stage runs out of memory
        return st

    ranked = sorted(greedy, key=lambda s: (s.latency_s, s.cand))
    best_greedy = next(((s, st) for s in ranked if (st := stages_of(s)) is not None), None)
    if best_greedy is None:
        raise InfeasibleError(f"{instance.name}: no fused plan fits in memory")
    best, stages = best_greedy
    pso_info: dict[str, Any] | None = None
    if opts.search == "pso":
        # the swarm's seeds: greedy's placement per candidate; when the order matters, also
        # greedy's placement in the MW order and the radio-aware EFT schedule — the best of them
        seeds = list(greedy)
        if opts.link_model == "pipelined":
            for i, (s, c) in enumerate(zip(greedy, cands, strict=True)):
                o = mw_order(c.costs, s.assign)
                alt = [(s.assign, o), eft_pipelined(c.costs)]
                for a, o in alt:
                    lat = schedule_latency(c.costs, a, o, "pipelined")[0] + c.suffix[0]
                    if lat < seeds[i].latency_s:
                        seeds[i] = Solution(i, a, o, lat)
        # half the candidates by seed latency, the rest by a lower bound (greedy can misjudge a
        # grid whose tiles pack badly by LPT but well otherwise)
        k = max(1, opts.pso_candidates)
        by_seed = sorted(range(len(cands)), key=lambda i: (seeds[i].latency_s, i))
        by_bound = sorted(
            range(len(cands)), key=lambda i: (_lower_bound(cands[i], opts.link_model), i)
        )
        pick = list(dict.fromkeys(by_seed[: (k + 1) // 2] + by_bound))[:k]
        sub = [cands[i] for i in pick]
        init = [
            Solution(j, seeds[i].assign, seeds[i].order, seeds[i].latency_s)
            for j, i in enumerate(pick)
        ]
        rng = np.random.default_rng(opts.seed)
        sol, history = psomw_tiles(
            [c.costs for c in sub],
            [c.suffix[0] for c in sub],
            opts.link_model,
            rng,
            particles=opts.particles,
            iterations=opts.iterations,
            init=init,
        )
        sol = Solution(pick[sol.cand], sol.assign, sol.order, sol.latency_s)
        st = stages_of(sol)
        pso_info = {
            "particles": opts.particles,
            "iterations": opts.iterations,
            "candidates": len(sub),
            "history": history,
            "greedy_latency_s": best.latency_s,
            "fallback_to_greedy": st is None,
        }
        if st is not None and sol.latency_s <= best.latency_s:
            best, stages = sol, st
    c = cands[best.cand]
    block_lat, fin = schedule_latency(c.costs, best.assign, best.order, opts.link_model)
    names = [c.costs.devices[j] for j in best.assign]
    res = FusedResult(
        c.plan.grid,
        tuple(names),
        block_lat,
        {d: float(fin[j]) for j, d in enumerate(c.costs.devices) if d in set(names)},
        c.plan.redundancy,
        tuple(best.order),
    )
    total, depth = best.latency_s, c.depth
    nfl, nfl_stages = nfl_latency(instance)
    # Fusing must beat NFL by more than round-off (a 1x1 tile on one device ties with it).
    use_nfl = nfl <= total * (1 + 1e-9)
    if use_nfl:
        stages = nfl_stages
    revisit = len({d for st in stages for d in st.devices}) < sum(len(st.devices) for st in stages)
    details = {
        "allow_revisit": revisit,
        "fused": {
            "used": not use_nfl,
            "search": opts.search,
            "link_model": opts.link_model,
            "depth": depth,
            "grid": list(res.grid),
            "assignment": list(res.assignment),
            "order": list(res.order),
            "block_latency_s": res.latency_s,
            "latency_s": total,
            "suffix_latency_s": c.suffix[0],
            "greedy_latency_s": best_greedy[0].latency_s,
            "finish_s": dict(res.finish_s),
            "redundancy": res.redundancy,
            "grids_tried": len(cands),
            "suffix_stages": [str(st) for st in stages[1:]],
            **({"pso": pso_info} if pso_info is not None else {}),
        },
        "nfl_latency_s": nfl,
        "nfl_stages": [str(st) for st in nfl_stages],
        "speedup_vs_nfl": nfl / min(total, nfl) if total > 0 else math.inf,
    }
    seed = opts.seed if opts.search == "pso" else None
    return finish(instance, "fused", objective, stages, started=started, seed=seed, details=details)


def price_fused(
    instance: Instance, plan: Plan, link_model: LinkModel = "links"
) -> dict[str, float]:
    """A fused plan's latency under ``link_model``: its block (same grid, assignment and
    shipping order) plus its suffix stages through the reference model, back to the source.

    This is how a plan made under one link model is priced for a runtime that behaves like
    another (the tiled runtime does ``"links"``); returns ``block_s``, ``suffix_s``, ``latency_s``.
    """
    from ...core.evaluate import latency_s

    _check_model(link_model)
    fused = plan.details.get("fused") or {}
    if not fused.get("used"):
        raise InputError("price_fused: the plan is not a fused plan (details.fused.used)")
    groups, hw, per_piece = _spec_of(instance, FusedOptions())
    depth = int(fused["depth"])
    specs = tuple(s for g in groups[:depth] for s in g) if per_piece else groups[0]
    tp = tile_plan(specs, hw, (int(fused["grid"][0]), int(fused["grid"][1])))
    devices = tuple(dict.fromkeys(str(d) for d in fused["assignment"]))
    costs = tile_costs(sub_instance(instance, 0, depth - 1), tp, devices)
    assign = [devices.index(str(d)) for d in fused["assignment"]]
    block = schedule_latency(costs, assign, fused.get("order") or None, link_model)[0]
    suffix = [Stage(st.first - depth, st.last - depth, st.devices) for st in plan.stages[1:]]
    rest = (
        latency_s(sub_instance(instance, depth, instance.num_pieces - 1), suffix) if suffix else 0.0
    )
    return {"block_s": block, "suffix_s": rest, "latency_s": block + rest}


def sub_instance(instance: Instance, first: int, last: int) -> Instance:
    """Pieces ``first..last`` of ``instance`` as an instance of their own (same cluster)."""
    return Instance(
        instance.pieces[first : last + 1],
        instance.cut_bytes(first),
        instance.devices,
        instance.links,
        instance.source,
        name=f"{instance.name}[{first}:{last}]",
    )


def _suffix(instance: Instance, depth: int) -> tuple[float, tuple[Stage, ...]] | None:
    """Best layer-wise latency of pieces ``depth..P-1`` starting and ending at the source."""
    P = instance.num_pieces
    if depth >= P:
        return 0.0, ()
    try:
        lat, stages = nfl_latency(sub_instance(instance, depth, P - 1))
    except InfeasibleError:
        return None
    return lat, tuple(Stage(st.first + depth, st.last + depth, st.devices) for st in stages)


def conv_instance(
    layers: Sequence[LayerSpec],
    input_hw: tuple[int, int],
    device_flops: Mapping[str, float],
    links: Sequence[Link],
    source: str,
    *,
    mem_bytes: Mapping[str, int] | None = None,
    name: str = "conv-block",
) -> Instance:
    """An instance with one piece per layer of a conv block, times from FLOPs / device speed.

    ``device_flops`` is each device's sustained FLOP/s; piece memory is the layer's float32
    weights plus its output activation; the conv spec is stored in ``meta`` so the registry's
    ``fused`` planner can read it from the instance alone.
    """
    sizes = output_hw(layers, input_hw)
    times, mem, out = [], [], []
    for lvl, s in enumerate(layers, start=1):
        h, w = sizes[lvl]
        flops = h * w * s.out_ch * s.flops_per_output()
        times.append({d: flops / f for d, f in device_flops.items()})
        weights = (
            s.out_ch * (s.in_ch // s.groups) * s.kernel[0] * s.kernel[1] if s.kind == "conv" else 0
        )
        out.append(h * w * s.out_ch * BYTES_PER_ELEMENT)
        mem.append((weights + h * w * s.out_ch) * BYTES_PER_ELEMENT)
    in_bytes = input_hw[0] * input_hw[1] * layers[0].in_ch * BYTES_PER_ELEMENT
    # Default memory: 1 GB per device, far above a conv block's needs (an edge-board figure).
    devs = [Device(d, int((mem_bytes or {}).get(d, 1_000_000_000))) for d in device_flops]
    inst = make_instance(times, mem, out, in_bytes, devs, links, source, name=name)
    meta = {"conv_layers": [s.to_dict() for s in layers], "conv_input_hw": list(input_hw)}
    return Instance(
        inst.pieces, inst.input_bytes, inst.devices, inst.links, inst.source, name=name, meta=meta
    )
