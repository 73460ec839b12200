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
4. writes JSON lines to the coordinator on its original stdout (ready, tokens, done, error).

The process frame (channel, parent watch, quota, exit) is :func:`coinfer.runtime.workgroup.worker_main`.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from .decoder import DecoderParts, load_causal_lm
from .stage import DecoderStage
from .stagejob import run_job


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


def build(setup: dict[str, Any]) -> tuple[DecoderStage, dict[str, Any]]:
    """Load the model with the zoo's seeded loader and keep only this worker's stage."""
    parts = load_causal_lm(setup["spec"])
    stage = DecoderStage(parts, setup["first"], setup["last"])
    return stage, {"weights_bytes": keep_only(parts, stage)}


def main(argv: list[str] | None = None) -> int:
    from ..runtime.workgroup import worker_main

    worker_main(sys.argv[1:] if argv is None else argv, build, run_job)
    return 0  # not reached: worker_main exits the process


if __name__ == "__main__":
    sys.exit(main())
