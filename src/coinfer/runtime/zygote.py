"""A warm parent for a session's local workers: Python, torch and coinfer imported once, then a
worker forked per device in milliseconds.

Starting a worker as a new process costs ~1-2 s of CPU (the interpreter, torch, the model
code) — most of a fail-over's budget, and on the testbed's 2 shared cores it slows the running
pipeline too. The zygote pays it once per session; every epoch's workers (the first, and those
of each fail-over) are ``fork()`` children that start serving at once (copy-on-write: the
imported modules are shared, not copied). Fork is safe here because the zygote never computes:
no intra-op pool or gloo thread exists in it to be cut off by the fork.

It is also the session's **parameter cache** (Quart's fork-based cache, S10): told to *warm* a
stage, the zygote rebuilds it from code and loads its weights once; every later fork inherits the
ready module, so a worker of a later epoch with the same stage (a replica added by scaling, or
the old devices of a plan whose cuts did not change) neither rebuilds it nor receives its
weights — its setup names the cache key instead. Building modules runs initialisation kernels;
the zygote keeps one intra-op thread, so they run inline and still no pool exists to be cut off
by a fork. The cache is bounded (:data:`CACHE_MAX_BYTES`); a stage that does not fit is shipped.

Protocol (pipes, one JSON object per line): the coordinator writes the token as the first line
of the zygote's stdin, then ``{"device", "coordinator"}`` per worker or ``{"warm": key, "spec",
"index", "path"}`` per stage to cache (weights in a private safetensors file the coordinator
removes after the answer); the zygote answers ``{"ready": true}`` once imported, then ``{"device",
"pid"}`` per fork, ``{"warmed": key, "error": null | text}`` per warm, and ``{"exit": pid,
"code": c}`` when a child ends (negative: killed by that signal). The zygote exits when its
stdin closes (the coordinator is gone); its children then leave on the coordinator's silence.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ..errors import InputError, PeerError
from ..profile.cgroup import emulation_env
from .param_cache import CACHE, stage_key

# Seconds the zygote may take to import everything (a loaded 2-core host: ~2 s).
ZYGOTE_START_S = 60.0
# Weights the parameter cache holds at most (bytes): beyond it stages are shipped as before.
CACHE_MAX_BYTES = 2 << 30
# Seconds a warm may take (rebuilding a large stage on a loaded host).
WARM_TIMEOUT_S = 60.0


class ForkedWorker:
    """A zygote's child as the supervisor sees a local worker process (``pid``, ``poll``,
    ``returncode``, ``send_signal``, ``kill``, ``wait``: the parts of ``Popen`` it uses)."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self.zygote.exits.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        with self.zygote.cond:
            while self.pid not in self.zygote.exits:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
                self.zygote.cond.wait(left)
            return self.zygote.exits[self.pid]


class Zygote:
    """The coordinator's handle on its zygote process."""

    def __init__(self, token: str):
        env = {k: v for k, v in os.environ.items() if k != "COINFER_TOKEN"}
        env["TORCH_CPP_LOG_LEVEL"] = "ERROR"
        env = emulation_env(env)  # its forks run multi-thread devices: see profile.cgroup
        # its own session (and so its forks'): a terminal's Ctrl-C goes to the coordinator only,
        # which ends the workers its own way (see processes.spawn_local_workers)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coinfer.runtime.zygote"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.exits: dict[int, int] = {}
        self.cond = threading.Condition()
        self._forks: list[dict[str, Any]] = []
        self._warmed: dict[str, str | None] = {}
        self.cached: set[str] = set()
        self.cached_bytes = 0
        self._warm_files: set[str] = set()  # removed at close if a warm is cut short
        self._ready = False
        self._lock = threading.Lock()  # one fork request at a time
        self.proc.stdin.write(token.encode() + b"\n")
        self.proc.stdin.flush()
        threading.Thread(target=self._read, name="zygote", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if msg.get("ready"):
                    self._ready = True
                elif "exit" in msg:
                    self.exits[int(msg["exit"])] = int(msg["code"])
                elif "pid" in msg:
                    self._forks.append(msg)
                elif "warmed" in msg:
                    self._warmed[str(msg["warmed"])] = msg.get("error")
                self.cond.notify_all()
        with self.cond:  # the zygote is gone: so are any children it did not report
            self._ready = False
            self.cond.notify_all()

    def spawn(
        self, names: list[str] | tuple[str, ...], control: tuple[str, int]
    ) -> dict[str, ForkedWorker]:
        """One forked worker per device in ``names``, serving the coordinator at ``control``."""
        assert self.proc.stdin is not None
        out: dict[str, ForkedWorker] = {}
        with self._lock:
            deadline = time.monotonic() + ZYGOTE_START_S
            with self.cond:
                while not self._ready:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise PeerError("the local worker zygote did not start")
                    self.cond.wait(0.1)
            for d in names:
                req = {"device": d, "coordinator": f"{control[0]}:{control[1]}"}
                try:
                    self.proc.stdin.write((json.dumps(req) + "\n").encode())
                    self.proc.stdin.flush()
                except OSError:
                    raise PeerError("the local worker zygote is gone") from None
                with self.cond:
                    while not self._forks:
                        if self.proc.poll() is not None:
                            raise PeerError("the local worker zygote is gone")
                        self.cond.wait(0.1)
                    msg = self._forks.pop(0)
                out[d] = ForkedWorker(self, int(msg["pid"]))
        return out

    def warm(self, spec: dict[str, Any], index: int, weights: bytes) -> bool:
        """Have the zygote build stage ``index`` of ``spec`` with ``weights`` (safetensors) and
        keep it for its forks; ``True`` once cached (``False``: over the cache's bound, or it
        failed — workers then get the stage the usual way)."""
        import tempfile

        key = stage_key(spec, index)
        if key in self.cached:
            return True
        if self.cached_bytes + len(weights) > CACHE_MAX_BYTES:
            return False
        assert self.proc.stdin is not None
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="coinfer-warm-", suffix=".safetensors", dir=shm)
        self._warm_files.add(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(weights)
            with self._lock:
                req = {"warm": key, "spec": spec, "index": index, "path": path}
                try:
                    self.proc.stdin.write((json.dumps(req) + "\n").encode())
                    self.proc.stdin.flush()
                except OSError:
                    return False
                deadline = time.monotonic() + WARM_TIMEOUT_S
                with self.cond:
                    while key not in self._warmed:
                        if self.proc.poll() is not None or time.monotonic() > deadline:
                            return False
                        self.cond.wait(0.1)
                    error = self._warmed.pop(key)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            self._warm_files.discard(path)
        if error is not None:
            return False
        self.cached.add(key)
        self.cached_bytes += len(weights)
        return True

    def close(self) -> None:
        for path in list(self._warm_files):  # a warm the session's end cut short
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve_child(device: str, coordinator: str, token: str) -> None:
    """The forked worker: the zygote's pipes are not its to use; serve, then exit."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the zygote's reply pipe
    code = 0
    try:
        from .worker import serve

        serve(coordinator, device, token, allow_model_code=True)  # the coordinator's own model
    except (InputError, PeerError) as exc:
        print(f"coinfer worker {device}: {exc}", file=sys.stderr)
        code = 2
    except BaseException:
        code = 1
    os._exit(code)


def _warm(req: dict[str, Any]) -> str | None:
    """Build and cache one stage (see the module docstring); the error, or ``None``."""
    try:
        from .stages import StageSpec, build_stage_module, load_stage_weights

        stage = build_stage_module(StageSpec.from_dict(req["spec"]), int(req["index"]))
        with open(str(req["path"]), "rb") as f:
            load_stage_weights(stage, f.read())  # strict, as a worker loads shipped weights
        CACHE[str(req["warm"])] = stage.eval()
        return None
    except Exception as exc:  # the stage is shipped instead; the zygote keeps serving
        return f"{type(exc).__name__}: {exc}"


def main() -> None:
    """The zygote process (``python -m coinfer.runtime.zygote``)."""
    token = sys.stdin.readline().strip()
    out = sys.stdout
    lock = threading.Lock()

    def say(msg: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    def reaper() -> None:
        """Report every child's end (a thread: a fork copies only the forking thread, and a
        child never touches the reply pipe or its lock)."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            say({"exit": pid, "code": code})

    import torch  # the point of the zygote: imported once, shared by every fork

    torch.set_num_threads(1)  # warming runs kernels inline: no intra-op pool (see above)

    from . import stages, worker  # noqa: F401 - stages pulls in the zoo

    importlib.import_module("coinfer.graph")  # capture/split code, as stages loads it

    threading.Thread(target=reaper, name="reaper", daemon=True).start()
    say({"ready": True})
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if "warm" in req:
                say({"warmed": str(req["warm"]), "error": _warm(req)})
                continue
            device, coordinator = str(req["device"]), str(req["coordinator"])
        except (ValueError, KeyError, TypeError):
            continue
        pid = os.fork()
        if pid == 0:
            _serve_child(device, coordinator, token)
        say({"device": device, "pid": pid})


if __name__ == "__main__":
    main()
