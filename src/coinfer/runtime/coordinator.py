"""The coordinator: start (or accept) one worker per device, hand out stages, watch, collect.

The coordinator is not in the data plane: it owns the control channel (JSON, authenticated), the
rendezvous store of the gloo group, and the request ledger. The source device's worker plays the
source (feeds inputs, collects outputs, streams each result back here), so the coordinator can
watch processes and heartbeats without ever blocking in a tensor operation — a dead worker or a
stopped link ends the run within a bounded time with a :class:`PeerError` naming the device and
the requests that did not complete.

Local mode spawns ``coinfer worker`` processes (the exact code path of remote workers); remote mode
(``spawn=False``) waits for workers started by hand on other machines with the same token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import math
import os
import queue
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..core.plans import Plan
from ..core.schedules import Schedule
from ..errors import InputError, PeerError
from . import emulation
from .control import Channel, authenticate_worker, parse_hostport
from .ledger import Ledger, format_ids
from .stages import Partition, batch_inputs, cut_contracts, load_model, split_pieces, stage_weights
from .transport import LinkShape, TensorMeta

# A worker silent this long on the control channel is declared dead (heartbeats every 0.5 s;
# 10 missed beats tolerate a worker starved of CPU by a tight cgroup quota on a busy host).
HEARTBEAT_TIMEOUT_S = 5.0
# After the first failure signal, wait this long to collect the others (a dying worker makes its
# peers report errors too; the grace period lets us name the one that died, not a bystander).
BLAME_GRACE_S = 1.0
# Seconds to wait for every worker to connect and authenticate (process start + torch import).
CONNECT_TIMEOUT_S = 120.0
# Seconds a worker gets to exit after ``bye`` before it is killed.
EXIT_GRACE_S = 5.0


@dataclass(frozen=True)
class RunResult:
    """What a real run measured (seconds; throughput in requests = samples per second).

    ``period_s`` is the steady-state time per micro-batch (completions with fill and drain
    trimmed, the simulator's definition) and ``throughput_rps = microbatch / period_s``;
    ``wall_s`` runs from the first release to the last output. Latencies are per micro-batch,
    release at the source to output back there. ``utilisation`` is compute busy time / ``wall_s``.
    ``links`` holds each used link's achieved bandwidth next to the cluster's (see
    :func:`measured_links`); ``network`` says where links were emulated.
    """

    requests: int
    microbatch: int
    wall_s: float
    period_s: float
    throughput_rps: float
    latency_p50_s: float
    latency_p95_s: float
    max_abs_error: float | None
    utilisation: Mapping[str, float]
    emulation: Mapping[str, Mapping[str, Any]]
    trace: tuple[Any, ...] = field(repr=False)
    stages: tuple[tuple[int, int, tuple[str, ...]], ...] = ()
    links: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    network: str = "transport"
    outputs: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def emulation_mode(self) -> str:
        modes = sorted({str(e.get("mode")) for e in self.emulation.values()})
        return "+".join(modes) if modes else "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "microbatch": self.microbatch,
            "wall_s": self.wall_s,
            "period_s": self.period_s,
            "throughput_rps": self.throughput_rps,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "max_abs_error": self.max_abs_error,
            "utilisation": dict(self.utilisation),
            "emulation": {d: dict(e) for d, e in self.emulation.items()},
            "emulation_mode": self.emulation_mode,
            "stages": [{"pieces": [a, b], "devices": list(d)} for a, b, d in self.stages],
            "links": {k: dict(v) for k, v in self.links.items()},
            "network": self.network,
            "trace": [ev.to_dict() for ev in self.trace],
        }

    def __str__(self) -> str:
        err = "unchecked" if self.max_abs_error is None else f"max|err|={self.max_abs_error:.3g}"
        util = ", ".join(f"{d} {u:.0%}" for d, u in self.utilisation.items())
        return (
            f"RunResult({self.requests} requests x{self.microbatch}: {self.throughput_rps:.2f} req/s, "
            f"p50 {self.latency_p50_s * 1e3:.1f} ms, p95 {self.latency_p95_s * 1e3:.1f} ms, {err}, "
            f"util [{util}], emulation {self.emulation_mode})"
        )


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def link_shapes(
    links: Sequence[tuple[str, str, float, float]], names: Sequence[str], nbytes: float
) -> dict[str, dict[str, LinkShape]]:
    """Emulated shape of every ordered pair of ``names``: the direct link, else the cheapest path.

    ``links`` are ``(src, dst, bandwidth_Bps, latency_s)``. A path of hops emulates as one link
    with the hops' summed latency and ``1 / sum(1 / B)`` bandwidth (store-and-forward at the
    transfer size ``nbytes`` chosen for routing, as in the reference cost model). Pairs with no
    path get no entry (unshaped).
    """
    adj: dict[str, list[tuple[str, float, float]]] = {}
    for s, d, bw, lat in links:
        adj.setdefault(s, []).append((d, bw, lat))
    out: dict[str, dict[str, LinkShape]] = {}
    for u in names:
        # Dijkstra on L + nbytes / B, carrying (sum latency, sum 1/B) along the best path
        best: dict[str, tuple[float, float, float]] = {u: (0.0, 0.0, 0.0)}
        heap = [(0.0, u, 0.0, 0.0)]
        while heap:
            cost, x, lat, inv = heapq.heappop(heap)
            if cost > best[x][0]:
                continue
            for y, bw, lt in adj.get(x, []):
                c = cost + lt + nbytes / bw
                if y not in best or c < best[y][0]:
                    best[y] = (c, lat + lt, inv + 1.0 / bw)
                    heapq.heappush(heap, (c, y, lat + lt, inv + 1.0 / bw))
        out[u] = {
            v: LinkShape(1.0 / best[v][2] if best[v][2] > 0 else None, best[v][1])
            for v in names
            if v != u and v in best
        }
    return out


def check_plan_shape(plan: Plan, num_pieces: int) -> None:
    """Raise :class:`InputError` unless the plan's stages cover pieces ``0..num_pieces-1`` in order."""
    nxt = 0
    for k, st in enumerate(plan.stages):
        if st.first != nxt or st.last < st.first:
            raise InputError(
                f"plan stage {k} covers pieces {st.first}-{st.last}; expected to start at piece {nxt}"
            )
        if not st.devices:
            raise InputError(f"plan stage {k} has no device")
        nxt = st.last + 1
    if nxt != num_pieces:
        raise InputError(
            f"plan covers pieces 0-{nxt - 1} but the model has {num_pieces} pieces (0-{num_pieces - 1})"
        )


def measured_links(
    trace: Sequence[Mapping[str, Any]],
    arrivals: Mapping[tuple[str, str, int, int], float],
    shapes: Mapping[str, Mapping[str, LinkShape]],
) -> dict[str, dict[str, float]]:
    """Per directed link: transfers, bytes, and the bandwidth the run actually achieved.

    A transfer occupies the link from the sender's start plus the emulated latency (or the
    previous transfer's arrival, if later: it queued behind it) to the receiver's arrival time;
    the achieved bandwidth is the link's bytes / the summed occupancy. With ``--netns`` this checks tc's shaping against the cluster file.
    """
    per_link: dict[str, list[tuple[float, float, float]]] = {}
    for e in trace:
        if e.get("kind") != "transfer" or "nbytes" not in e:
            continue
        src, dst = e["resource"].split("->", 1)
        end = arrivals.get((src, dst, int(e["request"]), int(e["stage"])))
        if end is not None:
            per_link.setdefault(e["resource"], []).append(
                (float(e["start_s"]), end, float(e["nbytes"]))
            )
    acc: dict[str, list[float]] = {}
    for name, xfers in per_link.items():
        src, dst = name.split("->", 1)
        lat = shapes.get(src, {}).get(dst, LinkShape()).latency_s
        a = acc.setdefault(name, [0.0, 0.0, 0.0])
        prev_end = -math.inf
        for start, end, nbytes in sorted(xfers):
            # a message queued behind the previous one (socket buffer, qdisc) only occupies
            # the link from when that one has arrived
            a[0] += 1
            a[1] += nbytes
            a[2] += max(1e-9, end - max(start + lat, prev_end))
            prev_end = max(prev_end, end)
    out = {}
    for name, (n, nbytes, secs) in acc.items():
        src, dst = name.split("->", 1)
        nominal = shapes.get(src, {}).get(dst, LinkShape()).bandwidth_Bps
        out[name] = {
            "transfers": n,
            "bytes": nbytes,
            "measured_Bps": nbytes / secs,
            "nominal_Bps": float("nan") if nominal is None else nominal,
        }
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] (``nan`` for no values)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def make_inputs(
    example: tuple[torch.Tensor, ...], n: int, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    """``n`` distinct batch-1 inputs shaped like ``example`` (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sample = []
        for t in example:
            t1 = t[:1]
            if t1.dtype.is_floating_point:
                sample.append(torch.randn(t1.shape, generator=gen, dtype=t1.dtype))
            elif t1.dtype == torch.bool:
                sample.append(t1.clone())
            else:
                hi = max(1, int(t.max()) + 1)
                sample.append(torch.randint(0, hi, t1.shape, generator=gen, dtype=t1.dtype))
        out.append(tuple(sample))
    return out


def _fallback_instance(
    cluster: Any, plan: Plan, contracts: list[list[TensorMeta]], num_pieces: int
) -> Any:
    """A structural instance when the caller has none: equal piece times, real cut bytes.

    Only the scheduler's window and replica weights read it; real times come from the run.
    """
    from ..core.instance import Device, Link, make_instance

    cut_bytes = {
        st.last: sum(m.nbytes for m in contracts[k + 1]) for k, st in enumerate(plan.stages)
    }
    names = cluster.device_names
    times = [
        dict.fromkeys(names, 1e-3) for _ in range(num_pieces)
    ]  # 1 ms per piece: a neutral guess
    out_bytes = [cut_bytes.get(p, 0) for p in range(num_pieces)]
    devices = [Device(n, 1 << 62) for n in names]
    links = [Link(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s) for lk in cluster.links]
    in_bytes = sum(m.nbytes for m in contracts[0])
    return make_instance(
        times, [0] * num_pieces, out_bytes, in_bytes, devices, links, cluster.source
    )


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
class _Peer:
    """Book-keeping for one connected worker."""

    def __init__(self, device: str, chan: Channel):
        self.device = device
        self.chan = chan
        self.last_seen = time.time()
        self.ready: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None
        self.clock_offset = 0.0
        self.proc: subprocess.Popen[bytes] | None = None


def _accept_workers(
    server: socket.socket,
    token: str,
    devices: Sequence[str],
    deadline: float,
    procs: Mapping[str, subprocess.Popen[bytes]],
) -> dict[str, _Peer]:
    """Accept and authenticate one worker per device (rejecting strangers) before ``deadline``."""
    peers: dict[str, _Peer] = {}
    lock = threading.Lock()
    rejected: list[str] = []

    def handshake(conn: socket.socket, addr: Any) -> None:
        conn.settimeout(10.0)  # a peer that stalls the handshake is dropped
        chan = Channel(conn, peer=f"{addr[0]}:{addr[1]}")
        try:
            dev = authenticate_worker(chan, token)
        except PeerError as exc:
            rejected.append(str(exc))
            chan.close()
            return
        with lock:
            if dev not in devices or dev in peers:
                rejected.append(f"unexpected or duplicate device {dev!r} from {addr[0]}")
                with contextlib.suppress(PeerError):
                    chan.send(
                        {"type": "error", "message": f"device {dev!r} not expected in this run"}
                    )
                chan.close()
                return
            conn.settimeout(None)
            peers[dev] = _Peer(dev, chan)

    server.settimeout(0.2)
    while True:
        with lock:
            if len(peers) == len(devices):
                return peers
        for d, p in procs.items():
            if p.poll() is not None and d not in peers:
                raise PeerError(
                    f"worker for device {d} exited with code {p.returncode} before connecting",
                    device=d,
                )
        if time.time() > deadline:
            missing = sorted(set(devices) - set(peers))
            extra = f" (rejected: {'; '.join(rejected[:3])})" if rejected else ""
            raise PeerError(
                f"devices {', '.join(missing)} did not connect in time{extra}", device=missing[0]
            )
        try:
            conn, addr = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=handshake, args=(conn, addr), daemon=True).start()


def _reader(peer: _Peer, events: queue.Queue[tuple[str, dict[str, Any], list[bytes]]]) -> None:
    while True:
        try:
            msg, blobs = peer.chan.recv()
        except PeerError as exc:
            events.put((peer.device, {"type": "lost", "message": str(exc)}, []))
            return
        peer.last_seen = time.time()
        events.put((peer.device, msg, blobs))


def run(
    model_spec: str,
    cluster: Any,
    plan: Plan,
    *,
    requests: int,
    microbatch: int = 1,
    input_shape: Sequence[int] | None = None,
    netns: bool = False,
    check: bool = True,
    timeout_s: float = 120.0,
    instance: Any = None,
    schedule: Schedule | None = None,
    partition: Partition = "graph",
    max_pieces: int | None = None,
    bind: str = "127.0.0.1:0",
    spawn: bool = True,
    use_cgroup: bool = True,
    seed: int = 0,
    depth: int = 2,
    log: Any = None,
) -> RunResult:
    """Run ``plan`` for real: one worker process per device, outputs checked against the model.

    Parameters
    ----------
    model_spec, input_shape
        The model (zoo name, ``module:factory`` or ``file.py:factory``) and its input shape.
    cluster
        A :class:`coinfer.cluster.Cluster`: devices' ``emulate`` blocks, links, source, token.
    plan
        Stages (pieces -> devices); its ``cuts`` say where the model is split.
    requests, microbatch
        ``requests`` samples, sent as ``requests / microbatch`` micro-batches (must divide).
    netns
        Put local workers in network namespaces with ``tc``-shaped veth links (root only).
    check
        Compare every output with the unsplit model (max absolute error in the result).
    timeout_s
        Bound on any wait of the run; no failure hangs longer than this.
    instance, schedule
        The instance the plan was made for (for the schedule's window and replica weights) and a
        ready schedule; built here when omitted.
    partition
        ``"graph"`` (coinfer's captured pieces) or ``"sequential"`` (children of nn.Sequential).
    bind, spawn
        Control address ``HOST:PORT`` (port 0 = any); ``spawn=False`` waits for remote workers.
    use_cgroup
        Apply cgroup CPU quotas when root (else only thread limits).

    Raises
    ------
    InputError
        Bad requests/microbatch, plan/model mismatch, missing token in remote mode.
    PeerError
        A worker died, stalled or failed; names the device and the request ids not completed.
    """
    t_start = time.time()
    if requests < 1 or microbatch < 1 or requests % microbatch:
        raise InputError(
            f"--requests {requests} must be a positive multiple of --microbatch {microbatch}"
        )
    messages = requests // microbatch
    say = log or (lambda _msg: None)
    cluster_names = set(cluster.device_names)
    for st in plan.stages:
        for d in st.devices:
            if d not in cluster_names:
                raise InputError(f"plan uses device {d!r}, which the cluster does not define")

    # -- the model, its stages, contracts and reference --------------------------------------
    torch.manual_seed(seed)
    model, example = load_model(model_spec, input_shape)
    stage_mods, n_pieces = split_pieces(model, example, plan.cuts, partition, max_pieces)
    check_plan_shape(plan, n_pieces)
    if len(stage_mods) != len(plan.stages):
        raise InputError(
            f"plan has {len(plan.stages)} stages but the model split into {len(stage_mods)}"
        )
    contracts = cut_contracts(stage_mods, batch_inputs(example, microbatch))
    samples = make_inputs(example, requests, seed)
    msg_inputs = [
        [
            torch.cat([samples[m * microbatch + i][j] for i in range(microbatch)])
            for j in range(len(example))
        ]
        for m in range(messages)
    ]

    if schedule is None:
        from ..schedule import scheduler

        if instance is None:
            instance = _fallback_instance(cluster, plan, contracts, n_pieces)
        schedule = scheduler.schedule(plan, instance, messages, microbatch)
    if schedule.requests != messages:
        raise InputError(
            f"schedule has {schedule.requests} requests, the run has {messages} micro-batches"
        )
    from ..schedule.scheduler import client_actions, worker_actions

    source = schedule.source
    names = [source] + [d for st in plan.stages for d in st.devices if d != source]
    names = list(dict.fromkeys(names))
    stage_of = {d: k for k, st in enumerate(plan.stages) for d in st.devices}
    max_cut = max(sum(m.nbytes for m in c) for c in contracts)
    links = [(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s) for lk in cluster.links]
    shapes = link_shapes(links, names, max_cut)
    nominal_shapes = shapes

    run_id = secrets.token_hex(4)
    token = getattr(cluster, "token", None) or (secrets.token_hex(32) if spawn else None)
    if not token:
        raise InputError(
            "remote workers need the cluster's shared token (field 'token' of the cluster file)"
        )

    # -- networking -------------------------------------------------------------------------
    host, port = parse_hostport(bind, what="--coordinator-bind")
    net = None
    if netns:
        from . import netns as netns_mod

        net = netns_mod.Testbed.create(run_id, names, shapes)
        host = net.host_address
        shapes = net.transport_shapes(shapes)

    def listen() -> tuple[socket.socket, Any]:
        srv = socket.create_server((host, port))
        st = dist.TCPStore(
            host, 0, world_size=None, is_master=True, timeout=dt.timedelta(seconds=timeout_s)
        )
        return srv, st

    try:
        server, store = net.in_hub(listen) if net is not None else listen()
    except BaseException:
        if net is not None:
            net.destroy()
        raise
    ctl_host, ctl_port = server.getsockname()[:2]
    ledger = Ledger(requests, microbatch)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    peers: dict[str, _Peer] = {}
    try:
        if spawn:
            # workers' C++ warnings (gloo socket notices, peers closing on abort) are not for users
            env = {"TORCH_CPP_LOG_LEVEL": "ERROR", **os.environ, "COINFER_TOKEN": token}
            for d in names:
                cmd = [
                    sys.executable,
                    "-m",
                    "coinfer",
                    "worker",
                    "--coordinator",
                    f"{ctl_host}:{ctl_port}",
                    "--device",
                    d,
                ]
                enter = None
                if net is not None:
                    cmd = [*cmd, "--bind", net.address(d)]
                    enter = net.enter_fn(d)
                procs[d] = subprocess.Popen(
                    cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=enter
                )
            say(
                f"spawned {len(procs)} workers (run {run_id}); control at {ctl_host}:{ctl_port}, store port {store.port}"
            )
        else:
            say(
                f"waiting for workers {', '.join(names)} at {ctl_host}:{ctl_port} (store port {store.port})"
            )
        peers = _accept_workers(server, token, names, time.time() + CONNECT_TIMEOUT_S, procs)
        for d, p in procs.items():
            peers[d].proc = p

        # -- setup --------------------------------------------------------------------------
        weights = {k: stage_weights(m) for k, m in enumerate(stage_mods)}
        from safetensors.torch import save

        input_blob = save(
            {
                f"m{m}_{j}": t.contiguous()
                for m, ts in enumerate(msg_inputs)
                for j, t in enumerate(ts)
            }
        )
        spec = {
            "model": model_spec,
            "input_shape": None if input_shape is None else list(input_shape),
            "cuts": list(plan.cuts),
            "partition": partition,
            "max_pieces": max_pieces,
        }
        cpus = _local_cpu_slots(cluster, names) if spawn else {}
        for rank, d in enumerate(names):
            dev = cluster.device(d)
            emu = getattr(dev, "emulate", None)
            setup = {
                "type": "setup",
                "run_id": run_id,
                "device": d,
                "rank": rank,
                "names": names,
                # the address this worker reached us on also reaches the store (same host)
                "store": [peers[d].chan.sock.getsockname()[0], store.port],
                "timeout_s": timeout_s,
                "depth": depth,
                "num_stages": len(plan.stages),
                "contracts": [[m.to_list() for m in c] for c in contracts],
                "actions": [str(a) for a in worker_actions(schedule, d)],
                "links": {v: s.to_dict() for v, s in shapes.get(d, {}).items()},
                "emulate": {
                    "cpu_quota": getattr(emu, "cpu_quota", None),
                    "threads": getattr(emu, "threads", 1),
                    "cpu": cpus.get(d),
                },
                "use_cgroup": use_cgroup,
                "stage": None if d not in stage_of else {"spec": spec, "index": stage_of[d]},
            }
            blobs = [] if d not in stage_of else [weights[stage_of[d]]]
            if d == source:
                setup["client_actions"] = [str(a) for a in client_actions(schedule)]
                setup["last_device"] = {str(r): a[-1] for r, a in enumerate(schedule.assignment)}
                blobs.append(input_blob)
            peers[d].chan.send(setup, blobs)
        del weights, input_blob

        events: queue.Queue[tuple[str, dict[str, Any], list[bytes]]] = queue.Queue()
        for p in peers.values():
            threading.Thread(target=_reader, args=(p, events), daemon=True).start()
        result = _supervise(peers, events, ledger, names, timeout_s, say)
    except BaseException:
        _abort(peers, procs)
        raise
    finally:
        server.close()
        _reap(procs)
        emulation.cleanup_stale(run_id)
        if net is not None:
            net.destroy()
        del store

    # -- results ------------------------------------------------------------------------------
    comps = ledger.completions
    lat = [c.latency_s for c in comps]
    t0 = min(c.t_release_s for c in comps)
    t1 = max(c.t_done_s for c in comps)
    outputs = torch.cat([ledger.outputs(m)[0] for m in range(messages)])
    max_err = None
    if check:
        max_err = 0.0
        # Same intra-op thread count as the workers, so float sums run in the same order.
        threads = {
            int(getattr(getattr(cluster.device(d), "emulate", None), "threads", 1) or 1)
            for d in stage_of
        }
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads.pop() if len(threads) == 1 else 1)
        with torch.inference_mode():
            for m in range(messages):
                ref = model(*msg_inputs[m])
                ref_t = ref if isinstance(ref, torch.Tensor) else ref[0]
                got = ledger.outputs(m)[0]
                if got.shape != ref_t.shape:
                    raise PeerError(
                        f"output of micro-batch {m} has shape {tuple(got.shape)}, expected {tuple(ref_t.shape)}"
                    )
                max_err = max(max_err, float((got.float() - ref_t.float()).abs().max()))
        torch.set_num_threads(old_threads)
    trace, util, arrivals = result
    link_stats = measured_links(trace, arrivals, nominal_shapes)
    from ..core.trace import TraceEvent

    base = t0
    trace_events = tuple(
        sorted(
            (
                TraceEvent(
                    e["resource"],
                    e["kind"],
                    int(e["request"]),
                    e["start_s"] - base,
                    e["end_s"] - base,
                    e.get("stage"),
                )
                for e in trace
            ),
            key=lambda ev: (ev.start_s, ev.resource),
        )
    )
    from ..core.trace import steady_period

    period = steady_period([c.t_done_s - t0 for c in comps])
    say(f"run finished in {time.time() - t_start:.1f} s (pipeline {t1 - t0:.2f} s)")
    return RunResult(
        requests=requests,
        microbatch=microbatch,
        wall_s=t1 - t0,
        period_s=period,
        throughput_rps=microbatch / period if period > 0 else math.inf,
        latency_p50_s=statistics.median(lat),
        latency_p95_s=percentile(lat, 95),
        max_abs_error=max_err,
        utilisation={d: min(1.0, util.get(d, 0.0) / (t1 - t0)) for d in names if d in stage_of},
        emulation={d: peers[d].ready.get("emulation", {}) if peers[d].ready else {} for d in names},
        trace=trace_events,
        stages=tuple((st.first, st.last, st.devices) for st in plan.stages),
        links=link_stats,
        network="netns+tc (bandwidth), transport (latency)"
        if netns
        else "transport (bandwidth + latency)",
        outputs=outputs,
    )


def _supervise(
    peers: dict[str, _Peer],
    events: queue.Queue[tuple[str, dict[str, Any], list[bytes]]],
    ledger: Ledger,
    names: Sequence[str],
    timeout_s: float,
    say: Any,
) -> tuple[list[dict[str, Any]], dict[str, float], dict[tuple[str, str, int, int], float]]:
    """Drive the run: ready -> go -> results/done; any failure -> PeerError with the open requests."""
    from safetensors.torch import load

    deadline = time.time() + timeout_s
    phase = "setup"
    failure: tuple[str, str] | None = None  # (device, message)
    failure_at = 0.0
    suspects: dict[str, str] = {}  # device -> what we saw (process exit / lost channel / error)

    def note(device: str, what: str) -> None:
        nonlocal failure, failure_at
        suspects.setdefault(device, what)
        if failure is None:
            failure, failure_at = (device, what), time.time()

    while True:
        now = time.time()
        if failure is not None and now - failure_at >= BLAME_GRACE_S:
            break
        if (
            failure is None
            and phase == "run"
            and ledger.all_done
            and all(p.done for p in peers.values())
        ):
            break
        if failure is None and now > deadline:
            slow = [
                d
                for d, p in peers.items()
                if (p.ready is None if phase == "setup" else p.done is None)
            ]
            note(slow[0] if slow else names[0], f"no progress within the {timeout_s:.0f} s timeout")
            break
        for d, p in peers.items():
            if p.proc is not None and p.proc.poll() is not None and p.done is None:
                code = p.proc.returncode
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                note(d, f"worker process died ({how})")
            elif phase == "run" and p.done is None and now - p.last_seen > HEARTBEAT_TIMEOUT_S:
                note(d, f"no heartbeat for {now - p.last_seen:.1f} s")
        try:
            dev, msg, blobs = events.get(timeout=0.05)
        except queue.Empty:
            continue
        kind = msg["type"]
        peer = peers[dev]
        if kind == "ready":
            peer.ready = msg
            peer.clock_offset = time.time() - float(msg.get("tw", time.time()))
            if all(p.ready for p in peers.values()) and phase == "setup":
                for p in peers.values():
                    p.chan.send({"type": "go"})
                phase = "run"
                deadline = time.time() + timeout_s
                say("all workers ready; running")
        elif kind == "result":
            outs = load(blobs[0])
            off = peer.clock_offset
            ledger.complete(
                int(msg["message"]),
                float(msg["t_release"]) + off,
                float(msg["t_done"]) + off,
                [outs[f"t{j}"] for j in range(len(outs))],
            )
            deadline = time.time() + timeout_s  # progress: the timeout bounds a *stall*
        elif kind == "done":
            peer.done = msg
        elif kind == "error":
            note(dev, str(msg.get("message")))
        elif kind == "lost" and peer.done is None:
            note(dev, "control channel lost")

    if failure is not None:
        # Prefer the device that died or went silent over peers that merely saw it go.
        dead = [
            d
            for d, w in suspects.items()
            if w.startswith(("worker process died", "control channel lost", "no heartbeat"))
        ]
        dev, what = (dead[0], suspects[dead[0]]) if dead else failure
        ids = ledger.fail_open(f"device {dev}: {what}")
        raise PeerError(
            f"device {dev}: {what}; requests {format_ids(ids) or 'none'} did not complete",
            device=dev,
            requests=ids,
        )

    for p in peers.values():
        with contextlib.suppress(PeerError):
            p.chan.send({"type": "bye"})
    trace: list[dict[str, Any]] = []
    util: dict[str, float] = {}
    arrivals: dict[tuple[str, str, int, int], float] = {}
    for d, p in peers.items():
        assert p.done is not None
        for e in p.done.get("events", []):
            trace.append(
                {
                    **e,
                    "start_s": e["start_s"] + p.clock_offset,
                    "end_s": e["end_s"] + p.clock_offset,
                }
            )
        util[d] = float(p.done.get("busy_s", 0.0))
        for src, request, stage, t in p.done.get("arrivals", []):
            arrivals[(str(src), d, int(request), int(stage))] = float(t) + p.clock_offset
    return trace, util, arrivals


def _local_cpu_slots(cluster: Any, names: Sequence[str]) -> dict[str, int]:
    """CPU per locally spawned single-thread worker with a quota (see ``emulation.pack_cpus``)."""
    quotas: dict[str, float] = {}
    for d in names:
        emu = getattr(cluster.device(d), "emulate", None)
        quota = getattr(emu, "cpu_quota", None)
        if quota is not None and int(getattr(emu, "threads", 1) or 1) == 1:
            quotas[d] = min(float(quota), 1.0)
    return emulation.pack_cpus(quotas, len(os.sched_getaffinity(0)))


def _abort(peers: Mapping[str, _Peer], procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    for p in peers.values():
        with contextlib.suppress(Exception):
            p.chan.send({"type": "abort"})
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGKILL)


def _reap(procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.time() + EXIT_GRACE_S
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.01, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["RunResult", "link_shapes", "make_inputs", "percentile", "run"]
