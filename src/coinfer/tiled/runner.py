"""Run a fused (tiled) plan for real: one worker per device, requests one at a time, checked.

Why its own runner beside the pipeline runtime: a tiled plan is not a chain of stages — one
request fans out into tiles on several devices and gathers back at the source before the
layer-wise suffix — so its devices follow a fixed per-request program (:mod:`.program`) rather
than the pipeline's stage actions. It shares the pipeline's parts: processes, gloo, CPU quotas
and shaped links (:mod:`coinfer.runtime.workgroup`), the emulation's fluid-rate hold.

Links: every directed pair the program uses is shaped at the figures the planner priced it at.
When the cheapest route between two devices has several hops, the pair is shaped as one link
with the route's total latency and ``1 / sum(1 / bandwidth)`` — the store-and-forward time of an
isolated transfer, which is what the fused cost model charges; relays are not run as separate
hops here (they are in the pipeline runtime). A pair that is one hop over a shared medium books
that medium's clock, as the pipeline's transport does (transfers over it take turns); a relayed
route through a medium is refused.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from ..runtime.workgroup import Member, WorkerGroup
from .program import TiledProgram, pairs, program_of

WARMUP_REQUESTS = 2


@dataclass
class TiledResult:
    """Measured latencies (seconds, per request), the prediction, the output check, the
    workers' statistics (busy time, computations and transfers for a Gantt chart)."""

    program: TiledProgram
    latencies_s: list[float]
    predicted_latency_s: float | None
    max_abs_err: float | None
    devices: list[dict[str, Any]] = field(default_factory=list)
    spans: list[list[float]] = field(default_factory=list)  # per request: Unix start, end

    @property
    def latency_p50_s(self) -> float:
        return statistics.median(self.latencies_s)

    @property
    def error(self) -> float | None:
        """(measured p50 − predicted) / predicted."""
        if not self.predicted_latency_s:
            return None
        return self.latency_p50_s / self.predicted_latency_s - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program.to_dict(),
            "latencies_s": self.latencies_s,
            "latency_p50_s": self.latency_p50_s,
            "predicted_latency_s": self.predicted_latency_s,
            "error": self.error,
            "max_abs_err": self.max_abs_err,
            "devices": self.devices,
            "spans": self.spans,
        }


def pair_shape(instance: Any, src: str, dst: str, nbytes: float) -> dict[str, Any]:
    """The :class:`~coinfer.runtime.linkshape.LinkShape` dict of ``src -> dst`` as priced."""
    hops = instance.path(src, dst, nbytes)
    if not hops:
        raise InputError(f"no route from {src} to {dst} in {instance.name}")
    if len(hops) == 1 and hops[0].medium is not None:  # one hop over the air: book the medium
        h = hops[0]
        return {"bandwidth_Bps": h.bandwidth_Bps, "latency_s": h.latency_s, "medium": h.medium}
    if any(h.medium is not None for h in hops):
        raise InputError(
            f"{src}->{dst} is routed through a relay and a shared medium: a tiled run shapes a "
            "relayed route as one link, which cannot also hold the medium"
        )
    return {
        "bandwidth_Bps": 1.0 / sum(1.0 / h.bandwidth_Bps for h in hops),
        "latency_s": sum(h.latency_s for h in hops),
    }


def members_of(prog: TiledProgram, cluster: Any, instance: Any) -> list[Member]:
    """One worker per device of ``prog`` (rank order): quota, pinned CPU, outgoing links."""
    from ..runtime.prepare import local_cpu_slots

    cpus = sorted(os.sched_getaffinity(0))
    slots = local_cpu_slots(cluster, prog.devices, len(cpus))
    typical = instance.input_bytes / max(1, len(prog.assignment))
    out = []
    for u in prog.devices:
        emu = getattr(cluster.device(u), "emulate", None)
        links = {
            prog.rank(v): pair_shape(instance, u, v, typical) for a, v in pairs(prog) if a == u
        }
        out.append(
            Member(
                u,
                getattr(emu, "cpu_quota", None),
                int(getattr(emu, "threads", 1) or 1),
                cpus[slots[u]] if u in slots else None,
                links,
                {"program": prog.to_dict()},
            )
        )
    return out


def _job(group: WorkerGroup, number: int, inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """Run one job on every worker; the workers' ``done`` statistics in rank order."""
    import json
    import time

    assert group.tmp is not None
    path_in, path_out = group.tmp / f"in{number}.pt", group.tmp / f"out{number}.pt"
    torch.save(list(inputs), path_in)
    job = {"job": number, "requests": len(inputs), "inputs": str(path_in), "outputs": str(path_out)}
    group.send_jobs([json.dumps(job)] * len(group.procs), "tiled run")
    done: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + group.timeout_s * max(1, len(inputs))
    while len(done) < len(group.procs):
        rank, _, msg = group.next_event(deadline, "tiled run")
        if msg is not None and msg.get("done") == number:
            done[rank] = msg
    return [done[r] for r in range(len(group.procs))]


def run_tiled_plan(
    model: str,
    cluster: Any,
    plan: Any,
    instance: Any,
    *,
    requests: int = 10,
    predicted_latency_s: float | None = None,
    input_shape: Sequence[int] | None = None,
    max_pieces: int | None = None,
    check: bool = True,
    timeout_s: float = 120.0,
    use_cgroup: bool = True,
) -> TiledResult:
    """Run ``plan`` (a ``fused`` plan of ``instance``) on ``cluster``'s devices for ``requests``
    requests after :data:`WARMUP_REQUESTS` unmeasured ones; compare every output with the unsplit
    model's when ``check``."""
    from ..runtime.prepare import make_inputs
    from ..zoo import load_model

    if requests < 1:
        raise InputError(f"requests must be >= 1, got {requests}")
    prog = program_of(
        plan, model, instance.source, instance.num_pieces,
        input_shape=input_shape, max_pieces=max_pieces,
    )  # fmt: skip
    module, example = load_model(model, None if input_shape is None else tuple(input_shape))
    inputs = [x[0] for x in make_inputs(example, requests + WARMUP_REQUESTS, seed=0)]
    with WorkerGroup(
        "coinfer.tiled.worker", members_of(prog, cluster, instance), kind="tiled",
        role="device", timeout_s=timeout_s, use_cgroup=use_cgroup,
    ) as group:  # fmt: skip
        _job(group, 1, inputs[:WARMUP_REQUESTS])
        stats = _job(group, 2, inputs[WARMUP_REQUESTS:])
        assert group.tmp is not None
        outputs = torch.load(group.tmp / "out2.pt")
        ready = list(group.ready)
    err = None
    if check:
        err = 0.0
        with torch.no_grad():
            for x, got in zip(inputs[WARMUP_REQUESTS:], outputs, strict=True):
                ref = module(x)
                refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
                for a, b in zip(refs, got, strict=True):
                    err = max(err, float((a - b).abs().max()))
    devices = [
        {
            "device": d,
            "tiles": ready[i].get("tiles"),
            "stages": ready[i].get("stages"),
            "emulation": ready[i].get("emulation", {}).get("mode"),
            "busy_s": stats[i]["busy_s"],
            "pad_s": stats[i]["pad_s"],
            "computes": stats[i]["computes"],
            "transfers": stats[i]["transfers"],
        }
        for i, d in enumerate(prog.devices)
    ]
    lat = [float(x) for x in stats[0]["latencies_s"]]
    return TiledResult(prog, lat, predicted_latency_s, err, devices, stats[0]["spans"])


__all__ = ["TiledResult", "members_of", "pair_shape", "run_tiled_plan"]
