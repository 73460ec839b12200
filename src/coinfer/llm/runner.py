"""``coinfer generate`` as a library call: plan, start the workers, generate, check, report.

Why apart from the CLI: the benchmark and the tests drive the same path (and reuse started
workers for several jobs through :func:`start_workers`). Also here: the prompt's tokenisation
(a local tokenizer when one is available offline, else UTF-8 bytes modulo the vocabulary) and
the reference — greedy ``generate`` of the unsplit model in this process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.trace import TraceEvent
from ..errors import InputError
from .decoder import DecoderParts, full_logits
from .distributed import DistributedGenerator, RunResult, StageSpec
from .items import schedule
from .planning import GenerationPlan


def encode_prompt(text: str, parts: DecoderParts) -> tuple[list[int], str]:
    """Token ids of ``text`` and the tokenizer used: GPT-2's BPE when its files are in the
    local Hugging Face cache (nothing is downloaded), else ``bytes`` — the UTF-8 bytes of the
    text, each modulo the vocabulary size (the random-weight models need ids, not meaning)."""
    if not text:
        raise InputError("--prompt is empty")
    if parts.model_type == "gpt2" and parts.vocab == 50257:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
            return list(tok.encode(text)), "gpt2"
        except Exception:
            pass
    return [b % parts.vocab for b in text.encode("utf-8")], "bytes"


def parse_prompt_ids(text: str, vocab: int) -> list[int]:
    """``"1,2,3"`` as ids, each checked against the vocabulary."""
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids or any(not 0 <= i < vocab for i in ids):
        raise InputError(f"--prompt-ids must be 1 or more ids in 0..{vocab - 1}, got {text!r}")
    return ids


@torch.no_grad()
def reference_tokens(parts: DecoderParts, ids: Tensor, new_tokens: int) -> Tensor:
    """Greedy decoding of the unsplit model: transformers ``generate(do_sample=False)``, or for
    the zoo's plain GPT-2 (which has no ``generate``) the uncached greedy loop."""
    model = parts.source
    if parts.family == "hf" and model is not None and hasattr(model, "generate"):
        return model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None,
            use_cache=True,  # the zoo's GPT-2 config turns the cache off; same tokens, faster
        )  # fmt: skip
    seq = ids
    for _ in range(new_tokens):
        nxt = full_logits(parts, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


def stage_specs(plan: GenerationPlan, cluster: Any) -> list[StageSpec]:
    """One worker per used device: its layers, emulation and a CPU to pin it to (devices
    packed so that the quotas on each CPU sum to at most one core where possible)."""
    from ..runtime.emulation import pack_cpus

    quotas, emus = {}, {}
    for name in plan.devices:
        emu = cluster.device(name).emulate
        emus[name] = emu
        quotas[name] = emu.cpu_quota if emu is not None else 1.0
    cpus = pack_cpus(quotas, len(os.sched_getaffinity(0)))
    bounds = [0, *itertools.accumulate(plan.layer_counts)]
    out = []
    for i, name in enumerate(plan.devices):
        emu = emus[name]
        out.append(
            StageSpec(
                name, bounds[i], bounds[i + 1],
                emu.cpu_quota if emu is not None else None,
                emu.threads if emu is not None else 1,
                sorted(os.sched_getaffinity(0))[cpus[name]],
            )
        )  # fmt: skip
    return out


def link_shapes(plan: GenerationPlan) -> list[dict[int, dict[str, Any]]]:
    """What each rank sends to whom and how the link is shaped (forward, and the token back)."""
    out: list[dict[int, dict[str, Any]]] = [{} for _ in plan.devices]
    for i, lk in enumerate(plan.links):
        out[i][i + 1] = {"bandwidth_Bps": lk.bandwidth_Bps, "latency_s": lk.latency_s}
    if plan.back_link is not None:
        lk = plan.back_link
        out[-1][0] = {"bandwidth_Bps": lk.bandwidth_Bps, "latency_s": lk.latency_s}
    return out


def start_workers(
    spec: str, plan: GenerationPlan, cluster: Any, *, timeout_s: float = 300.0
) -> DistributedGenerator:
    """The workers of ``plan`` (not yet started: use the result as a context manager)."""
    return DistributedGenerator(
        spec, stage_specs(plan, cluster), link_shapes(plan), timeout_s=timeout_s
    )


def split_groups(ids: Sequence[int], plan: GenerationPlan) -> list[Tensor]:
    """The sequences of ``plan`` (copies of one prompt) as its micro-batches."""
    row = torch.tensor([list(ids)], dtype=torch.int64)
    return [row.repeat(b, 1) for b in plan.group_sizes]


def generate_on(
    gen: DistributedGenerator,
    ids: Sequence[int],
    plan: GenerationPlan,
    new_tokens: int,
    on_token: Callable[[int, int, list[int]], None] | None = None,
) -> RunResult:
    """One job on started workers: every sequence of ``plan`` from prompt ``ids``."""
    groups = split_groups(ids, plan)
    return gen.generate(groups, new_tokens, [plan.slices] * len(groups), on_token=on_token)


def report(
    plan: GenerationPlan, result: RunResult, gen: DistributedGenerator, reference: Sequence[int]
) -> dict[str, Any]:
    """The ``--json`` document: tokens per sequence, the reference (``prompt + new`` ids of
    the unsplit model), timings, plan, memory."""
    tokens = [row for t in result.tokens for row in t.tolist()]
    ref = list(reference)
    memory = []
    for i, name in enumerate(plan.devices):
        ready, stats = gen.ready[i], result.stats[i]
        memory.append({
            "device": name,
            "layers": plan.layer_counts[i],
            "capacity_bytes": plan.mem_bytes[i],
            "predicted_bytes": plan.stage_bytes[i],
            "weights_bytes": ready["weights_bytes"],
            "kv_cache_bytes": stats["kv_bytes"],
            "emulation": ready["emulation"]["mode"],
        })  # fmt: skip
    return {
        "tokens": tokens,
        "reference_tokens": ref,
        "identical": all(t == ref for t in tokens),
        "ttft_s": result.ttft_s,
        "tokens_per_s": result.decode_tokens_per_s,
        "predicted_ttft_s": plan.predicted_ttft_s,
        "predicted_tokens_per_s": plan.predicted_tokens_per_s,
        "total_s": result.total_s,
        "plan": plan.to_dict(),
        "memory": memory,
    }


def measured_events(plan: GenerationPlan, result: RunResult, new_tokens: int) -> list[TraceEvent]:
    """The run's compute bars as trace events (one per stage and item, ``request`` = the
    sequence group), on the job's clock — to draw beside :func:`.simulate.simulate_plan`'s."""
    items = schedule([{"slices": list(plan.slices)} for _ in plan.group_sizes], new_tokens)
    out = []
    for s, (name, stats) in enumerate(zip(plan.devices, result.stats, strict=True)):
        for item, (a, b) in zip(items, stats.get("spans", []), strict=False):
            out.append(TraceEvent(name, "compute", item.group, a, b, s))
    return out
