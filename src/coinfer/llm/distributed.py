"""Greedy generation across real worker processes: one per device, stages in a gloo pipeline.

Why a coordinator outside the pipeline: the stages talk to each other over ``torch.distributed``
(gloo, loopback, a FileStore in a private temp dir) with emulated links; the coordinator only
starts them, hands each a job on its stdin and reads JSON lines from its stdout — the last stage
streams every token there the moment it exists, so the coordinator measures time to first
token and decode rate as a client would see them. See :mod:`.stagejob` for what a stage does;
the processes' lifetime and failure rules are :mod:`coinfer.runtime.workgroup`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..runtime.workgroup import Member, WorkerGroup
from .simulate import decode_rate


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One worker: its device, layers ``[first, last)``, emulation and pinned CPU."""

    device: str
    first: int
    last: int
    cpu_quota: float | None = None
    threads: int = 1
    cpu: int | None = None


@dataclass
class RunResult:
    """Tokens per group (``[batch, prompt + new]``), arrival times, the workers' statistics."""

    tokens: list[Tensor]
    ttft_s: float
    decode_tokens_per_s: float | None
    total_s: float
    stats: list[dict[str, Any]] = field(default_factory=list)


class DistributedGenerator(WorkerGroup):
    """Workers for one split of ``spec``; :meth:`generate` may run several jobs on them.

    ``links[i]`` maps the rank a stage ``i`` sends to onto a ``LinkShape`` dict
    (``{"bandwidth_Bps", "latency_s"}``). Use as a context manager: leaving it stops the workers.
    """

    def __init__(
        self,
        spec: str,
        stages: Sequence[StageSpec],
        links: Sequence[dict[int, dict[str, Any]]] | None = None,
        *,
        timeout_s: float = 120.0,
        use_cgroup: bool = True,
    ) -> None:
        if not stages:
            raise InputError("a distributed generation needs at least one stage")
        self.spec, self.stages = spec, list(stages)
        shapes = list(links) if links is not None else [{} for _ in stages]
        members = [
            Member(
                st.device,
                st.cpu_quota,
                st.threads,
                st.cpu,
                shapes[rank],
                {"spec": spec, "first": st.first, "last": st.last},
            )
            for rank, st in enumerate(self.stages)
        ]
        super().__init__(
            "coinfer.llm.worker", members, kind="llm", timeout_s=timeout_s, use_cgroup=use_cgroup
        )
        self._job = 0

    def __enter__(self) -> DistributedGenerator:
        super().__enter__()
        return self

    # -- jobs -------------------------------------------------------------------------------
    def generate(
        self,
        groups: Sequence[Tensor],
        max_new_tokens: int,
        slices: Sequence[Sequence[int]] | None = None,
        *,
        on_token: Callable[[int, int, list[int]], None] | None = None,
    ) -> RunResult:
        """Greedy-decode ``max_new_tokens`` for each sequence group (``[batch, prompt]`` ids;
        groups take turns in the pipeline), prompts cut into ``slices[g]`` chunks."""
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        sizes = (
            [list(s) for s in slices] if slices is not None else [[int(g.shape[1])] for g in groups]
        )
        desc = [
            {"batch": int(g.shape[0]), "len": int(g.shape[1]), "slices": s}
            for g, s in zip(groups, sizes, strict=True)
        ]
        self._job += 1
        job = {"job": self._job, "groups": desc, "new": max_new_tokens}
        lines = [json.dumps(job), json.dumps({**job, "prompts": [g.tolist() for g in groups]})]
        t0 = time.perf_counter()
        self.send_jobs([lines[rank == 0] for rank in range(len(self.procs))], "generation")
        new: list[list[Tensor]] = [[] for _ in groups]
        times: list[list[float]] = [[] for _ in groups]
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout_s
        while len(done) < len(self.procs):
            rank, t, msg = self.next_event(deadline, "generation")
            assert msg is not None
            if "t" in msg:
                g, r, ids = msg["t"]
                new[g].append(torch.tensor(ids, dtype=torch.int64)[:, None])
                times[g].append(t - t0)
                if on_token is not None:
                    on_token(g, r, ids)
            elif msg.get("done") == self._job:
                done[rank] = msg
        for msg in done.values():  # item spans on the job's clock (perf_counter is system-wide)
            msg["spans"] = [[a - t0, b - t0] for a, b in msg.get("spans", [])]
        tokens = [torch.cat([g, *n], dim=1) for g, n in zip(groups, new, strict=True)]
        return RunResult(
            tokens, times[0][0], decode_rate(times, [int(g.shape[0]) for g in groups]),
            max(ts[-1] for ts in times), [done[r] for r in range(len(self.procs))],
        )  # fmt: skip
