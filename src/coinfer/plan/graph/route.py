"""Layered-graph routing (S11): piece placement and multi-hop data paths as one shortest path.

The layered graph has one copy of the device network per piece boundary (``P + 1`` layers).
Node ``(d, k)`` means "the tensor after piece ``k`` (``b[k]``; ``b[0]`` = input) sits on
device ``d``". Two kinds of edges:

- compute: ``(d, k) -> (d, k + 1)`` costs ``t[k + 1][d]`` (piece ``k + 1`` runs on ``d``);
- transfer: ``(u, k) -> (v, k)`` for every directed link, costing ``L + b[k] / B``.

A shortest path from ``(source, 0)`` to ``(source, P)`` therefore picks, in one Dijkstra, the
device of every piece *and* the multi-hop path of every tensor. Its cost equals the reference
latency of the resulting stages: within layer ``k`` the best ``u -> v`` route is exactly
:meth:`Instance.transfer_s` for ``b[k]`` (the same edge weights). Consecutive pieces on one
device merge into a stage; a device may come back later in the pipeline (``allow_revisit``),
which the reference model handles by summing that device's busy time and memory.

Memory is not a path property, so the plain shortest path may overfill a device. Then a
repair loop bans the overloaded device from the piece it holds that needs the most memory
and re-routes (at most ``P * D`` rounds). The result is exact (the latency optimum over all
routes) whenever memory does not bind, and a heuristic otherwise.

:func:`route_jobs` routes many jobs that share the network: each job is routed on costs
inflated by the load that earlier jobs placed (processor sharing: a resource used by ``n``
jobs runs each of them ``n`` times slower), and the shared-load latency is compared with
routing every job as if it were alone.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ...core.evaluate import latency_s, memory_bound_check
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage, check_objective
from ...errors import InfeasibleError, InputError
from .._shared import finish, infeasible_message, order_dp

# A resource is a device (compute) or a directed link (transfer).
Resource = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """Options of :func:`plan_route`.

    ``max_repairs`` caps the memory-repair rounds (None = ``P * D``, enough to ban every
    device from every piece once).
    """

    max_repairs: int | None = None
    # Up to this many devices, a memory-bound instance is also solved by the exact
    # fixed-order DP over every device order (5! = 120 orders), so route is never worse than
    # the best one-device-per-stage plan there.
    exact_fallback_devices: int = 5


@dataclass(frozen=True, slots=True)
class Route:
    """One routed request: per-piece devices, the hop path of every boundary tensor, its latency."""

    devices: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]
    latency_s: float

    def stages(self) -> tuple[Stage, ...]:
        return _merge(self.devices)


def _merge(devices: Sequence[str]) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    start = 0
    for k in range(1, len(devices) + 1):
        if k == len(devices) or devices[k] != devices[start]:
            stages.append(Stage(start, k - 1, (devices[start],)))
            start = k
    return tuple(stages)


def shortest_route(
    instance: Instance,
    *,
    banned: frozenset[tuple[int, str]] = frozenset(),
    scale: Mapping[Resource, float] | None = None,
    penalty: Mapping[str, float] | None = None,
) -> Route:
    """Dijkstra on the implicit layered graph.

    ``banned`` holds ``(piece, device)`` pairs whose compute edge is removed; ``scale``
    multiplies the cost of a resource (``("dev", d)`` or ``("link", u, v)``), used for load;
    ``penalty[d]`` adds seconds per byte of piece memory placed on ``d`` (memory repair), and
    then the returned ``latency_s`` includes those penalties.
    Ties are broken by the heap order of ``(cost, layer, device index)`` so the result is
    deterministic. Complexity ``O(P * (D + E) log(P * D))``.
    """
    P = instance.num_pieces
    names = instance.device_names
    idx = {d: i for i, d in enumerate(names)}
    sc = scale or {}
    pen = penalty or {}
    out_links = instance.out_links
    src = idx[instance.source]
    start, goal = (0, src), (P, src)
    dist: dict[tuple[int, int], float] = {start: 0.0}
    prev: dict[tuple[int, int], tuple[int, int]] = {}
    heap: list[tuple[float, int, int]] = [(0.0, 0, src)]
    done: set[tuple[int, int]] = set()
    while heap:
        dcost, k, di = heapq.heappop(heap)
        node = (k, di)
        if node in done:
            continue
        done.add(node)
        if node == goal:
            break
        d = names[di]
        nbytes = instance.cut_bytes(k)
        for lk in out_links[d]:
            w = lk.transfer_s(nbytes) * sc.get(("link", lk.src, lk.dst), 1.0)
            nxt = (k, idx[lk.dst])
            nd = dcost + w
            if nd < dist.get(nxt, math.inf):
                dist[nxt] = nd
                prev[nxt] = node
                heapq.heappush(heap, (nd, k, nxt[1]))
        if k < P and (k, d) not in banned:
            w = instance.pieces[k].time_s[d] * sc.get(("dev", d), 1.0)
            if d in pen:
                w += pen[d] * instance.pieces[k].mem_bytes
            nxt = (k + 1, di)
            nd = dcost + w
            if nd < dist.get(nxt, math.inf):
                dist[nxt] = nd
                prev[nxt] = node
                heapq.heappush(heap, (nd, k + 1, di))
    if goal not in dist:
        raise InfeasibleError(
            f"{instance.name}: no route from {instance.source!r} through all {P} pieces and back "
            f"(links or memory bans disconnect the network)"
        )
    # Walk back: collect per-piece devices and the hop path within each layer.
    seq: list[tuple[int, int]] = [goal]
    while seq[-1] != start:
        seq.append(prev[seq[-1]])
    seq.reverse()
    devices: list[str] = []
    paths: list[list[str]] = [[] for _ in range(P + 1)]
    for (k, di), (k2, dj) in itertools.pairwise(seq):
        if k2 == k + 1:
            devices.append(names[di])
        else:
            if not paths[k]:
                paths[k].append(names[di])
            paths[k].append(names[dj])
    return Route(tuple(devices), tuple(tuple(p) for p in paths), dist[goal])


def _overloaded(instance: Instance, devices: Sequence[str]) -> tuple[str, int] | None:
    """The most overloaded device and its piece needing the most memory, if any device overflows."""
    need: Counter[str] = Counter()
    for k, d in enumerate(devices):
        need[d] += instance.pieces[k].mem_bytes
    worst = None
    for d, n in need.items():
        over = n - instance.device_by_name[d].mem_bytes
        if over > 0 and (worst is None or over > worst[0]):
            worst = (over, d)
    if worst is None:
        return None
    d = worst[1]
    piece = max(
        (k for k, x in enumerate(devices) if x == d), key=lambda k: instance.pieces[k].mem_bytes
    )
    return d, piece


def _route_of(instance: Instance, stages: Sequence[Stage]) -> Route:
    """The Route of a stage tuple (per-piece devices, cheapest hop paths, reference latency)."""
    devices = [d for st in stages for _ in range(st.first, st.last + 1) for d in st.devices[:1]]
    paths: list[tuple[str, ...]] = []
    prev = instance.source
    for k in range(instance.num_pieces + 1):
        nxt = devices[k] if k < instance.num_pieces else instance.source
        hops = instance.path(prev, nxt, instance.cut_bytes(k)) if prev != nxt else ()
        paths.append((prev, *(lk.dst for lk in hops)) if hops else ())
        prev = nxt
    return Route(tuple(devices), tuple(paths), latency_s(instance, stages))


def _memory_repair(instance: Instance, cap: int, exact_devices: int) -> tuple[Route, int, str]:
    """Best memory-feasible route among three repairs (see module docstring).

    1. bans: forbid the overloaded device the piece it holds with the most memory, re-route;
    2. penalties: Lagrangian prices per byte on overloaded devices, doubled each round, so
       the path learns to keep big pieces away from full devices;
    3. exact fixed-order DP over all device orders when there are at most ``exact_devices``
       devices (no revisits; the best one-device-per-stage plan).
    """
    found: list[tuple[float, Route, str]] = []
    banned: set[tuple[int, str]] = set()
    rounds = 0
    for _ in range(cap):
        rounds += 1
        try:
            r = shortest_route(instance, banned=frozenset(banned))
        except InfeasibleError:
            break
        bad = _overloaded(instance, r.devices)
        if bad is None:
            found.append((r.latency_s, r, "bans"))
            break
        banned.add((bad[1], bad[0]))
    # Price per byte starts at the model's seconds-per-byte scale so one round already bites.
    total_t = sum(min(pc.time_s.values()) for pc in instance.pieces)
    base_price = total_t / max(1, instance.mem_bytes(0, instance.num_pieces - 1))
    price: dict[str, float] = {}
    for _ in range(30):  # 30 doublings span ~1e9 in price: far past any time scale
        r = shortest_route(instance, penalty=price)
        bad = _overloaded(instance, r.devices)
        if bad is None:
            found.append(
                (latency_s(instance, r.stages()), _route_of(instance, r.stages()), "penalties")
            )
            break
        price[bad[0]] = price.get(bad[0], base_price) * 2.0
    if len(instance.devices) <= exact_devices:
        for order in itertools.permutations(instance.device_names):
            res = order_dp(instance, order, "latency")
            if res is not None:
                found.append((res[0], _route_of(instance, res[1]), "fixed-order DP"))
    if not found:
        raise InfeasibleError(
            f"{infeasible_message(instance, 'route')} (route gave up after {cap} repairs)"
        )
    best = min(found, key=lambda x: x[0])
    return best[1], rounds, best[2]


def plan_route(
    instance: Instance, objective: Objective = "latency", options: RouteOptions | None = None
) -> Plan:
    """Layered-graph routing planner (S11). Exact for latency when memory does not bind.

    Parameters
    ----------
    instance : the planning instance.
    objective : ``"latency"`` only — a shortest path minimises a sum; the period is a maximum.
    options : :class:`RouteOptions`.

    Returns
    -------
    Plan with ``details = {"allow_revisit": True, "paths": [...], "revisits": [...],
    "memory_repairs": n}``; ``paths[k]`` is the device hop list of tensor ``b[k]``
    (empty when it stays on one device).

    Complexity ``O(R * P * (D + E) log(P * D))`` for ``R`` memory-repair rounds (1 usually).
    """
    started = time.perf_counter()
    objective = check_objective(objective)
    if objective != "latency":
        raise InputError(
            f"route minimises latency (a shortest path); objective {objective!r} is not supported"
        )
    opts = options or RouteOptions()
    memory_bound_check(instance)
    cap = (
        opts.max_repairs
        if opts.max_repairs is not None
        else instance.num_pieces * len(instance.devices)
    )
    route = shortest_route(instance)
    repairs = 0
    how = "shortest path"
    if _overloaded(instance, route.devices) is not None:
        route, repairs, how = _memory_repair(instance, cap, opts.exact_fallback_devices)
    stages = route.stages()
    stages = route.stages()
    used: Counter[str] = Counter(d for st in stages for d in st.devices)
    details: dict[str, Any] = {
        "allow_revisit": True,
        "paths": [list(p) for p in route.paths],
        "revisits": sorted(d for d, n in used.items() if n > 1),
        "memory_repairs": repairs,
        "memory_strategy": how,
        "path_latency_s": route.latency_s,
    }
    return finish(instance, "route", objective, stages, started=started, details=details)


# ----- many jobs sharing the network -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobsResult:
    """Routes of several jobs and their latencies when they share devices and links."""

    routes: tuple[Route, ...]
    latencies_s: tuple[float, ...]
    independent_routes: tuple[Route, ...]
    independent_latencies_s: tuple[float, ...]
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def total_s(self) -> float:
        return sum(self.latencies_s)

    @property
    def mean_s(self) -> float:
        return self.total_s / len(self.latencies_s)

    @property
    def independent_mean_s(self) -> float:
        return sum(self.independent_latencies_s) / len(self.independent_latencies_s)


def _resources(instance: Instance, route: Route) -> list[tuple[Resource, float]]:
    """Every (resource, base seconds) a route uses: compute per piece, each hop per tensor."""
    out: list[tuple[Resource, float]] = []
    for k, d in enumerate(route.devices):
        out.append((("dev", d), instance.pieces[k].time_s[d]))
    for k, hops in enumerate(route.paths):
        nbytes = instance.cut_bytes(k)
        for u, v in itertools.pairwise(hops):
            lk = instance.link_by_pair[(u, v)]  # a hop over a medium uses the medium: shared
            out.append((("link", lk.resource), lk.transfer_s(nbytes)))
    return out


def shared_latencies(instances: Sequence[Instance], routes: Sequence[Route]) -> tuple[float, ...]:
    """Latency of every job when all run at once: a resource used by ``n`` jobs is ``n`` times slower.

    This is processor sharing with every job present for its whole duration (a pessimistic,
    order-free queueing approximation); with a single job it reduces to the reference latency.
    """
    uses = [_resources(inst, r) for inst, r in zip(instances, routes, strict=True)]
    count: Counter[Resource] = Counter()
    for u in uses:
        for res in {res for res, _ in u}:
            count[res] += 1
    return tuple(sum(t * count[res] for res, t in u) for u in uses)


def route_jobs(instance: Instance, jobs: Sequence[Instance | str]) -> JobsResult:
    """Route jobs one after another on load-inflated costs (S11's multi-job routing).

    Parameters
    ----------
    instance : the network and model; a job given as a device name is this instance with that
        source, a job given as an :class:`Instance` must use the same device names.
    jobs : the jobs in routing order.

    Returns
    -------
    :class:`JobsResult` with the load-aware routes, their shared-load latencies, and the same
    figures for routing each job independently (as if alone) — the comparison S11 makes.
    Memory is not shared between jobs here (each job's model copy is its own concern).
    """
    if not jobs:
        raise InputError("route_jobs needs at least one job")
    insts: list[Instance] = []
    for j, job in enumerate(jobs):
        if isinstance(job, str):
            if job not in instance.device_by_name:
                raise InputError(
                    f"job {j}: source {job!r} is not a device (devices: {list(instance.device_names)})"
                )
            insts.append(replace(instance, source=job))
        else:
            if set(job.device_names) != set(instance.device_names):
                raise InputError(
                    f"job {j} ({job.name!r}) uses devices {list(job.device_names)}, not the network's"
                )
            insts.append(job)
    count: Counter[Resource] = Counter()
    routes: list[Route] = []
    for inst in insts:
        scale = {res: 1.0 + n for res, n in count.items()}
        r = shortest_route(inst, scale=scale)
        routes.append(r)
        for res in {res for res, _ in _resources(inst, r)}:
            count[res] += 1
    alone = [shortest_route(inst) for inst in insts]
    lat = shared_latencies(insts, routes)
    lat_alone = shared_latencies(insts, alone)
    busiest = max(count.items(), key=lambda kv: kv[1])
    return JobsResult(
        routes=tuple(routes),
        latencies_s=lat,
        independent_routes=tuple(alone),
        independent_latencies_s=lat_alone,
        details={"busiest_resource": list(busiest[0]), "busiest_jobs": busiest[1]},
    )
