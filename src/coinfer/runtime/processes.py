"""Local worker processes: start them, tell whether one is stopped, and reap them.

Split from :mod:`.supervision` (which watches workers through their control channels, local
or remote) because these act on the operating-system processes of a local run only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..profile.cgroup import emulation_env

# Seconds a worker gets to exit after ``bye`` before it is killed.
EXIT_GRACE_S = 5.0
# A worker's exit code after it reported its failure (an ``error`` message naming the peer it
# blames): its exit is a consequence, not evidence that the device itself failed.
EXIT_AFTER_ERROR = 3


def spawn_local_workers(
    names: Sequence[str],
    control: tuple[str, int],
    token: str,
    net: Any = None,
) -> dict[str, subprocess.Popen[bytes]]:
    """Start one ``coinfer worker`` process per device, talking to ``control``; each reads the
    token from a pipe on its standard input (not its environment, which other local users can
    read through ``/proc`` for as long as the process lives)."""
    # workers' C++ warnings (gloo socket notices, peers closing on abort) are not for users
    env = {k: v for k, v in os.environ.items() if k != "COINFER_TOKEN"}
    env["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    env = emulation_env(env)  # multi-thread devices: idle threads must not burn the quota
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for d in names:
        # the coordinator's own user chose the model: its local workers may import its code
        cmd = [sys.executable, "-m", "coinfer", "worker", "--coordinator",
               f"{control[0]}:{control[1]}", "--device", d, "--token-file", "-",
               "--allow-model-code"]  # fmt: skip
        enter = None
        if net is not None:
            cmd = [*cmd, "--bind", net.address(d)]
            enter = net.enter_fn(d)
        # a session of its own: a terminal's Ctrl-C reaches the process group of the command
        # the user ran, and the coordinator, not the signal, decides how its workers end (a
        # session finishes what it admitted first; workers exit when it goes silent)
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, preexec_fn=enter, start_new_session=True
        )
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(token.encode() + b"\n")
            proc.stdin.close()
        procs[d] = proc
    return procs


def process_stopped(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a local worker process is stopped (SIGSTOP / SIGTSTP: state ``T`` in /proc): it
    holds its sockets open but will never answer, so waiting for it only burns the timeout."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("T", "t")


# A local worker found stopped this long is declared failed (a debugger's brief stop is not).
STOPPED_GRACE_S = 1.0


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, children of children included (from ``/proc``):
    workers run in sessions of their own, so a process group does not find them. Used to check
    that nothing outlives a server or a run."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reap(procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """Wait for local workers to exit (killing stragglers after :data:`EXIT_GRACE_S`)."""
    deadline = time.time() + EXIT_GRACE_S
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.01, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = [
    "EXIT_AFTER_ERROR",
    "EXIT_GRACE_S",
    "STOPPED_GRACE_S",
    "descendants",
    "process_stopped",
    "reap",
    "running",
    "spawn_local_workers",
]
