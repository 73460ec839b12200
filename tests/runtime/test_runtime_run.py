"""End-to-end runs with real worker processes (gloo over loopback), incl. failures and remote mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from runtime_clusters import LINE_YAML

from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.errors import PeerError
from coinfer.runtime import run
from coinfer.runtime.prepare import make_inputs
from coinfer.zoo import load_model

pytestmark = pytest.mark.integration

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)


def _cluster(latency_ms: float = 1.0, bandwidth_mbps: float = 1000.0, token: str | None = None):
    tok = f"token: {token}\n" if token else ""
    return cluster_from_yaml(
        f"""
name: t
source: a
{tok}devices:
  - {{name: a, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 1.0, threads: 1}}}}
  - {{name: b, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 1.0, threads: 1}}}}
  - {{name: c, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 1.0, threads: 1}}}}
links:
  - {{src: a, dst: b, bandwidth_mbps: {bandwidth_mbps}, latency_ms: {latency_ms}}}
  - {{src: a, dst: c, bandwidth_mbps: 1000, latency_ms: {latency_ms}}}
  - {{src: b, dst: c, bandwidth_mbps: {bandwidth_mbps}, latency_ms: {latency_ms}}}
"""
    )


def _plan(*stages: Stage) -> Plan:
    return Plan("manual", "throughput", tuple(stages), Metrics(0.0, 0.0))


def _reference(spec: str, shape: tuple[int, ...], n: int, mb: int) -> torch.Tensor:
    """The unsplit model on the run's inputs, batched like the run (kernels depend on batch size)."""
    torch.manual_seed(0)
    model, example = load_model(spec, shape)
    xs = make_inputs(example, n, 0)
    with torch.inference_mode():
        return torch.cat(
            [model(torch.cat([x[0] for x in xs[i : i + mb]])) for i in range(0, n, mb)]
        )


def test_replicated_pipeline_is_exact_and_traced():
    # stage 0 on the source, stage 1 replicated on b and c; micro-batches of 2
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    r = run(
        MLP,
        _cluster(),
        plan,
        requests=12,
        microbatch=2,
        input_shape=(1, 64),
        partition="sequential",
        timeout_s=60,
    )
    assert r.max_abs_error == 0.0
    assert r.outputs is not None and torch.equal(r.outputs, _reference(MLP, (1, 64), 12, 2))
    computes = {(e.resource, e.request) for e in r.trace if e.kind == "compute"}
    assert {req for dev, req in computes if dev == "a"} == set(range(6))
    assert {req for dev, req in computes if dev in ("b", "c")} == set(range(6))
    assert {dev for dev, _ in computes} == {"a", "b", "c"}  # both replicas served requests
    links = {e.resource for e in r.trace if e.kind == "transfer"}
    assert {"a->b", "a->c"} <= links and ({"b->a", "c->a"} & links)
    assert r.throughput_rps > 0 and r.latency_p95_s >= r.latency_p50_s > 0
    assert set(r.utilisation) == {"a", "b", "c"}
    # a 1.0-core quota cannot bind a 1-thread worker, so by design no cgroup is made for it
    # (test_emulation_is_cgroup_as_root checks that binding quotas do get one)
    assert r.emulation_mode == "threads"


def test_link_latency_is_emulated_in_the_transport():
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    r = run(
        MLP,
        _cluster(latency_ms=40),
        plan,
        requests=4,
        input_shape=(1, 64),
        partition="sequential",
        timeout_s=60,
    )
    # every link has 40 ms, so no detour through c is cheaper than the direct a -> b
    hops = [e for e in r.trace if e.resource == "a->b"]
    assert len(hops) == 4 and all(e.duration_s >= 0.040 for e in hops)
    assert r.latency_p50_s >= 0.040


def test_graph_partition_with_multi_tensor_cut():
    # tiny_dag: cutting after the stem sends one tensor, later cuts carry the long skip too
    torch.manual_seed(0)
    model, example = load_model("tiny_dag")
    from coinfer.graph import capture

    pieces = len(capture(model, example).pieces)
    mid = pieces // 2
    plan = _plan(Stage(0, mid, ("a",)), Stage(mid + 1, pieces - 1, ("b",)))
    r = run("tiny_dag", _cluster(), plan, requests=3, timeout_s=90)
    assert r.max_abs_error == 0.0


def _kill_after_results(device: str, after: int, killed_at: list[float], sig: int = 9):
    """An ``on_result`` hook that sends ``sig`` to ``device``'s worker once ``after`` results
    are in: it lands mid-stream however slow the machine is (no timer to race)."""

    def on_result(_message: int, completed: int) -> None:
        if completed == after and not killed_at:
            _kill_child(device, killed_at, sig)

    return on_result


def _kill_child(device: str, killed_at: list[float], sig: int = 9) -> None:
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().split("\0")
        except OSError:
            continue
        if ppid == me and "worker" in cmd and cmd[cmd.index("--device") + 1] == device:
            killed_at.append(time.time())
            os.kill(int(pid), sig)


def test_killed_worker_ends_run_with_peer_error_naming_device_and_requests():
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    killed: list[float] = []
    with pytest.raises(PeerError) as info:
        run(
            MLP,
            _cluster(latency_ms=30),
            plan,
            requests=200,
            input_shape=(1, 64),
            partition="sequential",
            timeout_s=60,
            on_result=_kill_after_results("b", 3, killed),
        )
    err = info.value
    assert killed, "the test did not manage to kill the worker"
    # detected from the process exit (plus the 1 s blame grace), far below the 60 s stall timeout
    assert time.time() - killed[0] < 20.0
    assert err.device == "b"
    assert "did not complete" in str(err) and err.requests
    # the 3 results that came back before the kill are not among the failed requests
    assert max(err.requests) == 199 and len(err.requests) <= 197


def test_stopped_worker_is_blamed_within_seconds_and_nothing_is_left():
    """SIGSTOP keeps a worker's sockets open but it never answers: the coordinator sees the
    stopped process (or its missing heartbeats) and ends the run in seconds, not at the stall
    timeout, naming the device; the stopped process is killed with the rest."""
    import signal

    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    stopped: list[float] = []
    with pytest.raises(PeerError) as info:
        run(
            MLP,
            _cluster(),
            plan,
            requests=400,
            input_shape=(1, 64),
            partition="sequential",
            timeout_s=60,
            on_result=_kill_after_results("b", 3, stopped, signal.SIGSTOP),
        )
    assert stopped, "the test did not manage to stop the worker"
    assert time.time() - stopped[0] < 15.0
    assert info.value.device == "b" and "stopped" in str(info.value)
    assert not _workers_of(os.getpid())


def test_worker_stopped_before_connecting_is_named(monkeypatch):
    """A worker stopped right after it was started never connects: named in ~1 s, not after
    the two-minute connect timeout."""
    import signal

    from coinfer.runtime import processes

    real = processes.spawn_local_workers

    def spawn_and_stop(names, control, token, net=None):
        procs = real(names, control, token, net)
        os.kill(procs["b"].pid, signal.SIGSTOP)
        return procs

    monkeypatch.setattr(processes, "spawn_local_workers", spawn_and_stop)
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    t0 = time.time()
    with pytest.raises(PeerError, match="device b was stopped") as info:
        run(MLP, _cluster(), plan, requests=4, input_shape=(1, 64), partition="sequential",
            timeout_s=60)  # fmt: skip
    assert time.time() - t0 < 30.0 and info.value.device == "b"
    assert not _workers_of(os.getpid())


def test_stopped_link_times_out_with_peer_error():
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    # 1e-9 Mbit/s on every link of b: the first transfer would take years (a stopped link)
    t0 = time.time()
    # the stall surfaces as a timeout, or — when b's own timeout fires first and it hangs up —
    # as a's report that b closed the connection; either way one bounded PeerError
    with pytest.raises(PeerError, match=r"(?i)(no progress|timed out|closed by peer)") as info:
        run(
            MLP,
            _cluster(bandwidth_mbps=1e-9),
            plan,
            requests=4,
            input_shape=(1, 64),
            partition="sequential",
            timeout_s=4,
        )
    assert time.time() - t0 < 60
    assert info.value.requests == (0, 1, 2, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_mode_workers_started_by_hand(tmp_path):
    token = "tok-" + os.urandom(16).hex()
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    bad = tmp_path / "bad"
    bad.write_text("wrong-" + "0" * 40 + "\n")
    port = _free_port()
    out: dict[str, object] = {}

    def coordinator() -> None:
        try:
            out["r"] = run(
                MLP,
                _cluster(token=token),
                _plan(
                    Stage(0, 2, ("b",)), Stage(3, 4, ("c",))
                ),  # the source a only feeds and collects
                requests=4,
                input_shape=(1, 64),
                partition="sequential",
                bind=f"127.0.0.1:{port}",
                spawn=False,
                timeout_s=60,
            )
        except Exception as exc:  # pragma: no cover - reported below
            out["r"] = exc

    th = threading.Thread(target=coordinator)
    th.start()
    base = [sys.executable, "-m", "coinfer", "worker", "--coordinator", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if k != "COINFER_TOKEN"}
    # the rogue goes first and alone, so it is always challenged (and rejected) before the real
    # workers complete the roster; it retries until the coordinator listens
    rogue = subprocess.run(
        [*base, "--device", "a", "--token-file", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert rogue.returncode == 2 and "authentication failed" in rogue.stderr
    assert len(rogue.stderr.strip().splitlines()) == 1  # one line, no traceback
    good = [
        subprocess.Popen([*base, "--device", d, "--token-file", str(tok)], env=env) for d in "abc"
    ]
    th.join(timeout=120)
    for p in good:
        p.wait(timeout=30)
    r = out["r"]
    assert not isinstance(r, Exception), r
    assert r.max_abs_error == 0.0
    assert [p.returncode for p in good] == [0, 0, 0]


def test_a_worker_started_by_hand_imports_model_code_only_when_allowed(tmp_path):
    """`coinfer worker` without --allow-model-code serves the built-in zoo only: a setup naming
    a file.py:factory is refused with one line (and the run fails naming the device)."""
    token = "tok-" + os.urandom(16).hex()
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    port = _free_port()
    out: dict[str, object] = {}
    spec = os.path.join(os.path.dirname(__file__), "runtime_models.py") + ":wide"

    def coordinator() -> None:
        try:
            out["r"] = run(spec, _cluster(token=token), _plan(Stage(0, 2, ("a",))), requests=2,
                           input_shape=(1, 32),
                           partition="sequential", bind=f"127.0.0.1:{port}", spawn=False,
                           timeout_s=60)  # fmt: skip
        except Exception as exc:
            out["r"] = exc

    th = threading.Thread(target=coordinator)
    th.start()
    env = {k: v for k, v in os.environ.items() if k != "COINFER_TOKEN"}
    worker = subprocess.run(
        [sys.executable, "-m", "coinfer", "worker", "--coordinator", f"127.0.0.1:{port}",
         "--device", "a", "--token-file", str(tok)],
        env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    th.join(timeout=60)
    assert worker.returncode == 2 and "--allow-model-code" in worker.stderr
    assert len(worker.stderr.strip().splitlines()) == 1
    assert isinstance(out["r"], PeerError) and "--allow-model-code" in str(out["r"])


def _cgroups_ok() -> bool:
    from coinfer.profile.cgroup import cgroup_support

    return os.geteuid() == 0 and cgroup_support()[0]


@pytest.mark.root
@pytest.mark.skipif(not _cgroups_ok(), reason="needs root + cgroup v1 CPU quotas")
def test_emulation_is_cgroup_as_root():
    cl = cluster_from_yaml(
        """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.5, threads: 1}}
  - {name: b, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.5, threads: 1}}
links:
  - {src: a, dst: b, bandwidth_mbps: 1000, latency_ms: 1}
"""
    )
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    r = run(MLP, cl, plan, requests=4, input_shape=(1, 64), partition="sequential")
    # a binding quota as root must be a real cgroup, never a silent fall-back to threads
    assert r.emulation_mode == "cgroup", r.emulation
    assert all(e["cpu_quota"] == 0.5 for e in r.emulation.values()), r.emulation


def test_several_outputs_all_checked_through_real_workers():
    """A model returning a dict of tensors: every output of every request matches the model."""
    spec = os.path.join(os.path.dirname(__file__), "runtime_models.py") + ":two_heads"
    torch.manual_seed(0)
    model, example = load_model(spec, (1, 3, 16, 16))
    from coinfer.graph import capture

    pieces = len(capture(model, example).pieces)
    assert pieces >= 2
    plan = _plan(Stage(0, pieces // 2 - 1, ("b",)), Stage(pieces // 2, pieces - 1, ("c",)))
    r = run(spec, _cluster(), plan, requests=4, input_shape=(1, 3, 16, 16), timeout_s=90)
    assert r.max_abs_error == 0.0 and len(r.all_outputs) == 3
    xs = make_inputs(example, 4, 0)
    with torch.inference_mode():
        want = [model(x[0]) for x in xs]
    assert torch.equal(r.all_outputs[0], torch.cat([w["logits"] for w in want]))
    assert torch.equal(r.all_outputs[1], torch.cat([w["mask"][0] for w in want]))
    assert torch.equal(r.all_outputs[2], torch.cat([w["mask"][1] for w in want]))


def _netns_ok() -> bool:
    from coinfer.runtime.netns import netns_available

    return netns_available()[0]


@pytest.mark.root
@pytest.mark.skipif(not _netns_ok(), reason="needs root + ip/tc for network namespaces")
def test_netns_testbed_shapes_bandwidth_with_tc_and_cleans_up():
    cl = cluster_from_yaml(
        """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB, emulate: {threads: 1}}
  - {name: b, speed: {gflops: 10}, memory: 1GiB, emulate: {threads: 1}}
links:
  - {src: a, dst: b, bandwidth_mbps: 20, latency_ms: 2}
"""
    )
    model = os.path.join(os.path.dirname(__file__), "runtime_models.py") + ":wide"
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 2, ("b",)))
    r = run(
        model,
        cl,
        plan,
        requests=8,
        input_shape=(1, 32),
        partition="sequential",
        netns=True,
        timeout_s=60,
    )
    assert r.max_abs_error == 0.0
    assert r.network.startswith("netns")
    ab = r.links["a->b"]
    assert ab["transfers"] == 8
    # tc htb at 20 Mbit/s = 2.5 MB/s: TCP cannot beat the shaper by much, and 64 KiB messages
    # reach at least 60 % of it even with the machine busy (measured 85-100 % when quiet)
    assert 0.6 * ab["nominal_Bps"] <= ab["measured_Bps"] <= 1.25 * ab["nominal_Bps"]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith("cf") and ln[2:10].isalnum()]


_THREAD_SPLIT = """
import threading, sys
from coinfer.runtime import emulation

def cpu_cgroup():
    for line in open(f"/proc/thread-self/cgroup"):
        _, ctl, rel = line.strip().split(":", 2)
        if "cpu" in ctl.split(","):
            return rel
before = cpu_cgroup()
emu = emulation.apply("dev", "splittest", cpu_quota=0.5, threads=1)
seen = {"compute": cpu_cgroup()}
def helper():
    seen["inherited"] = cpu_cgroup()
    emulation.exempt_this_thread()
    seen["helper"] = cpu_cgroup()
t = threading.Thread(target=helper); t.start(); t.join()
emulation.release(emu)
print(before, seen["compute"], seen["inherited"], seen["helper"])
"""


@pytest.mark.root
@pytest.mark.skipif(not _cgroups_ok(), reason="needs root + cgroup v1 CPU quotas")
def test_only_the_compute_thread_is_under_the_quota():
    """Communication threads leave the device's quota: a sender must not wake from its link sleep
    into a throttled group (that added 5-6 ms to every transfer of the demo)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _THREAD_SPLIT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    before, compute, inherited, helper = out.stdout.split()
    assert compute.endswith("coinfer-splittest-dev")
    assert inherited == compute  # a new thread starts where its creator is ...
    assert helper == before  # ... and moves itself out, back where the process was


def test_multi_hop_transfers_are_relayed_along_the_priced_path():
    """A line a - b - c (no a-c link): the model and the simulator price a -> b -> c, and the run
    really goes that way — b, in no stage, forwards every cut and the output comes back through
    it — with outputs identical to the unsplit model, and the hop links carry what they should."""
    cl = cluster_from_yaml(LINE_YAML)
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("c",)))
    r = run(MLP, cl, plan, requests=6, input_shape=(1, 64), partition="sequential", timeout_s=60)
    assert r.max_abs_error == 0.0
    assert torch.equal(r.outputs, _reference(MLP, (1, 64), 6, 1))
    hops = {e.resource for e in r.trace if e.kind == "transfer"}
    assert hops == {"a->b", "b->c", "c->b", "b->a"}  # never a direct a->c (there is no link)
    per_link = {
        h: sum(1 for e in r.trace if e.kind == "transfer" and e.resource == h) for h in hops
    }
    assert set(per_link.values()) == {6}  # every request crosses every hop exactly once
    assert "b" not in r.utilisation or r.utilisation.get("b", 0.0) == 0.0  # b only relays
    # each hop is its own emulated 200 Mbit/s link, measured as such
    assert set(r.links) == hops and all(v["nominal_Bps"] == 25e6 for v in r.links.values())


_COORDINATOR = """
import sys
from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.runtime import run
cluster = cluster_from_yaml(sys.argv[1])
plan = Plan("manual", "throughput", (Stage(0, 1, ("a",)), Stage(2, 4, ("b",))), Metrics(0.0, 0.0))
run("coinfer.zoo.tiny:tiny_mlp", cluster, plan, requests=3000, input_shape=(1, 64),
    partition="sequential", timeout_s=60, log=lambda line: print(line, flush=True))
"""


def test_workers_leave_when_their_coordinator_is_stopped():
    """A coordinator stopped mid-run (SIGSTOP) sends no more heartbeats: its workers exit on
    their own within the silence bound instead of waiting forever."""
    import signal

    from coinfer.runtime.liveness import COORDINATOR_SILENCE_S

    yaml_text = """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 1.0, threads: 1}}
  - {name: b, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 1.0, threads: 1}}
links:
  - {src: a, dst: b, bandwidth_mbps: 1000, latency_ms: 10}
"""
    coord = subprocess.Popen([sys.executable, "-c", _COORDINATOR, yaml_text], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert coord.stdout is not None
        for line in coord.stdout:  # the run prints "... running" once every worker is ready
            if "running" in line:
                break
        workers = _workers_of(coord.pid)
        assert len(workers) == 2, "the run did not start its workers"
        time.sleep(1.0)  # mid-run
        coord.send_signal(signal.SIGSTOP)
        t0 = time.time()
        while _alive(workers) and time.time() - t0 < COORDINATOR_SILENCE_S + 15:
            time.sleep(0.2)
        assert not _alive(workers), "workers outlived their stopped coordinator"
        assert time.time() - t0 < COORDINATOR_SILENCE_S + 15
    finally:
        coord.kill()
        coord.wait()


def _workers_of(parent: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(rest[1]) == parent and "worker" in cmd and rest[0] != "Z":
            out.append(int(pid))
    return out


def _alive(pids: list[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except OSError:
            continue
    return False


def _wildcard_listeners_of_this_process() -> list[str]:
    """Listening TCP sockets of this process bound to every interface (0.0.0.0 or ::)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    found = []
    for table, wildcard in (("/proc/net/tcp", "00000000"), ("/proc/net/tcp6", "0" * 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                addr, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and addr.split(":")[0] == wildcard and inode in mine:
                    found.append(f"{table}:{addr}")
    return found


def test_local_runs_listen_on_no_public_interface():
    """A local run's rendezvous is a private file, not a TCP store (which listens on every
    interface whatever address it is given); the control socket is on loopback."""
    seen: list[list[str]] = []

    def look(_message: int, completed: int) -> None:
        if completed == 2:
            seen.append(_wildcard_listeners_of_this_process())

    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    r = run(MLP, _cluster(), plan, requests=8, input_shape=(1, 64), partition="sequential",
            timeout_s=60, on_result=look)  # fmt: skip
    assert r.max_abs_error == 0.0
    assert seen == [[]]


def test_slow_loris_handshakes_do_not_keep_real_workers_out():
    """Thirty connections that open and then stall mid-handshake while the real workers start:
    each stalled handshake has its own thread and a 10 s deadline, so the run starts and
    finishes normally (exact outputs)."""
    import re

    loris: list[socket.socket] = []

    def on_log(line: str) -> None:
        m = re.search(r"control at ([\d.]+):(\d+)", line)
        if m and not loris:
            for _ in range(30):
                s = socket.create_connection((m.group(1), int(m.group(2))))
                s.sendall(b'\x00\x00\x00\x40{"type":')  # a header promising more, then nothing
                loris.append(s)

    try:
        r = run(MLP, _cluster(), _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",))), requests=8,
                input_shape=(1, 64), partition="sequential", timeout_s=60, log=on_log)  # fmt: skip
    finally:
        for s in loris:
            s.close()
    assert len(loris) == 30 and r.max_abs_error == 0.0


def test_a_link_carrying_a_relayed_flow_and_its_own_outputs_runs_exactly():
    """Line a - b - c, stage 0 on a and b, stage 1 on c: b -> c carries a's cuts (relayed) and
    b's own, both for c's compute receiver, in the order c posts them (runtime.sendorder)."""
    cl = cluster_from_yaml(LINE_YAML)
    plan = _plan(Stage(0, 1, ("a", "b")), Stage(2, 4, ("c",)))
    r = run(MLP, cl, plan, requests=12, input_shape=(1, 64), partition="sequential", timeout_s=60)
    assert torch.equal(r.outputs, _reference(MLP, (1, 64), 12, 1))
    sent = [e for e in r.trace if e.kind == "transfer" and e.resource == "b->c"]
    assert len(sent) == 12  # every request's cut crosses b -> c: six relayed, six b's own
