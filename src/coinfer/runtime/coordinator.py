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

import datetime as dt
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from ..core.plans import Plan
from ..core.schedules import Schedule
from ..errors import InputError
from ..schedule.scheduler import stage_freqs
from . import emulation, media, processes
from . import supervision as sv
from .control import check_token, parse_hostport
from .interrupts import shielded
from .ledger import Ledger
from .prepare import Prepared, prepare_run
from .protocol import encode
from .results import (
    RunResult,
    build_result,
    measured_energy,
    measured_links,
    output_errors,
    reference_outputs,
)
from .stages import Partition


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
    on_result: Callable[[int, int], None] | None = None,
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
    log, on_result
        ``log(line)`` receives progress lines; ``on_result(message, completed)`` is called as
        each micro-batch's output reaches the coordinator.

    Raises
    ------
    InputError
        Bad requests/microbatch, plan/model mismatch, missing token in remote mode.
    PeerError
        A worker died, stalled or failed; names the device and the request ids not completed.
    """
    t_start = time.time()
    say: Callable[[str], None] = log or (lambda _msg: None)
    prep = prepare_run(
        model_spec, cluster, plan, requests=requests, microbatch=microbatch,
        input_shape=input_shape, instance=instance, schedule=schedule, partition=partition,
        max_pieces=max_pieces, seed=seed, depth=depth, timeout_s=timeout_s,
        use_cgroup=use_cgroup, local_cpus=len(os.sched_getaffinity(0)) if spawn else None,
    )  # fmt: skip
    run_id = secrets.token_hex(4)
    emulation.sweep_abandoned()  # groups of earlier runs whose coordinator was killed
    _FileRendezvous.sweep()
    token = getattr(cluster, "token", None) or (secrets.token_hex(32) if spawn else None)
    if not token:
        raise InputError(
            "remote workers need the cluster's shared token (field 'token' of the cluster file)"
        )
    check_token(token, f"{getattr(cluster, 'origin', 'cluster')}: field 'token'")
    net = _network(run_id, prep, netns)
    shapes = net.transport_shapes(prep.shapes) if net is not None else prep.shapes
    ledger = Ledger(requests, microbatch)
    procs: dict[str, Any] = {}
    peers: dict[str, sv.Peer] = {}
    beats = threading.Event()  # set: the coordinator stops heartbeating its workers
    try:
        server, store = _listen(bind, net, timeout_s, local=spawn)
        try:
            control = server.getsockname()[:2]
            if spawn:
                procs = processes.spawn_local_workers(prep.names, control, token, net)
            say(f"{'spawned' if spawn else 'waiting for'} workers {', '.join(prep.names)} "
                f"(run {run_id}); control at {control[0]}:{control[1]}")  # fmt: skip
            peers = sv.accept_workers(
                server, token, prep.names, time.time() + sv.CONNECT_TIMEOUT_S, procs, beats
            )
            origin = time.time()  # the bandwidth traces' time 0
            ship_setups(prep, peers, run_id, store, shapes, timeout_s, origin)
            if net is not None:
                net.follow_traces(prep.shapes, origin)
            reports = sv.supervise(
                peers, sv.start_readers(peers), ledger, timeout_s, say, on_result
            )
        except BaseException:
            with shielded():
                sv.abort(peers, procs)
            raise
        finally:
            with shielded():
                beats.set()
                server.close()
                processes.reap(procs)
                if isinstance(store, _FileRendezvous):
                    store.close()
                del store
    finally:
        with shielded():
            emulation.cleanup_stale(run_id)
            media.cleanup(run_id)
            if net is not None:
                net.destroy()
    say(f"run finished in {time.time() - t_start:.1f} s")
    return _result(prep, ledger, reports, plan, requests, microbatch, check, netns)


def ship_setups(
    prep: Prepared,
    peers: dict[str, sv.Peer],
    run_id: str,
    store: Any,
    shapes: Any,
    timeout_s: float,
    origin_unix: float,
) -> None:
    """Cap what the workers may send back, then send each its setup and blobs (in parallel);
    a run and every epoch of a session start their workers this way. Bandwidth traces start at
    ``origin_unix`` (a run's start; a session's, so they run on across its epochs)."""
    sv.limit_result_attachments(peers, sum(m.nbytes for m in prep.contracts[-1]))
    payloads = {}
    for d in prep.names:
        # the address this worker reached us on also reaches the store (same host)
        where = (
            (store.address, 0)
            if isinstance(store, _FileRendezvous)
            else (peers[d].chan.sock.getsockname()[0], store.port)
        )
        payloads[d] = (
            encode(prep.setup_for(d, run_id, where, shapes, origin_unix)),
            list(prep.blobs[d]),
        )
    sv.send_setups(peers, payloads, timeout_s)


def _network(run_id: str, prep: Prepared, netns: bool) -> Any:
    """The network-namespace testbed (root only), or ``None`` for transport-level emulation."""
    if not netns:
        return None
    from . import netns as netns_mod

    return netns_mod.Testbed.create(run_id, list(prep.names), prep.shapes)


class _FileRendezvous:
    """The gloo rendezvous of a run whose workers all live on this machine: a file in a private
    directory (mode 0700) instead of a TCP store, which would listen on every interface of the
    host whatever address it is given. Workers open it as ``file:<path>``."""

    PREFIX = "coinfer-store-"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-")
        self.port = 0
        self.address = "file:" + os.path.join(self.dir, "store")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    def sweep(cls) -> None:
        """Remove the store directories of coordinators that no longer exist (killed before
        their clean-up ran); the directory name carries the coordinator's pid."""
        root = tempfile.gettempdir()
        for name in os.listdir(root):
            if not name.startswith(cls.PREFIX):
                continue
            pid = name[len(cls.PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _listen(bind: str, net: Any, timeout_s: float, local: bool) -> tuple[socket.socket, Any]:
    """The control socket and the gloo rendezvous store: a private file when every worker is a
    local process on loopback, else a TCP store (inside the hub namespace with netns)."""
    host, port = parse_hostport(bind, what="--coordinator-bind")
    if net is not None:
        host = net.host_address

    def listen() -> tuple[socket.socket, Any]:
        srv = socket.create_server((host, port))
        if local and net is None:
            return srv, _FileRendezvous()
        st = dist.TCPStore(
            host, 0, world_size=None, is_master=True, timeout=dt.timedelta(seconds=timeout_s)
        )
        return srv, st

    return net.in_hub(listen) if net is not None else listen()


def _result(
    prep: Prepared,
    ledger: Ledger,
    reports: sv.Reports,
    plan: Plan,
    requests: int,
    microbatch: int,
    check: bool,
    netns: bool,
) -> RunResult:
    """Check every output against the unsplit model and assemble the measurements."""
    n_out = len(ledger.outputs(0))
    outputs = tuple(
        torch.cat([ledger.outputs(m)[j] for m in range(prep.messages)]) for j in range(n_out)
    )
    max_err = None
    if check:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(prep.check_threads)  # the workers' count: same float sum order
        try:
            with torch.inference_mode():
                max_err = output_errors(
                    lambda m: reference_outputs(prep.model, prep.msg_inputs[m]),
                    ledger.outputs,
                    prep.messages,
                )
        finally:
            torch.set_num_threads(old_threads)
    result = build_result(
        requests=requests,
        microbatch=microbatch,
        completions=ledger.completions,
        outputs=outputs,
        max_abs_error=max_err,
        trace=reports.trace,
        busy_s=reports.busy_s,
        computing=prep.computing,
        emulation={d: reports.emulation.get(d, {}) for d in prep.names},
        stages=tuple((st.first, st.last, st.devices) for st in plan.stages),
        links=measured_links(
            reports.trace, reports.arrivals, prep.shapes, ends="arrival" if netns else "sender"
        ),
        netns=netns,
    )
    if prep.instance is None:
        return result
    energy = measured_energy(
        result.trace, prep.instance.device_by_name, stage_freqs(prep.schedule), requests
    )
    return replace(result, energy_j_per_request=energy)


__all__ = ["RunResult", "run"]
