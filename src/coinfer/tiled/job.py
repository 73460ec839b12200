"""One device's part of a tiled run: build the block and suffix stages it hosts, run requests.

Why every worker rebuilds the model: the zoo's loader is seeded, so capturing and splitting the
same spec in every process gives identical weights with nothing on the wire (as the LLM workers
and ``build_stage`` do); each worker then keeps the fused block's modules if it computes tiles
and the suffix stages it hosts.

A device with a CPU quota is held for :meth:`~coinfer.runtime.emulation.Emulation.pad_s` after
each computation (a tile or a stage), so a burst does not run faster than the device — the
same rule as the pipeline workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..core.tiles import LayerSpec, Region
from ..runtime.transport import WireTensorSpec
from .program import TiledProgram, message_ids, messages, tile_regions_of


@dataclass
class TiledState:
    """What one worker holds: its rank, the program, the block's layers and its suffix stages."""

    rank: int
    prog: TiledProgram
    modules: list[nn.Module]
    specs: tuple[LayerSpec, ...]
    regions: list[tuple[Region, ...]]
    block_out: tuple[int, ...]  # (N, C, H, W) of the block's output
    stages: dict[int, nn.Module] = field(default_factory=dict)  # suffix index -> stage
    # what arrives at suffix stage j (and, last, the result the source gets back)
    stage_in: list[list[WireTensorSpec]] = field(default_factory=list)


def build(setup: dict[str, Any]) -> tuple[TiledState, dict[str, Any]]:
    """Load and capture the model, keep this device's share (see the module docstring)."""
    from ..graph import capture, split
    from ..graph.tiled import fusable_prefix, specs_from_modules
    from ..zoo import load_model

    prog = TiledProgram.from_dict(setup["program"])
    model, inputs = load_model(prog.model, prog.input_shape)
    graph = capture(model, inputs, max_pieces=prog.max_pieces, name=prog.model)
    prefix = fusable_prefix(graph)
    if len(prefix) < prog.depth:
        raise ValueError(
            f"only {len(prefix)} leading pieces can be tiled, the plan fuses {prog.depth}"
        )
    modules = [m for mods in prefix[: prog.depth] for m in mods]
    x = inputs[0]
    specs = specs_from_modules(modules, int(x.shape[1]))
    hw = (int(x.shape[2]), int(x.shape[3]))
    stages = split(graph, prog.cuts)
    block_out = tuple(stages[0].output_meta[0].shape)
    me = prog.devices[int(setup["rank"])]
    hosted = {j: stages[j + 1] for j, s in enumerate(prog.suffix) if s[2] == me}
    stage_in = [
        [WireTensorSpec(tuple(m.shape), m.dtype) for m in stages[j + 1].input_meta]
        for j in range(len(prog.suffix))
    ]
    result = [WireTensorSpec(tuple(m.shape), m.dtype) for m in stages[-1].output_meta]
    state = TiledState(
        int(setup["rank"]), prog, modules, specs, tile_regions_of(prog, specs, hw), block_out,
        hosted, [*stage_in, result],
    )  # fmt: skip
    del stages
    return state, {"tiles": sum(1 for d in prog.assignment if d == me), "stages": len(hosted)}


def _region_spec(region: Region, channels: int, batch: int) -> WireTensorSpec:

    r0, r1, c0, c1 = region
    return WireTensorSpec((batch, channels, r1 - r0, c1 - c0), "float32")


def run_job(
    st: TiledState,
    transport: Any,
    setup: dict[str, Any],
    job: dict[str, Any],
    emu: Any,
    emit: Callable[..., None],
) -> dict[str, Any]:
    """Run ``job["requests"]`` requests one after another (a latency plan: one in flight).

    The source reads the inputs from ``job["inputs"]``, writes the results to ``job["outputs"]``
    and reports each request's latency (first tile out → result back). Every device reports
    its computations as ``(request, kind, index, start, end)`` in Unix seconds."""
    from ..graph.tiled import run_tile

    prog = st.prog
    me = prog.devices[st.rank]
    src = prog.source
    n = int(job["requests"])
    ids = message_ids(prog, n)
    rank_of = {d: i for i, d in enumerate(prog.devices)}
    batch, in_ch = int(st.block_out[0]), st.specs[0].in_ch
    out_ch = st.specs[-1].out_ch
    mine = [t for t in prog.order if prog.assignment[t] == me]
    inputs: list[Tensor] = torch.load(job["inputs"]) if me == src else []
    computes: list[list[Any]] = []
    latencies: list[float] = []
    spans: list[list[float]] = []  # per request at the source: Unix start and end
    results: list[list[Tensor]] = []
    busy = pad_total = 0.0

    def timed(r: int, kind: str, idx: int, fn: Callable[[], Any]) -> Any:
        nonlocal busy, pad_total
        t0, c0, u0 = time.perf_counter(), time.thread_time(), time.time()
        with torch.no_grad():
            y = fn()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        pad = emu.pad_s(cpu, wall) if emu is not None else 0.0
        if pad > 0:
            time.sleep(pad)
        busy += wall + pad
        pad_total += pad
        computes.append([r, kind, idx, u0, time.time()])
        return y

    def send(r: int, what: tuple[str, int], dst: str, ts: list[Tensor]) -> None:
        transport.send(rank_of[dst], ids[(r, what)], ts, [WireTensorSpec.of(t) for t in ts])

    def recv(r: int, what: tuple[str, int], frm: str, metas: list[Any]) -> Any:
        return transport.post_recv(rank_of[frm], ids[(r, what)], metas)

    seen = len(transport.events) if transport is not None else 0  # earlier jobs' transfers
    start = time.perf_counter()
    for r in range(n):
        if me == src:
            t0, u0 = time.perf_counter(), time.time()
            x = inputs[r]
            for t in prog.order:  # ship every remote tile's input region, in shipping order
                d = prog.assignment[t]
                if d != src:
                    a = st.regions[t][0]
                    send(r, ("in", t), d, [x[:, :, a[0] : a[1], a[2] : a[3]].contiguous()])
            back = {
                t: recv(r, ("out", t), prog.assignment[t], [_region_spec(st.regions[t][-1], out_ch, batch)])
                for t in prog.order
                if prog.assignment[t] != src
            }  # fmt: skip
            y = x.new_empty(st.block_out)
            for t in mine:
                a, o = st.regions[t][0], st.regions[t][-1]
                part = x[:, :, a[0] : a[1], a[2] : a[3]]
                y[:, :, o[0] : o[1], o[2] : o[3]] = timed(
                    r,
                    "tile",
                    t,
                    lambda p=part, t=t: run_tile(st.modules, st.specs, st.regions[t], p),
                )
            for t, pending in back.items():
                o = st.regions[t][-1]
                y[:, :, o[0] : o[1], o[2] : o[3]] = pending.wait(transport.timeout_s)[0]
            ys: list[Tensor] = [y]
        else:
            posted = [
                recv(r, ("in", t), src, [_region_spec(st.regions[t][0], in_ch, batch)])
                for t in mine
            ]
            for t, pending in zip(mine, posted, strict=True):
                part = pending.wait(transport.timeout_s)[0]
                out = timed(
                    r,
                    "tile",
                    t,
                    lambda p=part, t=t: run_tile(st.modules, st.specs, st.regions[t], p),
                )
                send(r, ("out", t), src, [out])
            ys = []
        holder = src
        for j, (_f, _l, dev) in enumerate(prog.suffix):
            if dev != holder:
                if me == holder:
                    send(r, ("stage", j), dev, ys)
                if me == dev:
                    ys = recv(r, ("stage", j), holder, st.stage_in[j]).wait(transport.timeout_s)
            if me == dev:
                ys = list(timed(r, "stage", j, lambda j=j, ys=ys: st.stages[j](*ys)))
            holder = dev
        if holder != src:
            if me == holder:
                send(r, ("stage", len(prog.suffix)), src, ys)
            if me == src:
                ys = recv(r, ("stage", len(prog.suffix)), holder, st.stage_in[-1]).wait(
                    transport.timeout_s
                )
        if me == src:
            latencies.append(time.perf_counter() - t0)
            spans.append([u0, time.time()])
            results.append([t.clone() for t in ys])
    if transport is not None:
        transport.flush()
    if me == src and job.get("outputs"):
        torch.save(results, job["outputs"])
    transfers = (
        [[e.kind, e.message, e.peer, e.start_s, e.end_s, e.nbytes] for e in transport.events[seen:]]
        if transport is not None
        else []
    )
    return {
        "latencies_s": latencies,
        "spans": spans,
        "busy_s": busy,
        "pad_s": pad_total,
        "wall_s": time.perf_counter() - start,
        "computes": computes,
        "transfers": transfers,
        "messages": len(messages(prog)),
    }
