"""Plan -> Schedule: AP²'s third module, the directly executable per-device order of work.

[Note: schedule semantics] — shared by the simulator and the runtime.

- Every request ``r`` visits every stage ``k`` on one device, ``assignment[r][k]``. Replicated
  stages take requests by *smooth weighted round-robin* over :func:`replica_weights`, so each
  replica's share of requests matches its speed share exactly over every full cycle.
- A device executes its action list in order. ``recv r.k<u`` blocks until the input of request
  ``r`` for stage ``k`` has fully arrived from ``u``; ``compute r.k[first-last]`` occupies the
  device; ``send r.k>v`` *posts* the result of stage ``k`` to ``v`` and returns at once — the
  transfer occupies links, not the device (compute and communication overlap, as in the reference
  cost model). A send and its recv match on ``(request, stage + 1, sender, receiver)``.
- The source runs a *client* beside whatever stage it may serve: its actions with stage ``-1``
  (send a request's input) and stage ``K`` = number of stages (receive its output) form an
  independent sequence (see :func:`client_actions` / :func:`worker_actions`). The client order is a
  closed loop with ``window`` requests in flight: ``S0 .. S(W-1), R0, SW, R1, ...``.
- Every hop of a request is an explicit send/recv pair, even when both ends are one device (it
  then costs nothing and uses no link), so the runtime's coordinator and a worker on the source
  device exchange data through the same code path. A transfer between devices without a direct
  link is still ONE send/recv pair; the simulator routes it over the instance's cheapest path.
- ``microbatch`` samples per request: bytes and compute scale linearly with it (an assumption:
  real batching is sub-linear on compute; it keeps the reference model's shape).

Worker lists are request-major (all of request ``r``'s actions before ``r + 1``'s, stages in
pipeline order). Every recv waits only on a send of an earlier (request, stage) pair, so the
order is deadlock-free by induction; :func:`validate_schedule` re-checks it by a dry run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from ..core.evaluate import evaluate, replica_weights, validate_stages
from ..core.instance import Instance
from ..core.plans import Plan, Stage
from ..core.schedules import Action, Schedule
from ..errors import InputError


def smooth_weighted_round_robin(weights: Sequence[float], n: int) -> tuple[int, ...]:
    """Pick ``n`` replica indices so each index's share tracks ``weights`` as smoothly as possible.

    The nginx-style algorithm: every step each replica's credit grows by its weight, the replica
    with the most credit (lowest index on ties) is picked and pays the total weight. Picks are
    spread out (no long bursts on one replica) and after ``m`` picks each replica has been chosen
    within one of ``m * w_i / sum(w)`` times. Deterministic.
    """
    if not weights or any(not (w >= 0 and math.isfinite(w)) for w in weights):
        raise InputError(f"replica weights must be finite and >= 0, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise InputError(f"replica weights sum to 0: {list(weights)}")
    credit = [0.0] * len(weights)
    picks: list[int] = []
    for _ in range(n):
        for i, w in enumerate(weights):
            credit[i] += w
        best = max(range(len(weights)), key=lambda i: (credit[i], -i))
        credit[best] -= total
        picks.append(best)
    return tuple(picks)


def assign_requests(
    instance: Instance, stages: Sequence[Stage], requests: int
) -> tuple[tuple[str, ...], ...]:
    """``assignment[r][k]``: the device serving stage ``k`` of request ``r`` (weighted round-robin)."""
    per_stage = []
    for st in stages:
        if len(st.devices) == 1:
            per_stage.append((st.devices[0],) * requests)
        else:
            picks = smooth_weighted_round_robin(replica_weights(instance, st), requests)
            per_stage.append(tuple(st.devices[i] for i in picks))
    return tuple(tuple(per_stage[k][r] for k in range(len(stages))) for r in range(requests))


def slowest_route_s(instance: Instance, stages: Sequence[Stage]) -> float:
    """One request's latency through an idle system along its SLOWEST route through the replicas."""
    worst: dict[str, float] = {instance.source: 0.0}
    for st in stages:
        nbytes = instance.cut_bytes(st.first)
        nxt: dict[str, float] = {}
        for i, d in enumerate(st.devices):
            arrive = max(t + instance.transfer_s(u, d, nbytes) for u, t in worst.items())
            nxt[d] = arrive + instance.compute_s(st.first, st.last, d, st.freq_of(i))
        worst = nxt
    return max(
        t + instance.transfer_s(u, instance.source, instance.output_bytes) for u, t in worst.items()
    )


def default_window(instance: Instance, stages: Sequence[Stage], requests: int) -> int:
    """In-flight requests that saturate the pipeline without needless queueing.

    Little's law: ``throughput x latency`` requests are in flight when every resource on the
    route is busy, so ``ceil(route latency / period) + 1`` keeps the bottleneck fed (the +1 covers
    the phase offset between a completion and the next issue). The route is the slowest one
    through the replicas, as a request routed to a slow replica stays in flight longer. More only
    adds queueing latency, never throughput. Capped at ``requests``.
    """
    period = evaluate(instance, stages).period_s
    route = slowest_route_s(instance, stages)
    if period <= 0 or not math.isfinite(period) or not math.isfinite(route):
        return max(1, requests)
    return max(1, min(requests, math.ceil(route / period) + 1))


def schedule(
    plan: Plan,
    instance: Instance,
    requests: int,
    microbatch: int = 1,
    *,
    window: int | None = None,
) -> Schedule:
    """Turn ``plan`` into per-device ordered actions for a stream of ``requests`` requests.

    Parameters
    ----------
    plan, instance
        The plan to execute and the instance it was made for (validated here: a schedule of an
        invalid plan would fail later with a less clear message).
    requests
        Number of requests (each a micro-batch of ``microbatch`` samples).
    microbatch
        Samples per request; transfer bytes and compute scale linearly (module docstring).
    window
        Closed-loop requests in flight for the client order; default :func:`default_window`.

    Returns
    -------
    Schedule
        Deterministic: the same inputs give the same schedule, text and JSON.

    Raises
    ------
    InputError
        Non-positive ``requests`` / ``microbatch`` / ``window``, or a malformed plan.
    InfeasibleError
        A stage does not fit in its device's memory.
    """
    if requests < 1:
        raise InputError(f"requests must be >= 1, got {requests}")
    if microbatch < 1:
        raise InputError(f"microbatch must be >= 1, got {microbatch}")
    if window is not None and window < 1:
        raise InputError(f"window must be >= 1, got {window}")
    stages = plan.stages
    validate_stages(instance, stages, allow_revisit=bool(plan.details.get("allow_revisit", False)))
    win = default_window(instance, stages, requests) if window is None else min(window, requests)
    assignment = assign_requests(instance, stages, requests)
    num_stages = len(stages)
    src = instance.source
    # bytes entering stage k (k = num_stages: the output returned to the source)
    in_bytes = [instance.cut_bytes(st.first) * microbatch for st in stages] + [
        instance.output_bytes * microbatch
    ]

    worker: dict[str, list[Action]] = defaultdict(list)
    for r in range(requests):
        route = (src, *assignment[r], src)  # route[k + 1] serves stage k
        for k, st in enumerate(stages):
            dev, prev, nxt = route[k + 1], route[k], route[k + 2]
            worker[dev].append(Action("recv", r, k, prev, nbytes=in_bytes[k]))
            worker[dev].append(Action("compute", r, k, None, st.first, st.last))
            worker[dev].append(Action("send", r, k, nxt, nbytes=in_bytes[k + 1]))

    client: list[Action] = []
    sends = [Action("send", r, -1, assignment[r][0], nbytes=in_bytes[0]) for r in range(requests)]
    recvs = [
        Action("recv", r, num_stages, assignment[r][-1], nbytes=in_bytes[-1])
        for r in range(requests)
    ]
    client.extend(sends[:win])
    for r in range(requests):
        client.append(recvs[r])
        if r + win < requests:
            client.append(sends[r + win])

    # Device order: the source first (client, then its own stage work), then plan order.
    order = [src] + [d for st in stages for d in st.devices if d != src]
    actions: dict[str, tuple[Action, ...]] = {}
    for d in dict.fromkeys(order):
        acts = (client if d == src else []) + worker.get(d, [])
        actions[d] = tuple(acts)
    return Schedule(
        actions=actions,
        requests=requests,
        microbatch=microbatch,
        source=src,
        assignment=assignment,
        plan=plan.to_dict(),
        window=win,
    )


def num_stages(sched: Schedule) -> int:
    """Number of pipeline stages of ``sched`` (from its assignment)."""
    return len(sched.assignment[0]) if sched.assignment else 0


def is_client_action(sched: Schedule, device: str, action: Action) -> bool:
    """True for the source client's actions: input sends (stage -1) and output recvs (stage K)."""
    if device != sched.source:
        return False
    k = num_stages(sched)
    return (action.kind == "send" and action.stage == -1) or (
        action.kind == "recv" and action.stage == k
    )


def client_actions(sched: Schedule) -> tuple[Action, ...]:
    """The source client's sequence (runs independently of the source's stage work)."""
    return tuple(
        a for a in sched.actions.get(sched.source, ()) if is_client_action(sched, sched.source, a)
    )


def worker_actions(sched: Schedule, device: str) -> tuple[Action, ...]:
    """``device``'s stage work: its actions minus the client's (all of them off the source)."""
    return tuple(a for a in sched.actions.get(device, ()) if not is_client_action(sched, device, a))


def stage_freqs(sched: Schedule) -> dict[tuple[int, str], float]:
    """DVFS level of each (stage, device) recorded in the schedule's plan (1.0 when absent)."""
    out: dict[tuple[int, str], float] = {}
    for k, st in enumerate(sched.plan.get("stages", [])):
        freqs = st.get("freqs") or [1.0] * len(st["devices"])
        for d, f in zip(st["devices"], freqs, strict=True):
            out[(k, d)] = float(f)
    return out


def _sequences(sched: Schedule) -> dict[str, tuple[Action, ...]]:
    """Independent sequences: ``<source>#client`` plus one per device's stage work."""
    seqs = {f"{sched.source}#client": client_actions(sched)}
    for d in sched.actions:
        seqs[d] = worker_actions(sched, d)
    return seqs


def validate_schedule(sched: Schedule) -> None:
    """Check ``sched`` is well formed and deadlock-free; raise :class:`InputError` naming the fault.

    Checked: every send has exactly one matching recv (same request, next stage, swapped ends,
    same bytes) and vice versa; every request is sent in and received back once; and a dry run of
    all sequences (sends complete at once, a recv waits for its send) finishes.
    """
    k_last = num_stages(sched)
    sends: dict[tuple[int, int, str, str], int] = {}
    recvs: dict[tuple[int, int, str, str], int] = {}
    for name, seq in _sequences(sched).items():
        dev = name.split("#", 1)[0]
        for a in seq:
            if a.kind == "compute":
                continue
            if a.peer is None:
                raise InputError(f"schedule: device {dev!r} action {a} has no peer")
            # key: (request, stage of the receiver, sender, receiver)
            key = (
                (a.request, a.stage + 1, dev, a.peer)
                if a.kind == "send"
                else (a.request, a.stage, a.peer, dev)
            )
            table = sends if a.kind == "send" else recvs
            if key in table:
                raise InputError(f"schedule: device {dev!r} repeats {a}")
            table[key] = a.nbytes
    for key, nb in sends.items():
        if key not in recvs:
            r, k, u, v = key
            raise InputError(
                f"schedule: send of request {r} stage {k - 1} from {u!r} to {v!r} has no matching recv"
            )
        if recvs[key] != nb:
            raise InputError(
                f"schedule: request {key[0]} {key[2]!r}->{key[3]!r} sends {nb} bytes, recv expects {recvs[key]}"
            )
    for key in recvs:
        if key not in sends:
            r, k, u, v = key
            raise InputError(
                f"schedule: recv of request {r} stage {k} on {v!r} from {u!r} has no matching send"
            )
    for r in range(sched.requests):
        if not any(key[0] == r and key[1] == 0 for key in sends):
            raise InputError(f"schedule: request {r} is never sent in by the source")
        if not any(key[0] == r and key[1] == k_last for key in recvs):
            raise InputError(f"schedule: request {r} never returns to the source")
    _dry_run(sched)


def _dry_run(sched: Schedule) -> None:
    """Advance every sequence as far as it can; a leftover recv means a deadlock."""
    seqs = _sequences(sched)
    pos = dict.fromkeys(seqs, 0)
    posted: set[tuple[int, int, str, str]] = set()
    progress = True
    while progress:
        progress = False
        for name, seq in seqs.items():
            dev = name.split("#", 1)[0]
            i = pos[name]
            while i < len(seq):
                a = seq[i]
                if a.kind == "recv":
                    if (a.request, a.stage, a.peer, dev) not in posted:
                        break
                elif a.kind == "send":
                    posted.add((a.request, a.stage + 1, dev, a.peer))  # type: ignore[arg-type]
                i += 1
            if i != pos[name]:
                pos[name] = i
                progress = True
    stuck = [(name, seqs[name][i]) for name, i in pos.items() if i < len(seqs[name])]
    if stuck:
        desc = "; ".join(f"{n} waits at {a}" for n, a in stuck[:4])
        raise InputError(f"schedule deadlocks: {desc}")
