"""Greedy generation across real worker processes: one per device, stages in a gloo pipeline.

Why a coordinator outside the pipeline: the stages talk to each other over ``torch.distributed``
(gloo, loopback, a FileStore in a private temp dir) with emulated links; the coordinator only
starts them, hands each a job on its stdin and reads JSON lines from its stdout — the last stage
streams every token there the moment it exists, so the coordinator measures time to first
token and decode rate as a client would see them. See :mod:`.stagejob` for what a stage does.

Lifetime rules: every worker runs in a session of its own (a terminal's Ctrl-C reaches only
the coordinator, which decides how they end); every wait is bounded; on any failure, on
Ctrl-C and at the end every worker is killed (by its process group) and reaped, and the
cgroups of the run are removed — nothing is left behind. A failure is one
:class:`~coinfer.errors.PeerError` naming the device that caused it: a worker that died
without reporting is blamed before those that reported losing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, PeerError

STOP_GRACE_S = 5.0


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


class DistributedGenerator:
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
        self.links = list(links) if links is not None else [{} for _ in stages]
        self.timeout_s, self.use_cgroup = float(timeout_s), use_cgroup
        self.run_id = "llm" + secrets.token_hex(4)
        self.procs: list[subprocess.Popen[str]] = []
        self.events: queue.Queue[tuple[int, float, dict[str, Any] | None]] = queue.Queue()
        self.ready: list[dict[str, Any]] = []
        self.tmp: Path | None = None
        self._job = 0

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> DistributedGenerator:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(graceful=exc[0] is None)

    def start(self) -> None:
        """Start one worker per stage and wait (bounded) until all are ready."""
        self.tmp = Path(tempfile.mkdtemp(prefix="coinfer-llm-"))
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}
        names = [s.device for s in self.stages]
        for rank, st in enumerate(self.stages):
            setup = {
                "spec": self.spec, "rank": rank, "n_stages": len(self.stages), "names": names,
                "device": st.device, "first": st.first, "last": st.last,
                "cpu_quota": st.cpu_quota, "threads": st.threads, "cpu": st.cpu,
                "use_cgroup": self.use_cgroup, "run_id": self.run_id,
                "store": str(self.tmp / "store"), "timeout_s": self.timeout_s,
                "links": {str(k): v for k, v in self.links[rank].items()},
            }  # fmt: skip
            path = self.tmp / f"setup{rank}.json"
            path.write_text(json.dumps(setup))
            err = open(self.tmp / f"stderr{rank}.txt", "w")  # noqa: SIM115 — the child owns it
            proc = subprocess.Popen(
                [sys.executable, "-m", "coinfer.llm.worker", str(path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env=env, start_new_session=True,
            )  # fmt: skip
            err.close()
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(rank, proc), daemon=True).start()
        deadline = time.monotonic() + max(self.timeout_s, 60.0)
        ready: dict[int, dict[str, Any]] = {}
        while len(ready) < len(self.procs):
            rank, _, msg = self._next(deadline, "starting")
            if msg is not None and msg.get("ready"):
                ready[rank] = msg
        self.ready = [ready[r] for r in range(len(self.procs))]

    def _read(self, rank: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put((rank, time.perf_counter(), json.loads(line)))
        self.events.put((rank, time.perf_counter(), None))

    def close(self, graceful: bool = True) -> None:
        """Stop every worker (kill what does not stop), reap them, remove the run's cgroups."""
        if graceful:
            for proc in self.procs:
                with contextlib.suppress(OSError, ValueError):
                    assert proc.stdin is not None
                    proc.stdin.write('{"stop": true}\n')
                    proc.stdin.close()
            deadline = time.monotonic() + STOP_GRACE_S
            for proc in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.01, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
            for pipe in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if pipe is not None:
                        pipe.close()
        self.procs = []
        from ..runtime.emulation import cleanup_stale

        with contextlib.suppress(OSError):
            cleanup_stale(self.run_id)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    # -- events and failures --------------------------------------------------------------
    def _next(self, deadline: float, what: str) -> tuple[int, float, dict[str, Any] | None]:
        """The next worker message; a worker error, exit or the deadline raise PeerError."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"{what} did not finish within {self.timeout_s:.0f} s")
            try:
                rank, t, msg = self.events.get(timeout=min(0.2, left))
            except queue.Empty:
                dead = [r for r, p in enumerate(self.procs) if p.poll() is not None]
                if dead:
                    self._fail(dead[0], None, what)
                continue
            if msg is None or "error" in msg:
                self._fail(rank, msg, what)
            return rank, t, msg

    def _fail(self, rank: int, msg: dict[str, Any] | None, what: str) -> None:
        """Gather what else went wrong for a moment, then blame one device (see module doc)."""
        reports: dict[int, dict[str, Any] | None] = {rank: msg}
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            with contextlib.suppress(queue.Empty):
                r, _, m = self.events.get(timeout=0.1)
                if m is None or "error" in m:
                    reports.setdefault(r, m)
                    if m is not None:
                        reports[r] = m
        silent = [r for r, m in sorted(reports.items()) if m is None]
        blamed = silent[0] if silent else min(reports)
        dev = self.stages[blamed].device
        where = f"device {dev} (stage {blamed + 1} of {len(self.stages)})"
        m = reports[blamed]
        if m is None:
            proc = self.procs[blamed]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
            code = proc.returncode
            how = (
                f"killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
            )
            tail = self._stderr_tail(blamed)
            raise PeerError(f"{what}: {where} {how}{': ' + tail if tail else ''}", device=dev)
        raise PeerError(f"{what}: {where} failed: {m['error']}", device=dev)

    def _stderr_tail(self, rank: int) -> str:
        if self.tmp is None:
            return ""
        with contextlib.suppress(OSError):
            lines = (self.tmp / f"stderr{rank}.txt").read_text().strip().splitlines()
            return lines[-1][:200] if lines else ""
        return ""

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
        for rank, proc in enumerate(self.procs):
            assert proc.stdin is not None
            try:
                proc.stdin.write(lines[rank == 0] + "\n")
                proc.stdin.flush()
            except OSError:
                self._fail(rank, None, "generation")
        new: list[list[Tensor]] = [[] for _ in groups]
        times: list[list[float]] = [[] for _ in groups]
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout_s
        while len(done) < len(self.procs):
            rank, t, msg = self._next(deadline, "generation")
            assert msg is not None
            if "t" in msg:
                g, r, ids = msg["t"]
                new[g].append(torch.tensor(ids, dtype=torch.int64)[:, None])
                times[g].append(t - t0)
                if on_token is not None:
                    on_token(g, r, ids)
            elif msg.get("done") == self._job:
                done[rank] = msg
        tokens = [torch.cat([g, *n], dim=1) for g, n in zip(groups, new, strict=True)]
        return RunResult(
            tokens, times[0][0], _decode_rate(times, [int(g.shape[0]) for g in groups]),
            max(ts[-1] for ts in times), [done[r] for r in range(len(self.procs))],
        )  # fmt: skip


def _decode_rate(times: list[list[float]], batches: list[int]) -> float | None:
    """Tokens per second after every group has its first token (all prefills done) — the
    steady decode the cost model predicts; ``None`` when nothing came after that."""
    start = max(ts[0] for ts in times)
    end = max(ts[-1] for ts in times)
    n = sum(b * sum(1 for t in ts[1:] if t > start) for ts, b in zip(times, batches, strict=True))
    return n / (end - start) if n and end > start else None
