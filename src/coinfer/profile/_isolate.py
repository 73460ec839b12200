"""Measuring in a child process, the parent's side: start ``coinfer.profile._child``, move it into
the quota cgroup once it is ready (and pin it to one CPU as the runtime pins a device), relay its
progress, and return its profile or one error line.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CoinferError
from .cgroup import emulation_env, move_pid

# The measuring child must not hang forever (a stuck model, a deadlocked pool).
CHILD_TIMEOUT_S = 3600.0
ProgressFn = Callable[[int, int], None]


def _child_command(args: dict[str, Any], out_path: str) -> list[str]:
    return [sys.executable, "-m", "coinfer.profile._child", json.dumps(args), out_path]


def run_child(
    args: dict[str, Any], cgroup: Any | None, progress: ProgressFn | None
) -> dict[str, Any]:
    """Run :func:`measure` in a child process; once it has loaded and captured the model it says
    ``@@ready`` and waits, the parent moves it into ``cgroup`` and tells it to go, so only the
    warm-up and timed passes run under the quota (imports under a 0.25-core quota took ~4x longer)."""
    fd, out_path = tempfile.mkstemp(prefix="coinfer-profile-", suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    # The child must not inherit a larger OpenMP pool than the threads we measure with.
    env["OMP_NUM_THREADS"] = str(args["threads"])
    env = emulation_env(env)  # as the runtime's workers run (see cgroup.OMP_WAIT_POLICY)
    try:
        proc = subprocess.Popen(
            _child_command(args, out_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        err_lines: list[str] = []
        assert proc.stderr is not None and proc.stdin is not None
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        for line in proc.stderr:
            if line.startswith("@@ready"):
                if cgroup is not None:
                    move_pid(cgroup, proc.pid)
                    if args["threads"] == 1:
                        _pin_process(proc.pid)
                with contextlib.suppress(BrokenPipeError):  # the child died: reported below
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
            elif line.startswith("@@progress "):
                done, total = (int(x) for x in line.split()[1:3])
                if progress is not None:
                    progress(done, total)
            else:
                err_lines.append(line.rstrip())
            if time.monotonic() > deadline:
                proc.kill()
                break
        code = proc.wait(timeout=60)
        if code != 0:
            tail = next((ln for ln in reversed(err_lines) if ln.strip()), f"exit code {code}")
            raise CoinferError(f"profiling {args['spec']} failed in the measuring process: {tail}")
        return json.loads(Path(out_path).read_text())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out_path)


def _pin_process(pid: int) -> None:
    """Pin every thread of ``pid`` to this process's last allowed CPU, as the runtime pins a
    one-thread device (a migrating process refills its cache on every move)."""
    allowed = sorted(os.sched_getaffinity(0))
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {allowed[-1]})
