"""The runtime's per-item overhead of a stage, measured through real workers.

Why: the cost coefficients (:mod:`.measure`) are timed in one process, step after step. In a
generation each stage is a worker that waits between items (the other stages are computing)
and, on the testbed, is throttled by its CPU quota while it computes; it starts every item with
cold caches. On GPT-2 small a stage's decode step took ~2.6 ms more CPU in a worker than in
the profile, *whatever its size* (1 layer + head, 3 layers, 5 layers, all 12): an additive
cost per item, not a factor, and at one sequence it is 20–30 % of a 4-stage pipeline's token
time. So it is measured once per model, host and cluster — a short even-split generation over
the cluster's devices, each stage's compute-thread CPU per decode step against the priced
step — and priced as :attr:`LlmCosts.item_overhead_s` on every stage and item.

The arithmetic is pure (:func:`overhead_from_stats`); :func:`probe_overhead` starts workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .cost import LlmCosts

# The probe's generation: a prompt and length like a chat turn's; the first job warms the
# workers up and is not counted (the later ones ran 0.5–2 ms slower per step than the first).
PROBE_PROMPT, PROBE_NEW, PROBE_JOBS = 64, 24, 3
# Bumped when the probe's method changes, so an older cached figure is not used.
PROBE_VERSION = 2


@dataclass(frozen=True, slots=True)
class OverheadProbe:
    """Per stage of the probe: its device, the priced and measured CPU seconds per decode step
    and their difference; ``item_overhead_s`` is the median difference (never below 0)."""

    devices: tuple[str, ...]
    priced_s: tuple[float, ...]
    measured_s: tuple[float, ...]
    item_overhead_s: float

    @property
    def extra_s(self) -> tuple[float, ...]:
        return tuple(m - p for m, p in zip(self.measured_s, self.priced_s, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def priced_decode_step_s(
    costs: LlmCosts, layers: int, first: bool, last: bool, prompt: int, new: int, batch: int = 1
) -> float:
    """Reference seconds of one stage's mean decode step over a generation of ``new`` tokens
    after a ``prompt``-token prompt (step ``r`` attends over ``prompt + r - 1`` cached tokens),
    without the per-item overhead."""
    steps = range(1, new)
    if not steps:
        raise ValueError("a generation of one token has no decode step")
    total = 0.0
    for r in steps:
        t = layers * costs.decode_s(prompt + r - 1, batch)
        t += costs.embed_s(batch) if first else 0.0
        t += costs.head_s(batch) if last else 0.0
        total += t
    return total / len(steps)


def overhead_from_stats(
    costs: LlmCosts,
    devices: list[str],
    layer_counts: list[int],
    stats: list[dict[str, Any]],
    prompt: int,
    new: int,
) -> OverheadProbe:
    """Each stage's compute-thread CPU per decode step (from the workers' statistics) against
    the priced step; the overhead is the median of the differences over the stages."""
    base = dataclasses.replace(costs, item_overhead_s=0.0)
    n = len(devices)
    priced, measured = [], []
    for s, (layers, st) in enumerate(zip(layer_counts, stats, strict=True)):
        if not st.get("decode_items"):
            raise InputError(f"the overhead probe's stage on {devices[s]} ran no decode step")
        priced.append(priced_decode_step_s(base, layers, s == 0, s == n - 1, prompt, new))
        measured.append(float(st["decode_cpu_s"]) / int(st["decode_items"]))
    extra = [m - p for m, p in zip(measured, priced, strict=True)]
    return OverheadProbe(
        tuple(devices), tuple(priced), tuple(measured), max(0.0, statistics.median(extra))
    )


def probe_overhead(spec: str, parts: Any, costs: LlmCosts, cluster: Any) -> OverheadProbe:
    """Run the probe: an even split over the cluster's devices, :data:`PROBE_JOBS` short
    generations on the same workers (the first warms them up; the others are pooled)."""
    import torch

    from .planning import plan_generation
    from .runner import generate_on, start_workers

    base = dataclasses.replace(costs, item_overhead_s=0.0)
    limit = parts.max_positions
    prompt = PROBE_PROMPT if limit is None else max(1, min(PROBE_PROMPT, limit - PROBE_NEW - 1))
    plan = None
    for algo in ("even", "memory", "capability"):  # every device if their memories allow
        try:
            plan = plan_generation(
                parts, cluster, base, algo=algo, prompt_tokens=prompt, new_tokens=PROBE_NEW
            )
            break
        except InputError:
            if algo == "capability":
                raise
    assert plan is not None
    gen = torch.Generator().manual_seed(PROBE_PROMPT)
    ids = torch.randint(0, parts.vocab, (prompt,), generator=gen).tolist()
    pooled: list[dict[str, Any]] = [{"decode_cpu_s": 0.0, "decode_items": 0} for _ in plan.devices]
    with start_workers(spec, plan, cluster) as workers:
        for job in range(PROBE_JOBS):
            result = generate_on(workers, ids, plan, PROBE_NEW)
            if job == 0 and PROBE_JOBS > 1:
                continue
            for total, st in zip(pooled, result.stats, strict=True):
                total["decode_cpu_s"] += float(st.get("decode_cpu_s", 0.0))
                total["decode_items"] += int(st.get("decode_items", 0))
    return overhead_from_stats(
        base, list(plan.devices), list(plan.layer_counts), pooled, prompt, PROBE_NEW
    )


def _cache_path(spec: str, cluster: Any) -> Path:
    import torch

    from .planning import PROFILE_VERSION, llm_devices

    root = os.environ.get("COINFER_CACHE")
    base = (Path(root) if root else Path.home() / ".cache" / "coinfer") / "llm"
    devices = [(d.name, d.speed, d.mem_bytes) for d in llm_devices(cluster)]
    key = {
        "spec": spec, "torch": torch.__version__, "host": socket.gethostname(),
        "profile": PROFILE_VERSION, "probe": PROBE_VERSION, "devices": devices,
    }  # fmt: skip
    path = spec.rsplit(":", 1)[0]
    if path.endswith(".py") and Path(path).exists():
        st = Path(path).resolve().stat()
        key.update(file=str(Path(path).resolve()), mtime=st.st_mtime_ns, size=st.st_size)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return base / f"overhead-{digest}.json"


def with_measured_overhead(
    spec: str, parts: Any, costs: LlmCosts, cluster: Any, *, refresh: bool = False
) -> tuple[LlmCosts, OverheadProbe]:
    """``costs`` with the per-item overhead measured on ``cluster`` (cached per model spec,
    host, torch and profile version and the cluster's devices, in ``$COINFER_CACHE/llm``)."""
    path = _cache_path(spec, cluster)
    probe = None
    if not refresh and path.exists():
        try:
            doc = json.loads(path.read_text())
            probe = OverheadProbe(
                tuple(doc["devices"]), tuple(doc["priced_s"]), tuple(doc["measured_s"]),
                float(doc["item_overhead_s"]),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError, OSError):
            probe = None
    if probe is None:
        probe = probe_overhead(spec, parts, costs, cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(probe.to_dict()))
        tmp.replace(path)
    return dataclasses.replace(costs, item_overhead_s=probe.item_overhead_s), probe
