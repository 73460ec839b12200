"""Everything a run needs decided before a process starts: model → stages → contracts →
schedule → one :class:`~.protocol.Setup` (and its blobs) per device.

A pure step — no process, socket, cgroup or clock — so the whole plan of a run can be built and
checked in a unit test: which device holds which stage, what tensors cross each cut, which
actions each device executes, how each link is emulated. The coordinator (:mod:`.coordinator`)
only adds what exists once the run starts: the run id, the rendezvous store's address and, with
network namespaces, the links as the namespaces shape them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..core.instance import Device, Instance, make_instance, network_of, surviving
from ..core.plans import Plan
from ..core.schedules import Schedule
from ..errors import InputError
from ..schedule import scheduler
from ..zoo import load_model
from . import emulation
from .protocol import EmulateConfig, Setup, StageAssignment
from .relays import route_run
from .sendorder import send_orders
from .stages import (
    Partition,
    StageSpec,
    batch_inputs,
    cut_contracts,
    split_pieces,
    stage_weights,
)
from .transport import LinkShape, WireTensorSpec

# Model splits kept for sessions, by (model, shape, cuts, partition, max_pieces, seed): a
# session's epochs re-use the split and the encoded weights of earlier epochs with the same cuts
# (a scale-out keeps the cuts; splitting ResNet-18 again costs ~0.3 s of the hand-over). Zoo and
# factory models are seeded, so the same key always means the same weights.
SPLITS_KEPT = 4
_SPLITS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


@dataclass(frozen=True)
class Prepared:
    """One run, decided: what to send to whom, and what to compare the outputs with.

    ``names`` lists the run's devices, the source first (the rank order of the gloo group);
    ``setups[d]`` is device ``d``'s setup without run id / store (see :meth:`setup_for`) and
    ``blobs[d]`` the binary parts that follow it (its stage's weights; on the source, the
    inputs). ``msg_inputs[m]`` are micro-batch ``m``'s input tensors; ``model`` is the unsplit
    model the outputs are checked against, with ``check_threads`` intra-op threads (the workers'
    count, so float sums run in the same order).
    """

    model: nn.Module
    schedule: Schedule
    names: tuple[str, ...]
    stage_of: Mapping[str, int]
    contracts: tuple[tuple[WireTensorSpec, ...], ...]
    msg_inputs: tuple[tuple[torch.Tensor, ...], ...]
    shapes: Mapping[str, Mapping[str, LinkShape]]
    setups: Mapping[str, Setup]
    blobs: Mapping[str, tuple[bytes, ...]]
    check_threads: int
    instance: Instance | None = None  # what the run is priced with (routes, power, DVFS)

    @property
    def messages(self) -> int:
        return len(self.msg_inputs)

    @property
    def computing(self) -> tuple[str, ...]:
        """Devices that hold a stage (the source may only feed and collect)."""
        return tuple(d for d in self.names if d in self.stage_of)

    def setup_for(
        self,
        device: str,
        run_id: str,
        store: tuple[str, int],
        shapes: Mapping[str, Mapping[str, LinkShape]] | None = None,
        origin_unix: float = 0.0,
    ) -> Setup:
        """Device's setup for a started run; ``shapes`` overrides the emulated links (netns);
        ``origin_unix`` is when the links' bandwidth traces start (the run's or session's start)."""
        links = (shapes if shapes is not None else self.shapes).get(device, {})
        return replace(
            self.setups[device],
            run_id=run_id,
            store=store,
            links={v: replace(s, origin_unix=origin_unix).to_dict() for v, s in links.items()},
        )


def prepare_run(
    model_spec: str,
    cluster: Any,
    plan: Plan,
    *,
    requests: int,
    microbatch: int = 1,
    input_shape: Sequence[int] | None = None,
    instance: Instance | None = None,
    schedule: Schedule | None = None,
    partition: Partition = "graph",
    max_pieces: int | None = None,
    seed: int = 0,
    depth: int = 2,
    timeout_s: float = 120.0,
    use_cgroup: bool = True,
    local_cpus: int | None = None,
    stream: bool = False,
    epoch: int = 0,
    alive: Sequence[str] | None = None,
    probe_s: float = 0.0,
) -> Prepared:
    """Decide the whole run (see module docstring); ``local_cpus`` (workers spawned on this
    machine) pins single-thread quota'd workers to CPUs, ``None`` leaves placement to the OS.

    ``stream=True`` prepares one epoch of a streaming session instead (:mod:`.session`): the
    ``requests / microbatch`` messages are one *cycle* of work that the workers repeat, and no
    inputs are made (they are submitted while the session runs). ``alive`` (after a failure)
    restricts the structural instance made when ``instance`` is ``None`` to the surviving
    devices, so the source moves off a dead one. ``probe_s > 0`` (a session only) has every
    worker probe the emulated links it leaves idle that often (:meth:`Transport.probe`).

    Raises
    ------
    InputError
        Bad requests / micro-batch / timeout, a plan device the cluster lacks, a plan that does
        not match the model's pieces, or a schedule for a different number of micro-batches.
    """
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise InputError(f"--timeout must be a finite number of seconds > 0 (got {timeout_s})")
    if requests < 1 or microbatch < 1 or requests % microbatch:
        raise InputError(
            f"--requests {requests} must be a positive multiple of --microbatch {microbatch}"
        )
    messages = requests // microbatch
    known = set(cluster.device_names)
    for st in plan.stages:
        for d in st.devices:
            if d not in known:
                raise InputError(f"plan uses device {d!r}, which the cluster does not define")

    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    key = (model_spec, shape, tuple(plan.cuts), partition, max_pieces, seed)
    split = _SPLITS.get(key) if stream else None
    if split is None:
        torch.manual_seed(seed)
        model, example = load_model(model_spec, shape)
        stage_mods, n_pieces = split_pieces(model, example, plan.cuts, partition, max_pieces)
        weights = [stage_weights(m) for m in stage_mods]
        split = (model, example, stage_mods, n_pieces, weights)
        if stream:  # a session's later epochs with these cuts (scaling, hand-overs) reuse it
            _SPLITS[key] = split
            while len(_SPLITS) > SPLITS_KEPT:
                _SPLITS.pop(next(iter(_SPLITS)))
    model, example, stage_mods, n_pieces, weights = split
    check_plan_shape(plan, n_pieces)
    if len(stage_mods) != len(plan.stages):
        raise InputError(
            f"plan has {len(plan.stages)} stages but the model split into {len(stage_mods)}"
        )
    contracts = cut_contracts(stage_mods, batch_inputs(example, microbatch))
    samples = [] if stream else make_inputs(example, requests, seed)
    msg_inputs = tuple(
        tuple(
            torch.cat([samples[m * microbatch + i][j] for i in range(microbatch)])
            for j in range(len(example))
        )
        for m in range(0 if stream else messages)
    )
    if instance is None:
        instance = fallback_instance(cluster, plan, contracts, n_pieces)
        if alive is not None:
            instance = surviving(instance, alive)
    if schedule is None:
        schedule = scheduler.schedule(plan, instance, messages, microbatch)
    if schedule.requests != messages:
        raise InputError(
            f"schedule has {schedule.requests} requests, the run has {messages} micro-batches"
        )

    source = schedule.source
    routed = route_run(schedule, instance, [sum(m.nbytes for m in c) for c in contracts])
    names = tuple(
        dict.fromkeys(
            [source] + [d for st in plan.stages for d in st.devices] + list(routed.relay_devices)
        )
    )
    stage_of = {d: k for k, st in enumerate(plan.stages) for d in st.devices}
    orders = send_orders(routed, len(plan.stages))
    shapes = link_shapes(emulated_hops(cluster), names)
    cpus = local_cpu_slots(cluster, names, local_cpus) if local_cpus else {}
    spec = StageSpec(
        model_spec,
        None if input_shape is None else tuple(int(s) for s in input_shape),
        tuple(plan.cuts),
        partition,
        max_pieces,
    ).to_dict()
    wire = tuple(tuple((m.shape, m.dtype) for m in c) for c in contracts)
    setups: dict[str, Setup] = {}
    blobs: dict[str, tuple[bytes, ...]] = {}
    freqs = scheduler.stage_freqs(schedule)
    for rank, d in enumerate(names):
        emu = getattr(cluster.device(d), "emulate", None)
        k = stage_of.get(d)
        # DVFS on the emulated testbed: a level f (fraction of f_max) runs the device at f x its
        # quota, so compute takes 1/f as long, as the cost model prices it
        freq = 1.0 if k is None else float(freqs.get((k, d), 1.0))
        quota = getattr(emu, "cpu_quota", None)
        setups[d] = Setup(
            run_id="",
            device=d,
            rank=rank,
            names=names,
            store=("", 0),
            timeout_s=timeout_s,
            depth=depth,
            num_stages=len(plan.stages),
            contracts=wire,
            actions=tuple(str(a) for a in routed.actions.get(d, ())),
            emulate=EmulateConfig(
                None if quota is None else float(quota) * freq,
                int(getattr(emu, "threads", 1) or 1),
                cpus.get(d),
                freq,
                getattr(emu, "cpus", None),
            ),
            use_cgroup=use_cgroup,
            stage=None if k is None else StageAssignment(spec, k),
            client_actions=tuple(str(a) for a in routed.client) if d == source else (),
            last_device=dict(routed.last_hop) if d == source else {},
            relays=routed.relays.get(d, ()),
            send_order=orders.get(d, {}),
            stream=stream,
            cycle=messages if stream else 0,
            window=schedule.window or 0,
            epoch=epoch,
            probe_s=probe_s if stream else 0.0,
        )
        blobs[d] = (() if k is None else (weights[k],)) + (
            (_input_blob(msg_inputs),) if d == source and not stream else ()
        )
    threads = {int(setups[d].emulate.threads) for d in stage_of}
    return Prepared(
        model=model,
        schedule=schedule,
        names=names,
        stage_of=stage_of,
        contracts=tuple(tuple(c) for c in contracts),
        msg_inputs=msg_inputs,
        shapes=shapes,
        setups=setups,
        blobs=blobs,
        check_threads=threads.pop() if len(threads) == 1 else 1,
        instance=instance,
    )


def _input_blob(msg_inputs: Sequence[Sequence[torch.Tensor]]) -> bytes:
    """All micro-batches' inputs as one safetensors blob (keys ``m{message}_{input}``)."""
    from safetensors.torch import save

    return save(
        {f"m{m}_{j}": t.contiguous() for m, ts in enumerate(msg_inputs) for j, t in enumerate(ts)}
    )


def check_plan_shape(plan: Plan, num_pieces: int) -> None:
    """Raise :class:`InputError` unless the plan's stages cover pieces ``0..num_pieces-1`` in order."""
    nxt = 0
    for k, st in enumerate(plan.stages):
        if st.first != nxt or st.last < st.first:
            raise InputError(
                f"plan stage {k} covers pieces {st.first}-{st.last}; expected to start at piece {nxt}"
            )
        if not st.devices:
            raise InputError(f"plan stage {k} has no device")
        nxt = st.last + 1
    if nxt != num_pieces:
        raise InputError(
            f"plan covers pieces 0-{nxt - 1} but the model has {num_pieces} pieces (0-{num_pieces - 1})"
        )


def emulated_hops(cluster: Any) -> list[tuple[Any, ...]]:
    """Every direct hop of ``cluster`` (dedicated links, then hops over media) as
    :func:`link_shapes` takes it, with the figures the testbed emulates: a calibrated link's
    configured ones, not the fit that prices it (:class:`coinfer.cluster.types.LinkEmulation`)."""
    hops = getattr(cluster, "all_links", cluster.links)
    trace_of = getattr(cluster, "trace", lambda _lk: None)
    out = []
    for lk in hops:
        bw, lat = getattr(lk, "emulated", None) or (lk.bandwidth_Bps, lk.latency_s)
        out.append((lk.src, lk.dst, bw, lat, lk.medium, trace_of(lk)))
    return out


def link_shapes(
    links: Sequence[tuple[Any, ...]], names: Sequence[str]
) -> dict[str, dict[str, LinkShape]]:
    """Emulated shape of every direct hop between ``names`` (``links`` are ``(src, dst,
    bandwidth_Bps, latency_s[, medium[, trace]])``; a hop over a shared medium names it, so its
    time is booked on the medium's clock; a traced hop follows its trace from the run's start).
    Multi-hop transfers are relayed hop by hop (:mod:`.relays`), each hop on its own emulated
    link or medium, as the cost model prices them."""
    member = set(names)
    out: dict[str, dict[str, LinkShape]] = {u: {} for u in names}
    for s, d, bw, lat, *rest in links:
        if s in member and d in member:
            medium = rest[0] if rest else None
            trace = rest[1] if len(rest) > 1 else None
            out[s][d] = LinkShape(bw, lat, medium, trace)
    return out


def make_inputs(
    example: tuple[torch.Tensor, ...], n: int, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    """``n`` distinct batch-1 inputs shaped like ``example`` (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sample = []
        for t in example:
            t1 = t[:1]
            if t1.dtype.is_floating_point:
                sample.append(torch.randn(t1.shape, generator=gen, dtype=t1.dtype))
            elif t1.dtype == torch.bool:
                sample.append(t1.clone())
            else:
                hi = max(1, int(t.max()) + 1)
                sample.append(torch.randint(0, hi, t1.shape, generator=gen, dtype=t1.dtype))
        out.append(tuple(sample))
    return out


def fallback_instance(
    cluster: Any, plan: Plan, contracts: Sequence[Sequence[WireTensorSpec]], num_pieces: int
) -> Instance:
    """A structural instance when the caller has none: equal piece times, real cut bytes.

    Only the scheduler's window and replica weights read it; real times come from the run.
    """
    cut_bytes = {
        st.last: sum(m.nbytes for m in contracts[k + 1]) for k, st in enumerate(plan.stages)
    }
    names = cluster.device_names
    times = [dict.fromkeys(names, 1e-3) for _ in range(num_pieces)]  # 1 ms: a neutral guess
    out_bytes = [cut_bytes.get(p, 0) for p in range(num_pieces)]
    devices = []
    for n in names:
        spec = cluster.device(n)
        devices.append(
            Device(
                n,
                1 << 62,
                power_idle_w=getattr(spec, "power_idle_w", None),
                power_active_w=getattr(spec, "power_active_w", None),
                power_transmit_w=getattr(spec, "power_transmit_w", None),
                dvfs_levels=tuple(getattr(spec, "dvfs_levels", (1.0,))),
                cores=tuple(getattr(spec, "cores", ())),  # a SoC's core group keeps its rule
            )
        )
    links, media = network_of(cluster)
    in_bytes = sum(m.nbytes for m in contracts[0])
    return make_instance(
        times, [0] * num_pieces, out_bytes, in_bytes, devices, links, cluster.source, media=media
    )


def local_cpu_slots(cluster: Any, names: Sequence[str], num_cpus: int) -> dict[str, int]:
    """CPU per locally spawned single-thread worker with a quota (see ``emulation.pack_cpus``)."""
    quotas: dict[str, float] = {}
    for d in names:
        emu = getattr(cluster.device(d), "emulate", None)
        quota = getattr(emu, "cpu_quota", None)
        # a SoC's core group brings its own CPUs (EmulateConfig.cpus); the rest are packed
        if getattr(emu, "cpus", None):
            continue
        if quota is not None and int(getattr(emu, "threads", 1) or 1) == 1:
            quotas[d] = min(float(quota), 1.0)
    return emulation.pack_cpus(quotas, num_cpus)


__all__ = [
    "Prepared",
    "check_plan_shape",
    "emulated_hops",
    "fallback_instance",
    "link_shapes",
    "local_cpu_slots",
    "make_inputs",
    "prepare_run",
]
