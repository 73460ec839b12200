"""Plan a distributed generation on a cluster file: split, micro-batches, chunks, predictions.

Why here and not in the CLI: the benchmark and the tests plan exactly as ``coinfer generate``
does. Inputs are the cluster's devices in file order (speed = the emulated CPU quota: the
per-layer costs are measured on this machine at one thread, so a 0.4-core device takes
``t / 0.4``; memory from the file) and links (``latency + bytes / bandwidth``).

``capability`` maximises the predicted decode rate of the requested number of sequences, under
each device's memory for weights + the KV cache of ``(prompt + new tokens) × sequences``. The
rate of ``S`` sequences in ``M`` micro-batches is ``S / max(trip, busiest)`` (see
:func:`.cost.decode_tokens_per_s`): one sequence gets no pipelining, so its best split puts the
layers on the fewest, fastest devices that hold them; many sequences want the slowest stage as
fast as possible. The search sweeps the bottleneck cap of :mod:`.split`'s exact DP (each cap
gives the least total time within it: the trade-off curve between the two terms) for each
micro-batch size, and prices every candidate exactly. ``memory`` and ``even`` are the baselines.
For every split the number of micro-batches is the one with the best predicted rate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .cost import LinkCost, LlmCosts, MemoryModel, decode_tokens_per_s, prefill_makespan
from .slices import choose_slices
from .split import (
    LlmDevice,
    StageWork,
    _check_total,
    _dp,
    evaluate_split,
    even_split,
    memory_split,
)

ALGOS = ("capability", "memory", "even")
# Bottleneck caps swept per micro-batch size by the capability search (see _thin).
MAX_CAPS = 64


@dataclass(frozen=True)
class GenerationPlan:
    """Where each layer runs, how sequences are grouped and prompts cut, and the predictions."""

    method: str
    devices: tuple[str, ...]
    layer_counts: tuple[int, ...]
    speeds: tuple[float, ...]
    stage_bytes: tuple[int, ...]
    mem_bytes: tuple[int, ...]
    links: tuple[LinkCost, ...]
    back_link: LinkCost | None
    group_sizes: tuple[int, ...]
    slices: tuple[int, ...]
    predicted_ttft_s: float
    predicted_tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "algo": self.method,
            "devices": list(self.devices),
            "layer_counts": list(self.layer_counts),
            "speeds": list(self.speeds),
            "group_sizes": list(self.group_sizes),
            "token_slices": list(self.slices),
            "predicted_ttft_s": self.predicted_ttft_s,
            "predicted_tokens_per_s": self.predicted_tokens_per_s,
        }


def device_speed(dev: Any) -> float:
    """A cluster device's speed relative to one unthrottled thread of this machine."""
    emu = getattr(dev, "emulate", None)
    if emu is None:
        return 1.0
    return float(min(emu.cpu_quota, emu.threads))


def llm_devices(
    cluster: Any, names: Sequence[str] | None = None, scales: Mapping[str, float] | None = None
) -> list[LlmDevice]:
    """The cluster's devices (all, or ``names`` in that order) as the split sees them; a
    measured ``scales[name]`` (:mod:`.overhead`) divides the device's speed."""
    chosen = list(names) if names else list(cluster.device_names)
    if len(set(chosen)) != len(chosen):
        raise InputError(f"devices {chosen}: each device may appear once")
    scales = scales or {}
    return [
        LlmDevice(
            n, device_speed(cluster.device(n)) / scales.get(n, 1.0), cluster.device(n).mem_bytes
        )
        for n in chosen
    ]


def link_cost(cluster: Any, a: str, b: str) -> LinkCost:
    lk = cluster.link(a, b)
    if lk is None:
        raise InputError(f"{cluster.origin}: no link {a} -> {b} for the pipeline")
    return LinkCost(lk.latency_s, lk.bandwidth_Bps)


def group_sizes(sequences: int, groups: int) -> list[int]:
    """``sequences`` split into ``groups`` micro-batches (at most one per sequence), larger
    first."""
    m = max(1, min(sequences, groups))
    return [sequences // m + (1 if i < sequences % m else 0) for i in range(m)]


def _step_links(cluster: Any, costs: LlmCosts, batch: int) -> dict[tuple[str, str], float]:
    nbytes = batch * costs.act_bytes_per_token
    return {lk.pair: lk.latency_s + nbytes / lk.bandwidth_Bps for lk in cluster.all_links}


def _capability(
    n_layers: int, devices: list[LlmDevice], mem: MemoryModel, costs: LlmCosts, cluster: Any,
    *, context: int, mem_context: int, sequences: int,
) -> list[int]:  # fmt: skip
    best: tuple[float, list[int]] | None = None
    seen: set[tuple[int, ...]] = set()
    for m in range(1, min(sequences, len(devices)) + 1):
        b = math.ceil(sequences / m)
        work = StageWork.decode(costs, context, b)
        links = _step_links(cluster, costs, b)
        args = (n_layers, devices, mem, work, mem_context, sequences, links)
        low = _dp(*args, math.inf, totals=False)
        fast = _dp(*args, math.inf, totals=True)
        if low is None or fast is None:
            continue
        high = max(_times(devices, fast[1], work, links))
        caps = {low[0], high}
        for dev in devices:
            for n in range(1, n_layers + 1):
                for extra in (0.0, work.first_s, work.last_s, work.first_s + work.last_s):
                    caps.add((n * work.layer_s + extra + work.item_s) / dev.speed)
        caps.update(links.values())
        for cap in _thin(sorted(c for c in caps if low[0] <= c <= high)):
            found = _dp(*args, cap * (1 + 1e-12), totals=True)
            if found is None or tuple(found[1]) in seen:
                continue
            seen.add(tuple(found[1]))
            rate = _rate(found[1], devices, costs, cluster, context, sequences)
            if best is None or rate > best[0]:
                best = (rate, found[1])
    if best is None:
        raise InputError("no split fits the devices' memory")  # _check_total names it first
    return best[1]


def _thin(caps: list[float]) -> list[float]:
    """At most :data:`MAX_CAPS` caps, evenly spread over ``caps`` (ends kept): the sweep is
    exact up to that many distinct stage times, and bounded for deep models."""
    if len(caps) <= MAX_CAPS:
        return caps
    step = (len(caps) - 1) / (MAX_CAPS - 1)
    return [caps[round(i * step)] for i in range(MAX_CAPS)]


def _times(
    devices: list[LlmDevice], counts: list[int], work: StageWork, links: dict
) -> list[float]:
    used = [(d, n) for d, n in zip(devices, counts, strict=True) if n]
    out = []
    for i, (d, n) in enumerate(used):
        t = (
            n * work.layer_s
            + (work.first_s if i == 0 else 0)
            + (work.last_s if i == len(used) - 1 else 0)
            + work.item_s
        )
        out.append(t / d.speed)
    out += [links.get((a.name, b.name), math.inf) for (a, _), (b, _) in itertools.pairwise(used)]
    return out


def _rate(counts, devices, costs, cluster, context, sequences) -> float:
    used = [(d, n) for d, n in zip(devices, counts, strict=True) if n]
    names = [d.name for d, _ in used]
    links = [link_cost(cluster, a, b) for a, b in itertools.pairwise(names)]
    back = link_cost(cluster, names[-1], names[0]) if len(names) > 1 else None
    counts_used, speeds = [n for _, n in used], [d.speed for d, _ in used]
    return best_microbatches(counts_used, speeds, costs, links, back, context, sequences)[1]


def best_microbatches(
    counts: Sequence[int], speeds: Sequence[float], costs: LlmCosts, links: Sequence[LinkCost],
    back: LinkCost | None, context: int, sequences: int,
) -> tuple[int, float]:  # fmt: skip
    """The number of micro-batches (1 .. min(sequences, stages)) with the highest predicted
    decode rate, and that rate. One group per stage keeps every stage busy, but on a CPU a
    decode step is bound by reading the weights, once per group: fewer, larger groups can be
    faster (the cost model's ``decode_fixed_s`` and the head's fixed part say by how much)."""
    best = (1, -1.0)
    for m in range(1, min(sequences, len(counts)) + 1):
        rate = decode_tokens_per_s(
            counts, speeds, costs, links, context=context, sequences=sequences,
            microbatches=m, back_link=back,
        )  # fmt: skip
        if rate > best[1] * (1 + 1e-9):
            best = (m, rate)
    return best


def plan_generation(
    parts: Any, cluster: Any, costs: LlmCosts, *, algo: str = "capability", prompt_tokens: int,
    new_tokens: int, sequences: int = 1, devices: Sequence[str] | None = None,
    token_slices: int | str | None = None, speed_scales: Mapping[str, float] | None = None,
) -> GenerationPlan:  # fmt: skip
    """The plan of ``sequences`` copies of a ``prompt_tokens`` prompt generating ``new_tokens``
    on ``cluster`` (``parts`` may be a meta-device model: only sizes are read; ``speed_scales``:
    measured per-device factors, see :func:`llm_devices`)."""
    if algo not in ALGOS:
        raise InputError(f"unknown --algo {algo!r}: use one of {', '.join(ALGOS)}")
    if sequences < 1 or prompt_tokens < 1 or new_tokens < 1:
        raise InputError("prompt, new tokens and sequences must each be >= 1")
    devs = llm_devices(cluster, devices, speed_scales)
    mem = MemoryModel.of(parts)
    mem_context, context = prompt_tokens + new_tokens, prompt_tokens + new_tokens // 2
    kw = {"context": mem_context, "batch": sequences}
    if algo == "capability":
        _check_total(parts.n_layers, devs, mem, mem_context, sequences)
        counts = _capability(
            parts.n_layers, devs, mem, costs, cluster,
            context=context, mem_context=mem_context, sequences=sequences,
        )  # fmt: skip
        split = evaluate_split(
            "capability", devs, counts, mem, StageWork.decode(costs, context), **kw
        )
    else:
        fn = memory_split if algo == "memory" else even_split
        split = fn(parts.n_layers, devs, mem, StageWork.decode(costs, context), **kw)
    names = list(split.devices)
    by_name = {d.name: d for d in devs}
    speeds = tuple(by_name[n].speed for n in names)
    links = tuple(link_cost(cluster, a, b) for a, b in itertools.pairwise(names))
    back = link_cost(cluster, names[-1], names[0]) if len(names) > 1 else None
    counts = list(split.layer_counts)
    m, rate = best_microbatches(counts, speeds, costs, links, back, context, sequences)
    groups = group_sizes(sequences, m)
    slices = _slices(prompt_tokens, token_slices, counts, speeds, costs, links, groups[0])
    ttft = prefill_makespan(slices, counts, speeds, costs, links, batch=groups[0])
    return GenerationPlan(
        algo, tuple(names), tuple(counts), speeds, split.stage_bytes,
        tuple(by_name[n].mem_bytes for n in names), links, back, tuple(groups), tuple(slices),
        ttft, rate,
    )  # fmt: skip


def check_fits(
    parts: Any, cluster: Any, *, prompt_tokens: int, new_tokens: int, sequences: int = 1,
    devices: Sequence[str] | None = None,
) -> None:  # fmt: skip
    """Raise :class:`InputError` naming the shortfall when the model's weights + KV cache
    exceed the chosen devices' memory together (a meta-device model is enough: cheap, and
    checked before anything is measured or started)."""
    devs = llm_devices(cluster, devices)
    _check_total(parts.n_layers, devs, MemoryModel.of(parts), prompt_tokens + new_tokens, sequences)


def _slices(total, token_slices, counts, speeds, costs, links, batch) -> list[int]:
    if token_slices in (None, 1, "1"):
        return [total]
    k = None if token_slices == "auto" else int(token_slices)
    if k is not None and not 1 <= k <= total:
        raise InputError(
            f"--token-slices must be 1..{total} (the prompt's tokens) or auto, got {k}"
        )
    return list(choose_slices(total, counts, speeds, costs, links, k=k, batch=batch).sizes)


# Bumped when the profile's method changes (2: every layer per timing, see measure.py), so a
# cached profile of the old kind is not used.
PROFILE_VERSION = 4  # 3: per-batch decode and head tables; 4: median of 3 sweeps


def cache_path(spec: str, kind: str, **extra: Any) -> Path:
    """``$COINFER_CACHE/llm/{kind}-{digest}.json`` for measurements of model ``spec`` on this
    host: the digest covers the spec, torch and profile version, a factory file's identity and
    ``extra`` (what else the figure depends on), so any change measures anew."""
    import torch

    root = os.environ.get("COINFER_CACHE")
    base = (Path(root) if root else Path.home() / ".cache" / "coinfer") / "llm"
    key: dict[str, Any] = {
        "spec": spec, "torch": torch.__version__, "host": socket.gethostname(),
        "profile": PROFILE_VERSION, **extra,
    }  # fmt: skip
    path = spec.rsplit(":", 1)[0]
    if path.endswith(".py") and Path(path).exists():
        st = Path(path).resolve().stat()
        key.update(file=str(Path(path).resolve()), mtime=st.st_mtime_ns, size=st.st_size)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return base / f"{kind}-{digest}.json"


def measured_costs(spec: str, parts: Any, *, refresh: bool = False) -> LlmCosts:
    """:func:`.measure.profile_layer_costs` of the model at one thread (the devices' thread
    count), cached on disk per model spec, host and torch version (``$COINFER_CACHE/llm``)."""
    path = cache_path(spec, "costs")
    if not refresh and path.exists():
        try:
            return LlmCosts(**json.loads(path.read_text()))
        except (ValueError, TypeError, OSError):
            pass
    import torch

    from .measure import profile_layer_costs

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        costs = profile_layer_costs(parts).costs
    finally:
        torch.set_num_threads(before)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(costs)))
    tmp.replace(path)
    return costs
