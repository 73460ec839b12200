"""Simulate a split generation item by item: the timeline the runtime should produce.

Why a simulator beside the closed forms of :mod:`.cost`: ``prefill_makespan`` prices one group's
chunks and ``decode_tokens_per_s`` a steady decode round at one context; a real job runs every
group's prompt chunks, then decode rounds whose context grows step by step, with the groups
interleaved in one fixed order on every stage (:func:`.items.schedule`). This replays exactly
that order through the same prices — each stage computes its items in order, each link and the
token's way back carry one transfer at a time in item order, the first stage starts a decode
step when its group's previous token is back — and yields what the runtime reports (token
times, time to first token, decode rate by the same rule as :mod:`.distributed`), per-resource
busy time, the timeline as trace events for a Gantt chart, and each stage's KV-cache bytes
growing over the job. Because every stage follows a fixed item order the replay is a plain
recurrence, not an event queue; it is exact for the model (tests check it against the closed
forms where they apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.trace import TraceEvent, link_name
from .cost import LinkCost, LlmCosts, stage_item_s
from .items import schedule

TOKEN_BYTES = 8  # one int64 token id per sequence, last stage -> first


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A sequence group (micro-batch): ``batch`` sequences of a ``prompt``-token prompt cut
    into ``slices`` chunks."""

    batch: int
    prompt: int
    slices: tuple[int, ...]


@dataclass(frozen=True)
class GenerationSim:
    """The simulated job. ``token_times[g]``: when each of group ``g``'s tokens left the last
    stage (the first after its prompt); ``kv_bytes[s]``: ``(time, bytes)`` of stage ``s``'s
    caches after each of its items."""

    token_times: tuple[tuple[float, ...], ...]
    ttft_s: float
    decode_tokens_per_s: float | None
    total_s: float
    busy_s: dict[str, float]
    events: tuple[TraceEvent, ...] = field(repr=False)
    kv_bytes: tuple[tuple[tuple[float, int], ...], ...] = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "ttft_s": self.ttft_s,
            "tokens_per_s": self.decode_tokens_per_s,
            "total_s": self.total_s,
            "busy_s": dict(self.busy_s),
            "kv_bytes_end": [s[-1][1] if s else 0 for s in self.kv_bytes],
        }


def decode_rate(times: Sequence[Sequence[float]], batches: Sequence[int]) -> float | None:
    """Tokens per second after every group has its first token (all prefills done) — the
    steady decode the cost model predicts; ``None`` when nothing came after that."""
    start = max(ts[0] for ts in times)
    end = max(ts[-1] for ts in times)
    n = sum(b * sum(1 for t in ts[1:] if t > start) for ts, b in zip(times, batches, strict=True))
    return n / (end - start) if n and end > start else None


def simulate_generation(
    layer_counts: Sequence[int],
    speeds: Sequence[float],
    costs: LlmCosts,
    groups: Sequence[GroupSpec],
    new_tokens: int,
    *,
    links: Sequence[LinkCost] | None = None,
    back_link: LinkCost | None = None,
    devices: Sequence[str] | None = None,
    kv_bytes_per_token_layer: int = 0,
) -> GenerationSim:
    """Replay a job of ``groups`` generating ``new_tokens`` each on stages of ``layer_counts``
    layers at ``speeds`` (``links[s]``: stage ``s`` -> ``s + 1``; ``back_link``: last -> first,
    the tokens)."""
    n = len(layer_counts)
    if n < 1 or len(speeds) != n or (links is not None and len(links) != n - 1):
        raise ValueError("one speed per stage and one link between consecutive stages")
    if new_tokens < 1 or not groups:
        raise ValueError("a job needs at least one group and one new token")
    names = list(devices) if devices is not None else [f"s{i}" for i in range(n)]
    hops = list(links) if links is not None else [LinkCost()] * (n - 1)
    back = back_link if back_link is not None else LinkCost()
    items = schedule([{"slices": list(g.slices)} for g in groups], new_tokens)
    stage_free, link_free, back_free = [0.0] * n, [0.0] * max(n - 1, 0), 0.0
    arrive: list[dict[int, float]] = [{} for _ in range(n)]
    token_back: dict[tuple[int, int], float] = {}  # (group, step) -> at the first stage
    cached = [0] * len(groups)  # tokens each group has cached (the same on every stage)
    kv_tokens = [[0] * len(groups) for _ in range(n)]
    times: list[list[float]] = [[] for _ in groups]
    events: list[TraceEvent] = []
    busy = {name: 0.0 for name in names}
    kv: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for i, item in enumerate(items):
        grp = groups[item.group]
        b, c, p = grp.batch, item.tokens, cached[item.group]
        for s in range(n):
            if s > 0:
                ready = arrive[s].pop(i)
            elif item.prefill:
                ready = 0.0
            else:
                ready = token_back[(item.group, item.step - 1)]
            work = stage_item_s(
                costs, layer_counts[s], first=s == 0, last=s == n - 1, tokens=c, cached=p,
                batch=b, prefill=item.prefill, head=item.final,
            )  # fmt: skip
            start = max(stage_free[s], ready)
            end = start + work / speeds[s]
            stage_free[s] = end
            busy[names[s]] += end - start
            events.append(TraceEvent(names[s], "compute", item.group, start, end, s))
            kv_tokens[s][item.group] += c
            held = sum(t * groups[g].batch for g, t in enumerate(kv_tokens[s]))
            kv[s].append((end, layer_counts[s] * kv_bytes_per_token_layer * held))
            if s < n - 1:
                t0 = max(end, link_free[s])
                t1 = t0 + hops[s].time_s(b * c * costs.act_bytes_per_token)
                link_free[s] = t1
                arrive[s + 1][i] = t1
                resource = link_name(names[s], names[s + 1])
                busy[resource] = busy.get(resource, 0.0) + t1 - t0
                events.append(TraceEvent(resource, "transfer", item.group, t0, t1, s + 1))
            elif item.final:
                times[item.group].append(end)
                step = 0 if item.prefill else item.step
                if step < new_tokens - 1:
                    if n == 1:
                        token_back[(item.group, step)] = end
                    else:
                        t0 = max(end, back_free)
                        back_free = t0 + back.time_s(TOKEN_BYTES * b)
                        token_back[(item.group, step)] = back_free
                        resource = link_name(names[-1], names[0])
                        busy[resource] = busy.get(resource, 0.0) + back_free - t0
                        events.append(
                            TraceEvent(resource, "transfer", item.group, t0, back_free, 0)
                        )
        cached[item.group] += c
    batches = [g.batch for g in groups]
    return GenerationSim(
        token_times=tuple(tuple(ts) for ts in times),
        ttft_s=times[0][0],
        decode_tokens_per_s=decode_rate(times, batches),
        total_s=max(ts[-1] for ts in times),
        busy_s=busy,
        events=tuple(events),
        kv_bytes=tuple(tuple(k) for k in kv),
    )


def simulate_plan(
    plan: object, costs: LlmCosts, prompt_tokens: int, new_tokens: int, *, kv_bytes: int = 0
) -> GenerationSim:
    """:func:`simulate_generation` of a :class:`.planning.GenerationPlan`: its split, links,
    micro-batches (each a copy of the ``prompt_tokens`` prompt) and token slices, as
    :func:`.runner.generate_on` runs it (``kv_bytes``: KV bytes per token per layer)."""
    groups = [GroupSpec(b, prompt_tokens, tuple(plan.slices)) for b in plan.group_sizes]  # type: ignore[attr-defined]
    return simulate_generation(
        plan.layer_counts, plan.speeds, costs, groups, new_tokens,  # type: ignore[attr-defined]
        links=plan.links, back_link=plan.back_link, devices=plan.devices,  # type: ignore[attr-defined]
        kv_bytes_per_token_layer=kv_bytes,
    )  # fmt: skip
