"""The runtime's own costs, measured through real workers: per item and per device.

Why: the cost coefficients (:mod:`.measure`) are timed in one process, step after step, at full
speed. In a generation each stage is a worker that waits between items (the other stages are
computing) and, on the testbed, is throttled by its CPU quota while it computes. Two effects
were measured on GPT-2 small, both in the compute thread's CPU time:

- **per item**: every stage spent ~2–3 ms more CPU per decode step than the profile, whatever
  its size (1 layer + head, 3, 5 or 12 layers), also without quotas — a stage starts each item
  with cold caches. Additive, so priced as :attr:`LlmCosts.item_overhead_s` on every stage and
  item (at one sequence it is 15–20 % of a 4-stage pipeline's token time);
- **per device**: a long item (a 512-token prompt chunk) took as much CPU as priced on d0
  (0.6 core) but 10–20 % more on d1 (0.4) and 10–45 % more on d2 (0.3) and d3 (0.2): a low quota
  cuts the computation into short slices (3 ms of every 10 ms on d2) and each slice resumes
  with caches other threads used meanwhile. Multiplicative, so priced as a per-device factor on
  the device's speed (as ``coinfer calibrate`` does for CNN stages).

The probe separates them: an even split over the cluster's devices runs short generations; per
stage, its prefill item (one long chunk) and its decode steps (short items) give two equations
``measured = scale × priced + w`` in the stage's scale and overhead. The overhead is the median
over the stages, each device's scale its own. Measured once per model, host and cluster, cached.

The arithmetic is pure (:func:`overhead_from_stats`); :func:`probe_overhead` starts workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .cost import LlmCosts, stage_item_s

# The probe's generation: a prompt long enough that its one chunk dominates a stage's prefill
# item, then 16 decode steps; the first job warms the workers up and is not counted (the later
# ones ran 0.5–2 ms slower per step than the first); each other job is fitted on its own and
# the median taken.
PROBE_PROMPT, PROBE_NEW, PROBE_JOBS = 128, 16, 5
# A device's fitted scale is kept within these (a noisy probe must not wreck a plan).
SCALE_RANGE = (0.5, 3.0)
# Bumped when the probe's method changes, so an older cached figure is not used.
PROBE_VERSION = 4


@dataclass(frozen=True, slots=True)
class OverheadProbe:
    """Per stage of the probe: its device, the priced and measured CPU seconds of its prefill
    item and of a decode step, and the fitted ``scale`` (measured = scale × priced + overhead);
    ``item_overhead_s`` is the median of the stages' overheads (never below 0)."""

    devices: tuple[str, ...]
    prefill_priced_s: tuple[float, ...]
    prefill_measured_s: tuple[float, ...]
    decode_priced_s: tuple[float, ...]
    decode_measured_s: tuple[float, ...]
    scales: tuple[float, ...]
    item_overhead_s: float

    @property
    def speed_scales(self) -> dict[str, float]:
        """Device -> factor its time is multiplied by (its speed divided by)."""
        return dict(zip(self.devices, self.scales, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> OverheadProbe:
        def value(x: Any) -> Any:
            return tuple(x) if isinstance(x, list) else x

        return cls(**{f.name: value(doc[f.name]) for f in dataclasses.fields(cls)})


def priced_prefill_s(
    costs: LlmCosts, layers: int, first: bool, last: bool, prompt: int, batch: int = 1
) -> float:
    """Reference seconds of one stage's prefill item: the whole prompt as one chunk (the head
    on its last token on the last stage), without the per-item overhead."""
    item = stage_item_s(costs, layers, first=first, last=last, tokens=prompt, cached=0, batch=batch)
    return item - costs.item_overhead_s


def priced_decode_step_s(
    costs: LlmCosts, layers: int, first: bool, last: bool, prompt: int, new: int, batch: int = 1
) -> float:
    """Reference seconds of one stage's mean decode step over a generation of ``new`` tokens
    after a ``prompt``-token prompt (step ``r`` attends over ``prompt + r - 1`` cached tokens),
    without the per-item overhead."""
    steps = range(1, new)
    if not steps:
        raise ValueError("a generation of one token has no decode step")
    kw = {"first": first, "last": last, "tokens": 1, "batch": batch, "prefill": False}
    total = sum(stage_item_s(costs, layers, cached=prompt + r - 1, **kw) for r in steps)
    return total / len(steps) - costs.item_overhead_s


def overhead_from_stats(
    costs: LlmCosts,
    devices: list[str],
    layer_counts: list[int],
    stats: list[dict[str, Any]],
    prompt: int,
    new: int,
) -> OverheadProbe:
    """Fit each stage's ``scale`` and overhead ``w`` from its compute-thread CPU (the workers'
    statistics, one prompt chunk per job): the prefill item and the mean decode step each give
    ``measured = scale × priced + w``. The overhead is the median ``w`` over the stages; a stage
    whose two items price alike (no leverage) keeps scale 1."""
    base = dataclasses.replace(costs, item_overhead_s=0.0)
    n = len(devices)
    pp, pm, dp, dm, scales, ws = [], [], [], [], [], []
    for s, (layers, st) in enumerate(zip(layer_counts, stats, strict=True)):
        decode_items = int(st.get("decode_items", 0))
        prefill_items = int(st.get("items", 0)) - decode_items
        if decode_items < 1 or prefill_items < 1:
            raise InputError(f"the overhead probe's stage on {devices[s]} ran no decode step")
        first, last = s == 0, s == n - 1
        p_priced = priced_prefill_s(base, layers, first, last, prompt)
        d_priced = priced_decode_step_s(base, layers, first, last, prompt, new)
        p_meas = (float(st["cpu_s"]) - float(st["decode_cpu_s"])) / prefill_items
        d_meas = float(st["decode_cpu_s"]) / decode_items
        scale = 1.0
        if p_priced > 2 * d_priced:
            scale = (p_meas - d_meas) / (p_priced - d_priced)
            scale = min(max(scale, SCALE_RANGE[0]), SCALE_RANGE[1])
        pp.append(p_priced)
        pm.append(p_meas)
        dp.append(d_priced)
        dm.append(d_meas)
        scales.append(scale)
        ws.append(d_meas - scale * d_priced)
    return OverheadProbe(
        tuple(devices), tuple(pp), tuple(pm), tuple(dp), tuple(dm), tuple(scales),
        max(0.0, statistics.median(ws)),
    )  # fmt: skip


def probe_overhead(spec: str, parts: Any, costs: LlmCosts, cluster: Any) -> OverheadProbe:
    """Run the probe: an even split over the cluster's devices, :data:`PROBE_JOBS` short
    generations on the same workers (the first warms them up; the others are fitted one by one
    and combined by :func:`combine`)."""
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
    fits = []
    with start_workers(spec, plan, cluster) as workers:
        for job in range(PROBE_JOBS):
            result = generate_on(workers, ids, plan, PROBE_NEW)
            if job > 0 or PROBE_JOBS == 1:
                layers = list(plan.layer_counts)
                fit = overhead_from_stats(
                    base, list(plan.devices), layers, result.stats, prompt, PROBE_NEW
                )
                fits.append(fit)
    return combine(fits)


def combine(fits: Sequence[OverheadProbe]) -> OverheadProbe:
    """Several jobs' fits of the same plan as one: the median of every figure (a job disturbed
    by the shared host — one measured a fast device 18 % slow — does not set the scale)."""
    if not fits:
        raise ValueError("no probe job to combine")

    def med(name: str) -> tuple[float, ...]:
        return tuple(
            statistics.median(col) for col in zip(*(getattr(f, name) for f in fits), strict=True)
        )

    return OverheadProbe(
        fits[0].devices, med("prefill_priced_s"), med("prefill_measured_s"),
        med("decode_priced_s"), med("decode_measured_s"), med("scales"),
        statistics.median(f.item_overhead_s for f in fits),
    )  # fmt: skip


def _cache_path(spec: str, cluster: Any) -> Path:
    from .planning import cache_path, llm_devices

    devices = [(d.name, d.speed, d.mem_bytes) for d in llm_devices(cluster)]
    return cache_path(spec, "overhead", probe=PROBE_VERSION, devices=devices)


def with_measured_overhead(
    spec: str, parts: Any, costs: LlmCosts, cluster: Any, *, refresh: bool = False
) -> tuple[LlmCosts, OverheadProbe]:
    """``costs`` with the per-item overhead measured on ``cluster``, and the probe (its
    ``speed_scales`` go to :func:`.planning.plan_generation`); cached per model spec, host,
    torch and profile version and the cluster's devices, in ``$COINFER_CACHE/llm``."""
    path = _cache_path(spec, cluster)
    probe = None
    if not refresh and path.exists():
        try:
            probe = OverheadProbe.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError, OSError):
            probe = None
    if probe is None:
        probe = probe_overhead(spec, parts, costs, cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(probe.to_dict()))
        tmp.replace(path)
    return dataclasses.replace(costs, item_overhead_s=probe.item_overhead_s), probe
