"""One device of a distributed generation: a process that holds one pipeline stage.

Why a process per device: the stages of a split LLM run at the same time on different devices,
each with its own CPU budget and its own KV caches; emulating that in one Python process would
serialise them. Started by :mod:`.distributed` as ``python -m coinfer.llm.worker SETUP.json``:

1. builds the model from the spec with the zoo's seeded loader (every worker gets the same
   weights, so no weights cross a link) and keeps only its stage: the storage of every other
   layer (and of the embedding / head it does not use) is freed;
2. joins the stages' gloo group (a FileStore in the coordinator's private temp dir) and only
   then enters its device's CPU quota (gloo's I/O threads stay outside it, as a NIC would);
3. reads jobs from stdin (one JSON line each) and runs them by :func:`.stagejob.run_job`;
4. writes JSON lines to the coordinator on its original stdout (ready, tokens, done, error);
   anything else that writes to stdout goes to stderr, so the channel stays clean.

It exits when told (``{"stop": true}``), when stdin closes, when its parent dies, or after
reporting an error (exit code 3); it always leaves its cgroup first.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from ..errors import PeerError
from .decoder import DecoderParts, load_causal_lm
from .stage import DecoderStage

EXIT_AFTER_ERROR = 3


class Channel:
    """JSON lines to the coordinator (thread-safe: sender threads never write, but be safe)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def emit(self, **msg: Any) -> None:
        with self.lock:
            self.out.write(json.dumps(msg) + "\n")
            self.out.flush()


def _drop(module: nn.Module | None) -> None:
    """Free a module's parameter storage (the module object stays, so nothing else changes)."""
    if module is None:
        return
    for p in module.parameters():
        p.data = torch.empty(0, dtype=p.dtype)


def keep_only(parts: DecoderParts, stage: DecoderStage) -> int:
    """Free every weight ``stage`` does not use; returns the weight bytes it still holds."""
    for i, layer in enumerate(parts.layers):
        if not stage.first_layer <= i < stage.last_layer:
            _drop(layer)
    needs_embed = stage.is_first or (stage.is_last and parts.tied_head)
    if not stage.is_first:
        _drop(parts.pos_embed)
    if not stage.is_last:
        _drop(parts.final_norm)
        if not parts.tied_head:
            _drop(parts.lm_head)
    if not needs_embed:
        _drop(parts.embed)
    seen: dict[int, int] = {}
    model = parts.source if parts.source is not None else nn.ModuleList(parts.layers)
    for p in model.parameters():
        if p.numel():
            seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def _watch_parent(parent: int) -> None:
    """Exit when the coordinator is gone (its clean-up cannot reach an orphan otherwise)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(EXIT_AFTER_ERROR)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    setup = json.loads(Path(args[0]).read_text())
    chan = Channel(os.fdopen(os.dup(1), "w", buffering=1))
    os.dup2(2, 1)  # stray prints must not corrupt the coordinator's channel
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    from ..runtime import emulation
    from ..runtime.transport import init_process_group

    emu = None
    code = 0
    try:
        torch.set_num_threads(1)
        parts = load_causal_lm(setup["spec"])
        stage = DecoderStage(parts, setup["first"], setup["last"])
        weights = keep_only(parts, stage)
        transport = None
        if setup["n_stages"] > 1:
            transport = _transport(setup, init_process_group, emulation.exempt_this_thread)
        emu = emulation.apply(
            setup["device"], setup["run_id"], cpu_quota=setup["cpu_quota"],
            threads=setup["threads"], use_cgroup=setup["use_cgroup"], cpu=setup["cpu"],
        )  # fmt: skip
        chan.emit(ready=True, weights_bytes=weights, emulation=emu.to_dict(), pid=os.getpid())
        from .stagejob import run_job

        for line in sys.stdin:
            job = json.loads(line)
            if job.get("stop"):
                break
            stats = run_job(stage, transport, setup, job, emu, chan.emit)
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


def _transport(setup: dict[str, Any], init_group: Any, thread_init: Any) -> Any:
    """Join the gloo group of the stages and build the shaped point-to-point transport."""
    from ..runtime.linkshape import LinkShape
    from ..runtime.transport import Transport

    timeout = float(setup["timeout_s"])
    init_group(setup["rank"], setup["n_stages"], "file:" + setup["store"], 0, timeout)
    links = {int(r): LinkShape.from_dict(d) for r, d in setup["links"].items()}
    return Transport(
        setup["rank"], setup["names"], links, depth=4, timeout_s=timeout, thread_init=thread_init
    )


if __name__ == "__main__":
    sys.exit(main())
