"""Device/server partitioning of a full model DAG as one s-t minimum cut (DADS; S5's formulation).

Every node of the DAG runs either on the *device* (the instance's source, where the request
arrives) or on one *server*. A request's latency, with one location computing at a time
(DADS's light-load case), is

    sum of device compute + sum of server compute
    + for every tensor produced on the device and consumed on the server: L + bytes / B (up)
    + for every model output produced on the server: L + bytes / B (down, result returns)

The s-t graph that makes this a minimum cut (s = device side, t = server side):

- ``s -> v`` with capacity ``t_server[v]`` (cut when ``v`` runs on the server) and
  ``v -> t`` with capacity ``t_device[v]`` (cut when ``v`` runs on the device);
- a tensor consumed once: ``u -> v`` with the upload time of ``u``'s output; a tensor
  consumed several times goes through an auxiliary node (``u -> a`` = upload time,
  ``a -> v`` infinite for each consumer), so it is paid *once* however many server nodes
  read it — DADS's fix for multi-consumer tensors;
- ``v -> u`` infinite for every DAG edge ``u -> v``: data never flows back from the server to
  the device in the middle of the model (the device part is closed under predecessors);
- a virtual input node pinned to the device feeds the DAG's entry nodes (the input upload),
  and a virtual output node pinned to the device reads every sink (the result download).

Without a DAG in the options the instance's chain *is* the DAG (one node per piece), and the
cut maps to a plan of at most two stages: a prefix of pieces on the source, the rest on the
server. With a DAG whose cut is a prefix of pieces (each node says which piece it belongs to)
the plan is the same; otherwise the plan's stages are the best prefix cut under the chain
model and the DAG cut (node sets, its DAG latency) is reported in ``details["dag_cut"]``.

The minimum cut is exact for the latency of this two-location model. For ``throughput`` or
``energy`` objectives it still computes the latency-optimal cut for each candidate server and
returns the server whose plan is best for the requested objective (documented in
docs/planners_advanced.md). Memory is not part of a cut: an overfull cut falls back to the
best memory-feasible prefix cut.

Why one module: the DAG construction, the DADS-style cut and its latency/throughput scoring are one
algorithm whose graph weights and cut-cost reading must match term by term; CIC (:mod:`.cic`)
reuses them from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from networkx.algorithms.flow import preflow_push

from ...core.evaluate import objective_value
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Stage, check_objective
from ...errors import InfeasibleError, InputError
from .._shared import finish, infeasible_message

IN, OUT, SRC, SINK = "__in__", "__out__", "__device__", "__server__"
TransferFn = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class MincutOptions:
    """Options of :func:`plan_mincut`.

    ``dag`` nodes carry ``time_s: {device: seconds}`` and ``out_bytes`` and optionally
    ``piece`` (0-based piece index; otherwise node names must be piece names); ``server``
    fixes the server (default: try every non-source device).
    """

    dag: nx.DiGraph | None = None
    server: str | None = None


@dataclass(frozen=True, slots=True)
class CutResult:
    """A device/server split of a DAG and its cost under the DADS latency model."""

    value_s: float
    device_nodes: frozenset[Hashable]
    server_nodes: frozenset[Hashable]
    compute_s: float
    transfers: int
    bytes_moved: float

    def __str__(self) -> str:
        return (
            f"CutResult({self.value_s * 1e3:.3f} ms: {len(self.device_nodes)} nodes on device, "
            f"{len(self.server_nodes)} on server, {self.transfers} transfers, {self.bytes_moved:.0f} B)"
        )


# ----- DAG adapters -------------------------------------------------------------------------


def chain_dag(instance: Instance) -> nx.DiGraph:
    """The instance's chain as a DAG: node ``i`` = piece ``i`` (``piece`` attribute set)."""
    g = nx.DiGraph()
    for i, pc in enumerate(instance.pieces):
        g.add_node(i, time_s=dict(pc.time_s), out_bytes=pc.out_bytes, piece=i)
        if i:
            g.add_edge(i - 1, i, bytes=instance.pieces[i - 1].out_bytes)
    g.graph["input_bytes"] = instance.input_bytes
    return g


def dag_from_graph(
    graph: nx.DiGraph,
    node_times: Mapping[Hashable, Mapping[str, float]],
    *,
    piece_of: Mapping[Hashable, int] | None = None,
    input_bytes: int | None = None,
) -> nx.DiGraph:
    """Adapt a model graph (e.g. ``ModelGraph.to_networkx()``) to the DAG :func:`dads_cut` reads.

    ``graph`` nodes need ``out_bytes`` (or every out-edge a ``bytes``); ``node_times`` gives
    each node's seconds per device (from the cost model); ``piece_of`` maps nodes to pieces
    so cuts can become plans (default: the graph's own ``piece`` attributes). Model inputs
    (``op == "input"``, as ``ModelGraph.to_networkx()`` marks them) are pinned to the device —
    the request arrives there — and cost nothing to "compute"; their upload is then counted
    like any other tensor's. Raises :class:`InputError` naming the first node missing a time.
    """
    g = nx.DiGraph()
    for v, attrs in graph.nodes(data=True):
        if attrs.get("op") == "input":
            # the request's input arrives with the first piece, on the device
            nbytes = int(attrs.get("out_bytes", 0))
            g.add_node(v, time_s=_ZeroTimes(), out_bytes=nbytes, pin="device", piece=0)
            continue
        if v not in node_times:
            raise InputError(f"dag node {v!r} has no entry in node_times")
        nbytes = attrs.get("out_bytes")
        if nbytes is None:
            nbytes = max(
                (graph.edges[v, w].get("bytes", 0) for w in graph.successors(v)), default=0
            )
        g.add_node(v, time_s=dict(node_times[v]), out_bytes=int(nbytes))
        if piece_of is not None:
            if v not in piece_of:
                raise InputError(f"dag node {v!r} has no entry in piece_of")
            g.nodes[v]["piece"] = int(piece_of[v])
        elif "piece" in attrs:
            g.nodes[v]["piece"] = int(attrs["piece"])
    g.add_edges_from(graph.edges(data=True))
    if input_bytes is not None:
        g.graph["input_bytes"] = int(input_bytes)
    return g


class _ZeroTimes(dict):
    """``time_s`` of a model-input node: zero seconds on any device."""

    def __missing__(self, key: str) -> float:
        return 0.0

    def __contains__(self, key: object) -> bool:
        return True


def node_times_from_pieces(
    graph: nx.DiGraph, instance: Instance
) -> dict[Hashable, dict[str, float]]:
    """Per-node seconds for :func:`dag_from_graph`, splitting each piece's time over its nodes.

    ``graph`` is a captured model graph (``ModelGraph.to_networkx()``: node ``piece`` and
    ``flops``) whose pieces are the instance's pieces. Modelling assumption: within a piece, time
    is proportional to FLOPs (equal shares when the piece has none) — the cost model only knows
    piece times, and FLOPs is what the graph helper counts. Node times of a piece sum to its time.
    """
    members: dict[int, list[Hashable]] = {}
    for v, a in graph.nodes(data=True):
        if a.get("op") == "input":
            continue
        p = int(a.get("piece", -1))
        if not 0 <= p < instance.num_pieces:
            raise InputError(
                f"graph node {v!r} has piece {p}; the instance has {instance.num_pieces} pieces"
            )
        members.setdefault(p, []).append(v)
    missing = [p for p in range(instance.num_pieces) if p not in members]
    if missing:
        raise InputError(f"pieces {missing[:5]} of {instance.name!r} have no node in the graph")
    out: dict[Hashable, dict[str, float]] = {}
    for p, nodes in members.items():
        flops = [float(graph.nodes[v].get("flops", 0) or 0) for v in nodes]
        total = sum(flops)
        shares = [f / total for f in flops] if total > 0 else [1.0 / len(nodes)] * len(nodes)
        for v, w in zip(nodes, shares, strict=True):
            out[v] = {d: t * w for d, t in instance.pieces[p].time_s.items()}
    return out


def _has_input_nodes(dag: nx.DiGraph) -> bool:
    """Whether the model inputs are explicit (pinned) nodes, as in captured graphs."""
    return any(a.get("pin") == "device" for _, a in dag.nodes(data=True))


def _check_dag(dag: nx.DiGraph, devices: tuple[str, ...]) -> None:
    if dag.number_of_nodes() == 0:
        raise InputError("mincut: the dag has no nodes")
    if not nx.is_directed_acyclic_graph(dag):
        raise InputError("mincut: the dag has a cycle")
    for v, attrs in dag.nodes(data=True):
        ts = attrs.get("time_s")
        if not isinstance(ts, Mapping):
            raise InputError(f"mincut: dag node {v!r} needs a 'time_s' mapping device -> seconds")
        for d in devices:
            if d not in ts:
                raise InputError(f"mincut: dag node {v!r} has no time for device {d!r}")
        if "out_bytes" not in attrs:
            raise InputError(f"mincut: dag node {v!r} needs 'out_bytes'")


# ----- the cut --------------------------------------------------------------------------------


def cut_cost(
    dag: nx.DiGraph,
    device_nodes: frozenset[Hashable] | set[Hashable],
    device: str,
    server: str,
    up: TransferFn,
    down: TransferFn,
    input_bytes: float,
) -> CutResult:
    """Cost of a given split under the DADS latency model (also the min-cut's checker).

    Raises :class:`InputError` if a server node feeds a device node (data would flow back).
    """
    on_dev = set(device_nodes)
    pinned = [v for v, a in dag.nodes(data=True) if a.get("pin") == "device" and v not in on_dev]
    if pinned:
        raise InputError(
            f"mincut: node {pinned[0]!r} is pinned to the device but placed on the server"
        )
    comp = 0.0
    n, nbytes, transfer = 0, 0.0, 0.0
    for v, attrs in dag.nodes(data=True):
        comp += attrs["time_s"][device if v in on_dev else server]
        succ = list(dag.successors(v))
        if v in on_dev:
            if any(w not in on_dev for w in succ):
                n, nbytes, transfer = (
                    n + 1,
                    nbytes + attrs["out_bytes"],
                    transfer + up(attrs["out_bytes"]),
                )
        else:
            if any(w in on_dev for w in succ):
                raise InputError(
                    f"mincut: server node {v!r} feeds a device node; the device part must be closed"
                )
            if not succ and attrs["out_bytes"] > 0:  # a 0-byte sink is no model output
                n, nbytes, transfer = (
                    n + 1,
                    nbytes + attrs["out_bytes"],
                    transfer + down(attrs["out_bytes"]),
                )
    entries = [v for v in dag.nodes if dag.in_degree(v) == 0]
    if not _has_input_nodes(dag) and any(v not in on_dev for v in entries):
        n, nbytes, transfer = n + 1, nbytes + input_bytes, transfer + up(input_bytes)
    server_nodes = frozenset(v for v in dag.nodes if v not in on_dev)
    return CutResult(comp + transfer, frozenset(on_dev), server_nodes, comp, n, nbytes)


def build_cut_graph(
    dag: nx.DiGraph, device: str, server: str, up: TransferFn, down: TransferFn, input_bytes: float
) -> nx.DiGraph:
    """The s-t graph of the module docstring (edges without ``capacity`` are infinite)."""
    g = nx.DiGraph()
    g.add_edge(SRC, IN)
    g.add_edge(SRC, OUT)
    for v, attrs in dag.nodes(data=True):
        if attrs.get("pin") == "device":
            g.add_edge(SRC, ("n", v))  # infinite: never on the server
        else:
            g.add_edge(SRC, ("n", v), capacity=attrs["time_s"][server])
        g.add_edge(("n", v), SINK, capacity=attrs["time_s"][device])
    producers: list[tuple[Any, float, list[Any]]] = []
    if not _has_input_nodes(dag):  # else the pinned input nodes carry the input themselves
        entries = [("n", v) for v in dag.nodes if dag.in_degree(v) == 0]
        producers.append((IN, float(input_bytes), entries))
    for v, attrs in dag.nodes(data=True):
        succ = [("n", w) for w in dag.successors(v)]
        if succ:
            producers.append((("n", v), float(attrs["out_bytes"]), succ))
        elif attrs["out_bytes"] > 0:
            g.add_edge(OUT, ("n", v), capacity=down(attrs["out_bytes"]))
    for u, nbytes, succ in producers:
        if len(succ) == 1:
            g.add_edge(u, succ[0], capacity=up(nbytes))
        else:
            aux = ("aux", u)
            g.add_edge(u, aux, capacity=up(nbytes))
            for w in succ:
                g.add_edge(aux, w)
    for u, w in dag.edges:
        g.add_edge(("n", w), ("n", u))  # closure: device part closed under predecessors
    return g


# Capacities are scaled so their sum is about 2**52 and rounded to integers before the max-flow:
# networkx finds the cut's node sets by testing ``flow == capacity`` exactly, which float
# round-off breaks (it returned wrong sides in testing); integers are exact, and the rounding
# moves any cut's value by at most (edges x 0.5) / 2**52 of the total, ~1e-13 relative.
CAPACITY_SCALE_BITS = 52


def _to_integer_capacities(g: nx.DiGraph) -> None:
    """Scale finite capacities to integers; an infinite one (no route between the two
    locations) becomes an edge without capacity, which networkx treats as infinite."""
    finite = [c for _, _, c in g.edges(data="capacity") if c is not None and math.isfinite(c)]
    total = sum(finite)
    scale = (2.0**CAPACITY_SCALE_BITS) / total if total > 0 else 1.0
    for _, _, d in g.edges(data=True):
        if "capacity" in d:
            if math.isfinite(d["capacity"]):
                d["capacity"] = round(d["capacity"] * scale)
            else:
                del d["capacity"]


def dads_cut(
    dag: nx.DiGraph,
    device: str,
    server: str,
    up: TransferFn,
    down: TransferFn | None = None,
    input_bytes: float | None = None,
) -> CutResult:
    """Minimum-latency device/server split of ``dag`` (exact for the DADS model).

    Parameters
    ----------
    dag : nodes with ``time_s`` and ``out_bytes`` (see :func:`dag_from_graph`).
    device, server : the two locations (keys of each node's ``time_s``).
    up, down : seconds to move ``x`` bytes device -> server and back (``down`` defaults to ``up``).
    input_bytes : bytes of the model input (default ``dag.graph["input_bytes"]`` or 0).

    Complexity: one preflow-push max-flow, ``O(V^2 sqrt(E))`` on ``V ~ 2 N`` nodes.
    """
    down = down or up
    ib = float(dag.graph.get("input_bytes", 0) if input_bytes is None else input_bytes)
    g = build_cut_graph(dag, device, server, up, down, ib)
    _to_integer_capacities(g)
    _, (s_side, _) = nx.minimum_cut(g, SRC, SINK, flow_func=preflow_push)
    on_dev = frozenset(x[1] for x in s_side if isinstance(x, tuple) and x[0] == "n")
    return cut_cost(dag, on_dev, device, server, up, down, ib)


# ----- mapping cuts to plans ------------------------------------------------------------------


def _piece_map(dag: nx.DiGraph, instance: Instance) -> dict[Hashable, int]:
    names = {pc.name: i for i, pc in enumerate(instance.pieces)}
    out: dict[Hashable, int] = {}
    for v, attrs in dag.nodes(data=True):
        if "piece" in attrs:
            p = int(attrs["piece"])
        elif v in names:
            p = names[v]
        else:
            raise InputError(
                f"mincut: dag node {v!r} has no 'piece' attribute and is not a piece name; "
                "cuts cannot be mapped to the instance's pieces"
            )
        if not 0 <= p < instance.num_pieces:
            raise InputError(
                f"mincut: dag node {v!r} has piece {p}, outside 0..{instance.num_pieces - 1}"
            )
        out[v] = p
    return out


def _two_stages(instance: Instance, k: int, server: str) -> tuple[Stage, ...]:
    """Pieces ``0..k-1`` on the source, ``k..P-1`` on ``server`` (empty parts dropped)."""
    P = instance.num_pieces
    stages = []
    if k > 0:
        stages.append(Stage(0, k - 1, (instance.source,)))
    if k < P:
        stages.append(Stage(k, P - 1, (server,)))
    return tuple(stages)


def _fits(instance: Instance, stages: tuple[Stage, ...]) -> bool:
    return all(
        instance.mem_bytes(s.first, s.last) <= instance.device_by_name[s.devices[0]].mem_bytes
        for s in stages
    )


def best_prefix_cut(
    instance: Instance, server: str, objective: Objective
) -> tuple[Stage, ...] | None:
    """Best memory-feasible two-stage prefix split by enumeration (``O(P)`` evaluations)."""
    best, best_v = None, math.inf
    for k in range(instance.num_pieces + 1):
        st = _two_stages(instance, k, server)
        if _fits(instance, st):
            v = objective_value(instance, st, objective)
            if v < best_v:
                best, best_v = st, v
    return best


def plan_mincut(
    instance: Instance, objective: Objective = "latency", options: MincutOptions | None = None
) -> Plan:
    """DADS min-cut planner (S5): exact minimum latency of the device/server split.

    Exact for latency within its model (two locations; the best prefix split on a chain);
    for throughput/energy a server choice on top of latency-optimal cuts. Complexity: one
    max-flow per candidate server, ``O(D * V^2 sqrt(E))`` for a DAG of ``V`` nodes.

    Parameters
    ----------
    instance : the source is the device; every other device is a candidate server.
    objective : the cut minimises latency; other objectives choose the best server (see module).
    options : :class:`MincutOptions` (a full model DAG, a fixed server).

    Returns
    -------
    Plan of one or two stages; ``details`` holds the server, the cut value under the DAG
    model, whether the cut is chain-compatible, and for DAG cuts the node sets.
    """
    started = time.perf_counter()
    objective = check_objective(objective)
    opts = options or MincutOptions()
    src = instance.source
    if opts.server is not None and opts.server not in instance.device_by_name:
        raise InputError(
            f"MincutOptions.server={opts.server!r} is not a device (devices: {list(instance.device_names)})"
        )
    if opts.server == src:
        raise InputError(
            f"MincutOptions.server={src!r} is the source; the server must be another device"
        )
    servers = [opts.server] if opts.server else [d for d in instance.device_names if d != src]
    if not servers:  # one device: everything stays on it
        stages = (Stage(0, instance.num_pieces - 1, (src,)),)
        if not _fits(instance, stages):
            raise InfeasibleError(
                f"{instance.name}: the model does not fit on the only device {src!r}"
            )
        return finish(
            instance, "mincut", objective, stages, started=started, details={"server": None}
        )
    dag = opts.dag if opts.dag is not None else chain_dag(instance)
    _check_dag(dag, (src, *servers))
    pmap = _piece_map(dag, instance)
    ib = float(dag.graph.get("input_bytes", instance.input_bytes))
    best: tuple[float, tuple[Stage, ...], dict[str, Any]] | None = None
    for server in servers:

        def up(x: float, server: str = server) -> float:
            return instance.transfer_s(src, server, x)

        def down(x: float, server: str = server) -> float:
            return instance.transfer_s(server, src, x)

        cut = dads_cut(dag, src, server, up, down, ib)
        dev_pieces = {pmap[v] for v in cut.device_nodes}
        srv_pieces = {pmap[v] for v in cut.server_nodes}
        k = max(dev_pieces) + 1 if dev_pieces else 0
        chain_ok = all(p < k for p in dev_pieces) and all(p >= k for p in srv_pieces)
        stages = _two_stages(instance, k, server) if chain_ok else None
        fallback = None
        if stages is None or not _fits(instance, stages):
            fallback = "not chain-compatible" if stages is None else "cut overflows memory"
            stages = best_prefix_cut(instance, server, objective)
            if stages is None:
                continue
        det: dict[str, Any] = {
            "server": server,
            "cut_latency_s": cut.value_s,
            "chain_compatible": chain_ok,
            "transfers": cut.transfers,
            "bytes_moved": cut.bytes_moved,
        }
        if fallback:
            det["fallback"] = fallback
        if opts.dag is not None:
            det["dag_cut"] = {
                "device_nodes": sorted(map(str, cut.device_nodes)),
                "server_nodes": sorted(map(str, cut.server_nodes)),
            }
        score = (
            cut.value_s
            if objective == "latency" and opts.dag is not None
            else objective_value(instance, stages, objective)
        )
        if best is None or score < best[0]:
            best = (score, stages, det)
    if best is None:
        raise InfeasibleError(
            f"{instance.name}: no device/server split fits in memory for any server {servers}; "
            f"{infeasible_message(instance, 'mincut', (src, *servers))}"
        )
    return finish(instance, "mincut", objective, best[1], started=started, details=best[2])
