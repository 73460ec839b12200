"""Streaming sessions: requests at any time, results in order, exactly once, through failures."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.core.schedules import Action
from coinfer.errors import InputError, PeerError
from coinfer.runtime.prepare import fallback_instance
from coinfer.runtime.session import Session
from coinfer.runtime.streaming import StreamEnd, Submissions, unrolled
from coinfer.runtime.transport import WireTensorSpec
from coinfer.schedule.scheduler import schedule
from coinfer.zoo import load_model

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)


def _plan(*stages: Stage) -> Plan:
    return Plan("manual", "throughput", tuple(stages), Metrics(0.0, 0.0))


def _cluster():
    from coinfer.cluster import cluster_from_yaml

    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 1.0, threads: 1}}}}"
        for d in "abc"
    )
    links = "\n".join(
        f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 1000, latency_ms: 1}}"
        for u, v in (("a", "b"), ("a", "c"), ("b", "c"))
    )
    return cluster_from_yaml(f"name: t\nsource: a\ndevices:\n{rows}\nlinks:\n{links}\n")


# -- the pure parts -------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(cycle=st.integers(1, 7), cycles=st.integers(1, 4), limit_cut=st.integers(0, 6))
def test_unrolled_cycles_cover_every_request_once_and_stop_at_the_end(cycle, cycles, limit_cut):
    """Every device's unrolled work, across devices, computes each (request, stage) exactly
    once, every send has its receive on the peer, and nothing at or past the end is yielded."""
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    inst = fallback_instance(_cluster(), plan, [[WireTensorSpec((1, 8), "float32")]] * 5, 5)
    sched = schedule(plan, inst, cycle)
    limit = max(0, cycle * cycles - limit_cut)
    end = StreamEnd(limit)
    computed: list[tuple[int, int]] = []
    sends: set[tuple[int, int, str, str]] = set()
    recvs: set[tuple[int, int, str, str]] = set()
    for dev, acts in sched.actions.items():
        work = [a for a in acts if a.stage not in (-1, len(plan.stages))]
        for a in unrolled(
            work, cycle, lambda a: a.request, lambda a, off: Action(a.kind, a.request + off,
            a.stage, a.peer, a.first, a.last, a.nbytes), end,
        ):  # fmt: skip
            assert a.request < limit
            if a.kind == "compute":
                computed.append((a.request, a.stage))
            elif a.kind == "send" and a.stage + 1 < len(plan.stages):
                sends.add((a.request, a.stage + 1, dev, str(a.peer)))
            elif a.kind == "recv" and a.stage > 0:
                recvs.add((a.request, a.stage, str(a.peer), dev))
    assert sorted(computed) == [(r, k) for r in range(limit) for k in range(2)]
    assert sends == recvs


def test_unrolled_finite_run_is_the_list_itself():
    items = [0, 1, 1, 2]
    assert list(unrolled(items, 0, lambda x: x, lambda x, off: x + off, StreamEnd())) == items
    assert list(unrolled(items, 3, lambda x: x, lambda x, off: x + off, StreamEnd(5))) == [
        0, 1, 1, 2, 3, 4, 4,
    ]  # fmt: skip


def test_submissions_refuse_out_of_order_and_wrong_inputs():
    from safetensors.torch import save

    subs = Submissions([WireTensorSpec((2, 4), "float32")], StreamEnd())
    good = save({"t0": torch.zeros(2, 4)})
    with pytest.raises(PeerError, match="expected 0"):
        subs.add(1, good)
    with pytest.raises(InputError, match="cut contract"):
        subs.add(0, save({"t0": torch.zeros(3, 4)}))
    with pytest.raises(PeerError, match="takes 1"):
        subs.add(0, save({"t0": torch.zeros(2, 4), "t1": torch.zeros(1)}))
    subs.add(0, good)
    assert torch.equal(subs.take(0)[0], torch.zeros(2, 4))
    subs.end.set(1)
    assert subs.take(1) is None  # past the end: no wait


# -- real workers ---------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    model, _ = load_model(MLP, (1, 64))
    return model


def _replan_without():
    def replan(alive):
        keep = tuple(d for d in ("a", "b", "c") if d in alive)
        return _plan(Stage(0, 1, (keep[0],)), Stage(2, 4, keep[1:] or keep[:1])), None

    return replan


def _session(plan, **kw):
    return Session(MLP, _cluster(), plan, microbatch=2, input_shape=(1, 64),
                   partition="sequential", timeout_s=60, **kw)  # fmt: skip


@pytest.mark.integration
def test_session_results_in_order_exact_and_bounded():
    """Requests submitted at any pace come back in order, each once, equal to the unsplit
    model; the session holds no finished request."""
    model = _model()
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    xs = [torch.randn(2, 64) for _ in range(150)]
    order: list[int] = []
    with _session(plan) as s:
        futs = []
        for i, x in enumerate(xs):
            f = s.submit(x)
            f.add_done_callback(lambda _f, i=i: order.append(i))
            futs.append(f)
            if i % 50 == 49:
                time.sleep(0.3)  # idle gaps: a session waits, it does not time out
        outs = [f.result(timeout=60) for f in futs]
        assert len(s._pending) == 0  # finished requests are not kept
    assert order == list(range(150))
    with torch.inference_mode():
        assert all(torch.equal(o[0], model(x)) for o, x in zip(outs, xs, strict=True))
    rep = s.report
    assert (rep.submitted, rep.completed, rep.lost, rep.duplicated) == (150, 150, 0, 0)
    assert not rep.recoveries and rep.throughput_rps() > 0


@pytest.mark.integration
def test_session_rejects_inputs_that_break_the_contract():
    plan = _plan(Stage(0, 4, ("a",)))
    with _session(plan) as s:
        with pytest.raises(InputError, match="cut contract"):
            s.submit(torch.randn(3, 64))
        (out,) = s.submit(torch.zeros(2, 64)).result(timeout=30)
    assert out.shape == (2, 10) and s.report.completed == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "device"), [("kill", "c"), ("stop", "b"), ("kill", "a")], ids=["kill-replica",
    "stop-replica", "kill-source"],
)  # fmt: skip
def test_failover_mid_stream_loses_and_duplicates_nothing(fault, device):
    """A worker killed (-9) or stopped mid-stream — the source included — is detected, the
    plan is re-made over the survivors and every unfinished request re-run: each completes
    exactly once with the unsplit model's output, and recovery takes seconds."""
    model = _model()
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    xs = [torch.randn(2, 64) for _ in range(240)]
    with _session(plan, replan=_replan_without()) as s:
        futs = []
        for i, x in enumerate(xs):
            futs.append(s.submit(x))
            if i == 80:
                while sum(f.done() for f in futs) < 20:
                    time.sleep(0.01)
                s.inject(fault, device)
            time.sleep(0.002)
        outs = [f.result(timeout=90) for f in futs]
    rep = s.report
    assert (rep.completed, rep.lost, rep.duplicated) == (240, 0, 0)
    with torch.inference_mode():
        assert all(torch.equal(o[0], model(x)) for o, x in zip(outs, xs, strict=True))
    (rec,) = rep.recoveries
    assert rec.device == device and device not in rec.devices
    assert rec.first_result_s is not None and rec.fault_s is not None
    assert rec.first_result_s - rec.fault_s < 10.0
    assert rep.plan["stages"][0]["devices"][0] != device or device != "a"


@pytest.mark.integration
def test_failure_while_the_first_epoch_starts_fails_over(monkeypatch):
    """A worker that dies during set-up (here: killed as soon as it is forked) is failed over
    like one that dies mid-stream."""
    from coinfer.runtime import zygote

    real = zygote.Zygote.spawn
    calls = []

    def spawn_and_kill(self, names, control):
        procs = real(self, names, control)
        if not calls:
            os.kill(procs["c"].pid, signal.SIGKILL)
        calls.append(names)
        return procs

    monkeypatch.setattr(zygote.Zygote, "spawn", spawn_and_kill)
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    with _session(plan, replan=_replan_without()) as s:
        outs = [s.submit(torch.ones(2, 64)) for _ in range(10)]
        assert all(f.result(timeout=60) is not None for f in outs)
    assert [r.device for r in s.report.recoveries] == ["c"]
    assert "c" not in calls[-1]


@pytest.mark.integration
def test_without_replan_a_failure_fails_open_requests_not_the_caller():
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    with _session(plan) as s:
        futs = [s.submit(torch.ones(2, 64)) for _ in range(400)]
        while not futs[5].done():
            time.sleep(0.01)
        s.inject("kill", "b")
        errors = 0
        for f in futs:
            try:
                f.result(timeout=60)
            except PeerError as exc:
                errors += 1
                assert "device b" in str(exc)
        with pytest.raises(PeerError, match="device b"):  # a broken session fails at once
            s.submit(torch.ones(2, 64)).result(timeout=5)
    assert s.report.lost == errors > 0 and s.report.completed == 400 - errors
    with pytest.raises(InputError, match="closed"):
        s.submit(torch.ones(2, 64))


@pytest.mark.integration
def test_a_device_comes_back_and_the_stream_is_handed_over_without_a_rerun():
    """Kill a replica, fail over, then admit it again: the new plan uses it, the stream is
    handed over (the old epoch drains, nothing is re-run or lost) and outputs stay exact."""
    model = _model()
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))

    def replan(alive):
        rest = tuple(d for d in ("b", "c") if d in alive)
        return _plan(Stage(0, 1, ("a",)), Stage(2, 4, rest)), None

    xs = [torch.randn(2, 64) for _ in range(300)]
    with _session(plan, replan=replan) as s:
        futs = []
        for i, x in enumerate(xs):
            futs.append(s.submit(x))
            if i == 60:
                while sum(f.done() for f in futs) < 20:
                    time.sleep(0.01)
                s.inject("kill", "c")
            if i == 180:
                assert "c" not in s.devices
                s.admit("c")
            time.sleep(0.004)
        outs = [f.result(timeout=90) for f in futs]
        assert "c" in s.devices
    rep = s.report
    assert (rep.completed, rep.lost, rep.duplicated) == (300, 0, 0)
    with torch.inference_mode():
        assert all(torch.equal(o[0], model(x)) for o, x in zip(outs, xs, strict=True))
    (rec,) = rep.recoveries
    (hand,) = rep.handovers
    assert rec.device == "c" and hand.error is None and "c" in hand.devices
    assert hand.switched_s is not None and hand.drained_s is not None
    assert hand.drained_s >= hand.switched_s > hand.requested_s


def _descendants(pid: int) -> list[int]:
    """Every process whose parent chain reaches ``pid`` (forked workers are the zygote's)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(p)
        except OSError:
            continue
    return alive


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_coordinator_ended_mid_stream_leaves_nothing_behind(sig):
    """SIGTERM: the coordinator cleans up and exits 143 at once; SIGKILL: nothing can clean up
    for it, so the zygote (its pipe closes) and the workers (the coordinator falls silent) leave
    on their own within the silence bound. Either way no process and no store directory stays."""
    import subprocess
    import sys

    from coinfer.runtime.liveness import COORDINATOR_SILENCE_S

    coord = subprocess.Popen(
        [sys.executable, "-m", "coinfer", "run", "tiny_cnn", "--algo", "even",
         "--arrivals", "closed", "--duration", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert coord.stderr is not None
        for line in coord.stderr:  # "epoch 0: workers ..." once they are started
            if "epoch 0" in line:
                break
        time.sleep(2.0)  # mid-stream
        procs = _descendants(coord.pid)
        assert len(procs) >= 5, "the session did not start its zygote and workers"
        coord.send_signal(sig)
        t0 = time.time()
        if sig == signal.SIGTERM:
            assert coord.wait(timeout=30) == 143
        bound = 10 if sig == signal.SIGTERM else COORDINATOR_SILENCE_S + 10
        while _alive(procs) and time.time() - t0 < bound:
            time.sleep(0.2)
        assert not _alive(procs), f"left behind: {_alive(procs)}"
    finally:
        coord.kill()
        coord.wait()
    import tempfile

    stores = [
        n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"coinfer-store-{coord.pid}-")
    ]
    if sig == signal.SIGTERM:
        assert not stores  # cleaned up by the coordinator itself


def test_report_timeline_bins_completions_and_draws_the_story(tmp_path):
    """The session report is data the report draws: completions per second in bins, with the
    recoveries and hand-overs marked."""
    from coinfer.report import session_timeline
    from coinfer.runtime.session_report import Handover, Recovery, SessionReport

    done = [0.1, 0.2, 0.3, 1.2, 1.3, 2.6]
    rep = SessionReport(
        submitted=7, completed=6, lost=1, duplicated=0, microbatch=2,
        recoveries=(Recovery("d3", "worker process died", 1, 0.5, 0.9, 1.2, 3, ("d0",), 0.45),),
        handovers=(Handover("admit d3", 2, 1.8, 2.0, 2.2, ("d0", "d3")),),
        submit_s=tuple(t - 0.05 for t in done), done_s=tuple(done), plan={},
    )  # fmt: skip
    data = rep.to_dict()
    assert data["timeline"] == {"bin_s": 0.5, "rps": [12.0, 0.0, 8.0, 0.0, 0.0, 4.0]}
    (rec,) = data["recoveries"]
    assert rec["detected_after_s"] == pytest.approx(0.05)
    assert rec["first_result_after_s"] == pytest.approx(0.75)
    out = session_timeline(data, tmp_path / "t.png", title="t")
    assert out.stat().st_size > 10_000
    with pytest.raises(InputError, match="nothing to plot"):
        session_timeline({"timeline": {"bin_s": 0.5, "rps": []}}, tmp_path / "x.png", title="x")


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill", "stop"])
def test_failure_during_the_weight_transfer_fails_over(monkeypatch, sig):
    """A worker killed or stopped just as its setup (stage weights) is being sent is failed
    over like any other: the session starts on the survivors and completes every request."""
    from coinfer.runtime import epoch as epoch_mod

    real = epoch_mod.sv.send_setups
    calls: list[int] = []

    def send_and_fail(peers, payloads, timeout_s):
        if not calls:
            os.kill(peers["c"].proc.pid, sig)
        calls.append(len(peers))
        return real(peers, payloads, timeout_s)

    monkeypatch.setattr(epoch_mod.sv, "send_setups", send_and_fail)
    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c")))
    with _session(plan, replan=_replan_without()) as s:
        futs = [s.submit(torch.ones(2, 64)) for _ in range(10)]
        assert all(f.result(timeout=60) is not None for f in futs)
    assert [r.device for r in s.report.recoveries] == ["c"]
    assert calls == [3, 2] and s.report.lost == 0


@pytest.mark.integration
def test_live_telemetry_measures_what_the_cost_model_assumes(tmp_path):
    """Every worker reports each second what it computed and sent; the records are kept and
    written as JSON lines, and they add up to what the session did."""
    import json

    plan = _plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b",)))
    path = tmp_path / "tel.jsonl"
    with _session(plan, telemetry_path=str(path)) as s:
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            s.submit(torch.ones(2, 64)).result(timeout=30)
        live = s.telemetry
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) >= len(live) >= 4  # two workers, at least two intervals each
    by_dev: dict[str, list[dict]] = {}
    for rec in lines:
        by_dev.setdefault(rec["device"], []).append(rec)
    assert set(by_dev) == {"a", "b"}
    # each request computes once on a (stage 0) and once on b (stage 1)
    done = s.report.completed
    assert sum(r["computes"] for r in by_dev["b"]) <= done
    assert sum(r["computes"] for r in by_dev["b"]) >= done * 0.5  # most fall inside reports
    link = [r["links"]["b"] for r in by_dev["a"] if "b" in r["links"]]
    assert link and all(x["bytes"] > 0 and x["busy_s"] > 0 for x in link)
    # the emulated link a->b: 1000 Mbit/s and 1 ms per transfer, so achieved <= configured
    assert all(x["achieved_Bps"] <= 1000e6 / 8 for x in link)
    assert all(0 <= r["utilisation"] <= 1.05 for r in lines)
    # and they feed the online estimate: the instance corrected by what was measured
    est = s.estimate()
    assert est is not None and est.device_names == ("a", "b", "c")
    # the MLP's 1 kB messages take ~8 us each on a 1 Gbit/s link: too short to time, so the
    # link is left as configured rather than read as slow from per-message overheads
    assert est.link_by_pair[("a", "b")].bandwidth_Bps == 1000e6 / 8
