"""What one stage does for one generation job: its share of the prefill and decode pipeline.

Why a fixed schedule: every stage derives the same ordered list of work items from the job —
first each sequence group's prompt chunks (group by group, chunk by chunk), then decode rounds
(round ``r``: one step of every group in turn). Stage ``s`` runs the items in that order,
taking each input from stage ``s − 1`` (the first stage: from the prompt, or the token the last
stage sent back) and sending its output on. Because sends go through a per-link sender thread,
stage ``s`` computes item ``i + 1`` while item ``i`` is on the link or on stage ``s + 1`` —
prefill chunks flow as a pipeline, and with one group per stage every stage stays busy during
decode. Message ids on each link count up in item order, so both ends agree on them, and the
receiver knows every incoming shape before it arrives (receives are posted ahead).

The last stage turns the final prefill chunk and every decode step into a greedy token, sends
it back to the first stage (unless it was the group's last) and reports it to the coordinator.
A device with a CPU quota is held for :meth:`Emulation.pad_s` after each computation, so a
short burst does not run faster than the device (see :mod:`coinfer.runtime.emulation`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .items import schedule
from .stage import DecoderStage

PREFETCH = 2  # receives posted ahead per incoming link


class _Inbox:
    """Receives of one incoming stream, posted :data:`PREFETCH` ahead of use."""

    def __init__(self, transport: Any, peer: int, metas: Iterator[list[Any]]) -> None:
        self.transport, self.peer, self.metas = transport, peer, metas
        self.posted: deque[Any] = deque()
        self.message = 0
        for _ in range(PREFETCH):
            self._post()

    def _post(self) -> None:
        metas = next(self.metas, None)
        if metas is not None:
            self.posted.append(self.transport.post_recv(self.peer, self.message, metas))
            self.message += 1

    def take(self) -> Tensor:
        pending = self.posted.popleft()
        self._post()
        return pending.wait(self.transport.timeout_s)[0]


def run_job(
    stage: DecoderStage,
    transport: Any,
    setup: dict[str, Any],
    job: dict[str, Any],
    emu: Any,
    emit: Callable[..., None],
) -> dict[str, Any]:
    """Run this stage's part of ``job``; returns its statistics (busy time, KV bytes)."""
    from ..runtime.transport import WireTensorSpec

    rank, n = int(setup["rank"]), int(setup["n_stages"])
    first, last = rank == 0, rank == n - 1
    groups, new = job["groups"], int(job["new"])
    items = schedule(groups, new)
    dtype = str(stage.parts.embed.weight.dtype).removeprefix("torch.")
    hidden = stage.parts.hidden
    stage.reset()
    inbox = None
    if not first:  # hidden states from the previous stage, item by item
        shapes = (
            [WireTensorSpec((groups[i.group]["batch"], i.tokens, hidden), dtype)] for i in items
        )
        inbox = _Inbox(transport, rank - 1, shapes)
    elif n > 1:  # the tokens the last stage sends back, one per decode item
        shapes = (
            [WireTensorSpec((groups[i.group]["batch"], 1), "int64")] for i in items if not i.prefill
        )
        inbox = _Inbox(transport, n - 1, shapes)
    prompts = [torch.tensor(p, dtype=torch.int64) for p in job.get("prompts") or []]
    offsets = [0] * len(groups)
    local: dict[int, Tensor] = {}  # last token per group (one-stage pipelines)
    fwd = back = 0
    pad_total = cpu_total = decode_cpu = 0.0
    decode_items = 0
    spans: list[tuple[float, float]] = []  # each item's compute, absolute perf_counter seconds
    start = time.perf_counter()
    for item in items:
        if not first:
            x = inbox.take()  # type: ignore[union-attr]
        elif item.prefill:
            x = prompts[item.group][:, offsets[item.group] : offsets[item.group] + item.tokens]
            offsets[item.group] += item.tokens
        else:
            x = inbox.take() if inbox is not None else local[item.group]
        t0, c0 = time.perf_counter(), time.thread_time()
        out = stage.forward(x, seq=item.group, last_only=True, head=item.final)
        tok = out[:, -1].argmax(-1, keepdim=True) if last and item.final else None
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        pad = emu.pad_s(cpu, wall) if emu is not None else 0.0
        if pad > 0:
            time.sleep(pad)
        spans.append((t0, t0 + wall + pad))
        pad_total += pad
        cpu_total += cpu
        if not item.prefill:
            decode_cpu += cpu
            decode_items += 1
        if not last:
            transport.send(rank + 1, fwd, [out], [WireTensorSpec.of(out)])
            fwd += 1
        elif tok is not None:
            r = 0 if item.prefill else item.step
            emit(t=[item.group, r, tok.flatten().tolist()])
            if r < new - 1:
                if n > 1:
                    transport.send(0, back, [tok], [WireTensorSpec.of(tok)])
                    back += 1
                else:
                    local[item.group] = tok
    if transport is not None:
        transport.flush()
    return {
        "busy_s": sum(b - a for a, b in spans),
        "pad_s": pad_total,
        "cpu_s": cpu_total,
        "decode_cpu_s": decode_cpu,
        "decode_items": decode_items,
        "wall_s": time.perf_counter() - start,
        "kv_bytes": stage.kv_bytes(),
        "items": len(items),
        "spans": spans,
    }
