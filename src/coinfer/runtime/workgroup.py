"""A group of single-job worker processes in one gloo group, driven over their stdin/stdout.

Why this exists beside the session runtime: some plan kinds need a *fixed* program on every
device rather than the session's stream of requests through stages — an LLM's prefill/decode
schedule (:mod:`coinfer.llm`), a fused block's tiles (:mod:`coinfer.tiled`). Those runners share
everything about the processes: one ``python -m MODULE SETUP.json`` per device, a gloo group on
a FileStore in a private 0700 temp dir, the device's CPU quota and shaped outgoing links, JSON
lines both ways (jobs in on stdin; ``ready``/``done``/``error`` and job output back on the
original stdout), and the same lifetime rules:

- every worker runs in a session of its own (a terminal's Ctrl-C reaches only the coordinator,
  which decides how they end); every wait is bounded;
- on any failure, on Ctrl-C and at the end every worker is killed (by its process group) and
  reaped, and the run's cgroups are removed — nothing is left behind;
- a failure is one :class:`~coinfer.errors.PeerError` naming the device that caused it: a
  worker that died without reporting is blamed before those that reported losing it.

The worker side (:func:`worker_main`) builds its state, joins the group, enters its device's
quota (after joining, so gloo's I/O threads stay outside it, as a NIC would) and runs jobs.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError, PeerError

STOP_GRACE_S = 5.0
EXIT_AFTER_ERROR = 3


@dataclass(frozen=True, slots=True)
class Member:
    """One worker: its device, emulation, pinned CPU, outgoing links and job-specific setup.

    ``links`` maps the rank it sends to onto a :class:`~.linkshape.LinkShape` dict (one naming a
    ``medium`` books that medium's clock, shared by the run's processes: :mod:`.media`).
    """

    device: str
    cpu_quota: float | None = None
    threads: int = 1
    cpu: int | None = None
    links: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


class WorkerGroup:
    """The workers of one run (use as a context manager: leaving it stops them).

    ``module`` is the worker entry point (run as ``python -m module SETUP.json``); ``kind``
    names the run in temp dirs and cgroups; ``role`` how a member is called in errors.
    """

    def __init__(
        self,
        module: str,
        members: Sequence[Member],
        *,
        kind: str,
        role: str = "stage",
        timeout_s: float = 120.0,
        use_cgroup: bool = True,
    ) -> None:
        if not members:
            raise InputError(f"a {kind} run needs at least one worker")
        self.module, self.members, self.kind, self.role = module, list(members), kind, role
        self.timeout_s, self.use_cgroup = float(timeout_s), use_cgroup
        self.run_id = kind + secrets.token_hex(4)
        self.procs: list[subprocess.Popen[str]] = []
        self.events: queue.Queue[tuple[int, float, dict[str, Any] | None]] = queue.Queue()
        self.ready: list[dict[str, Any]] = []
        self.tmp: Path | None = None

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> WorkerGroup:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(graceful=exc[0] is None)

    def start(self) -> None:
        """Start one worker per member and wait (bounded) until all are ready."""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"coinfer-{self.kind}-"))
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}
        names = [m.device for m in self.members]
        for rank, m in enumerate(self.members):
            setup = {
                **m.extra, "rank": rank, "n_stages": len(self.members), "names": names,
                "device": m.device, "cpu_quota": m.cpu_quota, "threads": m.threads,
                "cpu": m.cpu, "use_cgroup": self.use_cgroup, "run_id": self.run_id,
                "store": str(self.tmp / "store"), "timeout_s": self.timeout_s,
                "links": {str(k): dict(v) for k, v in m.links.items()},
            }  # fmt: skip
            path = self.tmp / f"setup{rank}.json"
            path.write_text(json.dumps(setup))
            err = open(self.tmp / f"stderr{rank}.txt", "w")  # noqa: SIM115 — the child owns it
            proc = subprocess.Popen(
                [sys.executable, "-m", self.module, str(path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env=env, start_new_session=True,
            )  # fmt: skip
            err.close()
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(rank, proc), daemon=True).start()
        deadline = time.monotonic() + max(self.timeout_s, 60.0)
        ready: dict[int, dict[str, Any]] = {}
        while len(ready) < len(self.procs):
            rank, _, msg = self.next_event(deadline, "starting")
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
        from . import media
        from .emulation import cleanup_stale

        with contextlib.suppress(OSError):
            cleanup_stale(self.run_id)
        media.cleanup(self.run_id)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    # -- jobs, events and failures ----------------------------------------------------------
    def send_jobs(self, lines: Sequence[str], what: str) -> None:
        """Write one JSON line to each worker (``lines[rank]``); a closed pipe blames it."""
        for rank, proc in enumerate(self.procs):
            assert proc.stdin is not None
            try:
                proc.stdin.write(lines[rank] + "\n")
                proc.stdin.flush()
            except OSError:
                self.fail(rank, None, what)

    def next_event(self, deadline: float, what: str) -> tuple[int, float, dict[str, Any] | None]:
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
                    self.fail(dead[0], None, what)
                continue
            if msg is None or "error" in msg:
                self.fail(rank, msg, what)
            return rank, t, msg

    def fail(self, rank: int, msg: dict[str, Any] | None, what: str) -> None:
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
        dev = self.members[blamed].device
        where = f"device {dev} ({self.role} {blamed + 1} of {len(self.members)})"
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


# -- the worker's side --------------------------------------------------------------------------
class LineChannel:
    """JSON lines to the coordinator (thread-safe: a worker's helper threads may report too)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def emit(self, **msg: Any) -> None:
        with self.lock:
            self.out.write(json.dumps(msg) + "\n")
            self.out.flush()


def _watch_parent(parent: int) -> None:
    """Exit when the coordinator is gone (its clean-up cannot reach an orphan otherwise)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(EXIT_AFTER_ERROR)


def join_transport(setup: Mapping[str, Any], depth: int = 4) -> Any:
    """Join the group's gloo FileStore and build the shaped point-to-point transport."""
    from .emulation import exempt_this_thread
    from .linkshape import LinkShape
    from .media import MediumClock, clock_path
    from .transport import Transport, init_process_group

    timeout = float(setup["timeout_s"])
    init_process_group(setup["rank"], setup["n_stages"], "file:" + setup["store"], 0, timeout)
    links = {int(r): LinkShape.from_dict(d) for r, d in setup["links"].items()}
    # a hop over a shared medium books the medium's one clock, shared by every member process
    on_air = sorted({s.medium for s in links.values() if s.medium is not None})
    clocks = {m: MediumClock(clock_path(setup["run_id"], m)) for m in on_air}
    return Transport(
        setup["rank"], setup["names"], links, depth=depth, timeout_s=timeout,
        thread_init=exempt_this_thread, clocks=clocks,
    )  # fmt: skip


# build(setup) -> (state, fields of the ready message); run(state, transport, setup, job, emu,
# emit) -> the job's statistics (sent back in its ``done`` message).
Build = Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]
Run = Callable[[Any, Any, dict[str, Any], dict[str, Any], Any, Callable[..., None]], dict[str, Any]]


def worker_main(argv: Sequence[str], build: Build, run: Run) -> None:
    """A group member's process: build, join, enter the quota, report ready, run jobs, exit.

    It exits when told (``{"stop": true}``), when stdin closes, when its parent dies, or after
    reporting an error (exit code 3); it always leaves its cgroup first. Never returns.
    """
    import torch

    from . import emulation

    setup = json.loads(Path(argv[0]).read_text())
    chan = LineChannel(os.fdopen(os.dup(1), "w", buffering=1))
    os.dup2(2, 1)  # stray prints must not corrupt the coordinator's channel
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    emu = None
    code = 0
    try:
        torch.set_num_threads(1)
        state, ready = build(setup)
        transport = join_transport(setup) if setup["n_stages"] > 1 else None
        emu = emulation.apply(
            setup["device"], setup["run_id"], cpu_quota=setup["cpu_quota"],
            threads=setup["threads"], use_cgroup=setup["use_cgroup"], cpu=setup["cpu"],
        )  # fmt: skip
        chan.emit(ready=True, emulation=emu.to_dict(), pid=os.getpid(), **ready)
        for line in sys.stdin:
            job = json.loads(line)
            if job.get("stop"):
                break
            stats = run(state, transport, setup, job, emu, chan.emit)
            chan.emit(done=job["job"], **stats)
    except PeerError as exc:
        chan.emit(error=str(exc), peer=exc.device)
        code = EXIT_AFTER_ERROR
    except BaseException as exc:
        chan.emit(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        code = EXIT_AFTER_ERROR
    finally:
        if emu is not None:
            with contextlib.suppress(Exception):
                emulation.release(emu)
    sys.stderr.flush()
    os._exit(code)  # skip gloo's teardown: peers may be gone already


__all__ = [
    "EXIT_AFTER_ERROR",
    "STOP_GRACE_S",
    "LineChannel",
    "Member",
    "WorkerGroup",
    "join_transport",
    "worker_main",
]
