"""The pure preparation step: a whole run decided without a process or a socket."""

from __future__ import annotations

import itertools

import pytest
import torch

from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.core.schedules import Action
from coinfer.errors import InputError
from coinfer.runtime.prepare import prepare_run
from coinfer.runtime.protocol import Setup, decode, encode
from coinfer.runtime.transport import LinkShape

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)

CLUSTER = cluster_from_yaml(
    """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.5, threads: 1}}
  - {name: b, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.75, threads: 1}}
  - {name: c, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.25, threads: 1}}
  - {name: idle, speed: {gflops: 10}, memory: 1GiB}
links:
  - {src: a, dst: b, bandwidth_mbps: 80, latency_ms: 2, bidirectional: false}
  - {src: b, dst: c, bandwidth_mbps: 8, latency_ms: 1, bidirectional: false}
  - {src: c, dst: a, bandwidth_mbps: 800, latency_ms: 3, bidirectional: false}
  - {src: a, dst: idle, bandwidth_mbps: 800, latency_ms: 3}
"""
)


def _plan(*stages: Stage) -> Plan:
    return Plan("manual", "throughput", tuple(stages), Metrics(0.0, 0.0))


def _prepare(plan: Plan, **kw):
    kw = {"requests": 6, "microbatch": 2, "input_shape": (1, 64), "partition": "sequential", **kw}
    return prepare_run(MLP, CLUSTER, plan, **kw)


def test_two_stage_run_is_decided_per_device() -> None:
    plan = _plan(Stage(0, 1, ("b",)), Stage(2, 4, ("c",)))
    prep = _prepare(plan, local_cpus=2)
    # the source comes first (rank 0) though it holds no stage; unused devices are left out
    assert prep.names == ("a", "b", "c") and dict(prep.stage_of) == {"b": 0, "c": 1}
    assert prep.computing == ("b", "c") and prep.messages == 3
    a, b, c = (prep.setups[d] for d in prep.names)
    assert (a.rank, b.rank, c.rank) == (0, 1, 2)
    assert a.stage is None and (b.stage.index, c.stage.index) == (0, 1)
    assert b.stage.spec["cuts"] == list(plan.cuts) and b.stage.spec["partition"] == "sequential"
    # contracts: 2-sample micro-batches of the (1, 64) input, the 2nd child's output, the output
    first, cut, out = prep.contracts
    assert [m.shape for m in first] == [(2, 64)]
    assert cut[0].shape[0] == 2 and out[0].shape == (2, 10)
    # only the source runs the client: it sends every request to b and hears back from c
    assert a.is_source and not b.is_source and not c.is_source
    client = [Action.parse(x) for x in a.client_actions]
    assert {x.peer for x in client if x.kind == "send"} == {"b"}
    assert set(a.last_device.values()) == {"c"}
    # stage work: b receives from a, computes stage 0, sends to c; every request, in order
    first3 = [Action.parse(x) for x in b.actions[:3]]
    assert [(x.kind, x.request, x.peer) for x in first3] == [
        ("recv", 0, "a"), ("compute", 0, None), ("send", 0, "c")
    ]  # fmt: skip
    assert sum(1 for x in b.actions if x.startswith("C")) == prep.messages
    assert {x.peer for x in (Action.parse(y) for y in c.actions) if x.kind == "recv"} == {"b"}
    # emulation: quotas as in the cluster; single-thread quota'd workers pinned to a CPU
    assert (b.emulate.cpu_quota, c.emulate.threads) == (0.75, 1)
    assert {a.emulate.cpu, b.emulate.cpu, c.emulate.cpu} <= {0, 1}
    # blobs: weights to stage holders, the inputs to the source only
    assert len(prep.blobs["a"]) == 1 and len(prep.blobs["b"]) == 1 and len(prep.blobs["c"]) == 1
    # the inputs the outputs will be checked against: 3 micro-batches of 2 samples
    assert [tuple(t.shape) for ts in prep.msg_inputs for t in ts] == [(2, 64)] * 3


def test_links_are_the_cheapest_paths_and_fill_in_at_start() -> None:
    prep = _prepare(_plan(Stage(0, 1, ("b",)), Stage(2, 4, ("c",))))
    # only direct links are emulated: a -> c has none, its transfers are relayed via b
    assert set(prep.shapes["a"]) == {"b"} and set(prep.shapes["b"]) == {"c"}
    assert prep.shapes["c"]["a"] == LinkShape(100e6, 0.003)
    s = prep.setup_for("a", "run1", ("127.0.0.1", 99))
    assert (s.run_id, s.store) == ("run1", ("127.0.0.1", 99))
    assert s.links["b"] == {"bandwidth_Bps": 10e6, "latency_s": 0.002}
    other = {"a": {"b": LinkShape(None, 0.0)}}
    assert prep.setup_for("a", "run1", ("h", 1), other).links == {
        "b": {"bandwidth_Bps": None, "latency_s": 0.0}
    }
    # what is sent is a valid protocol message
    assert decode(encode(s)) == s and isinstance(decode(encode(s)), Setup)


def test_replicas_share_the_requests() -> None:
    prep = _prepare(_plan(Stage(0, 1, ("a",)), Stage(2, 4, ("b", "c"))), requests=8, microbatch=1)
    assert prep.setups["b"].stage.index == prep.setups["c"].stage.index == 1
    served = {d: sum(1 for x in prep.setups[d].actions if x.startswith("C")) for d in "bc"}
    assert served["b"] + served["c"] == 8 and min(served.values()) >= 1
    assert prep.check_threads == 1


@pytest.mark.parametrize(
    ("plan", "kw", "match"),
    [
        (_plan(Stage(0, 4, ("zz",))), {}, "device 'zz'"),
        (_plan(Stage(0, 2, ("b",))), {}, "plan covers pieces 0-2"),
        (_plan(Stage(0, 4, ("b",))), {"requests": 5}, "multiple of --microbatch 2"),
        (_plan(Stage(1, 4, ("b",))), {}, "expected to start at piece 0"),
    ],
)
def test_bad_runs_are_refused_before_anything_starts(plan, kw, match) -> None:
    with pytest.raises(InputError, match=match):
        _prepare(plan, **kw)


def test_inputs_are_deterministic_in_the_seed() -> None:
    p1 = _prepare(_plan(Stage(0, 4, ("b",))), seed=3)
    p2 = _prepare(_plan(Stage(0, 4, ("b",))), seed=3)
    p3 = _prepare(_plan(Stage(0, 4, ("b",))), seed=4)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(p1.msg_inputs, p2.msg_inputs, strict=True))
    assert not torch.equal(p1.msg_inputs[0][0], p3.msg_inputs[0][0])


def test_transfers_take_the_priced_path_through_a_relay() -> None:
    """a -> c has no link: the cost model prices a -> b -> c, so b (in no stage) relays."""
    prep = _prepare(_plan(Stage(0, 1, ("a",)), Stage(2, 4, ("c",))), requests=4, microbatch=1)
    assert prep.names == ("a", "c", "b") and "b" not in prep.stage_of
    a, c, b = (prep.setups[d] for d in prep.names)
    sends = [Action.parse(x) for x in a.actions if x.startswith("S")]
    recvs = [Action.parse(x) for x in c.actions if x.startswith("R")]
    assert sends and all(x.peer == "b" for x in sends)  # a hands its cut to the first hop
    assert recvs and all(x.peer == "b" for x in recvs)  # c hears it from the last hop
    # b forwards every request's stage-1 input from a to c, in a's order, tag unchanged
    assert [tuple(x) for x in b.relays] == [(r, 1, "a", "c", "a>c") for r in range(4)]
    assert not b.actions and b.stage is None
    # the output c -> a has a direct link (the cheapest path): no relay, the client hears c
    assert set(a.last_device.values()) == {"c"}
    assert decode(encode(b)) == b


def test_routes_match_the_instance_paths() -> None:
    """Every hop sequence the runtime will use is the path the simulator charges."""
    from coinfer.runtime.prepare import fallback_instance
    from coinfer.runtime.relays import hop_route

    plan = _plan(Stage(0, 1, ("b",)), Stage(2, 4, ("c",)))
    prep = _prepare(plan, requests=4, microbatch=1)
    inst = fallback_instance(CLUSTER, plan, prep.contracts, 5)
    for u, v in [("a", "c"), ("b", "a"), ("c", "b")]:
        hops = hop_route(inst, u, v, 1000)
        path = inst.path(u, v, 1000)
        assert hops == (u, *(lk.dst for lk in path))
        assert all((x, y) in inst.link_by_pair for x, y in itertools.pairwise(hops))


def test_dvfs_level_scales_the_device_quota() -> None:
    """A plan running b at half frequency runs its worker at half its quota (time x 2, as priced)."""
    cl = cluster_from_yaml(
        """
name: t
source: a
devices:
  - {name: a, speed: {gflops: 10}, memory: 1GiB}
  - {name: b, speed: {gflops: 10}, memory: 1GiB, dvfs_levels: [0.5, 1.0],
     emulate: {cpu_quota: 0.75, threads: 1}}
  - {name: c, speed: {gflops: 10}, memory: 1GiB, emulate: {cpu_quota: 0.25, threads: 1}}
links:
  - {src: a, dst: b, bandwidth_mbps: 80, latency_ms: 2}
  - {src: b, dst: c, bandwidth_mbps: 80, latency_ms: 2}
  - {src: c, dst: a, bandwidth_mbps: 80, latency_ms: 2}
"""
    )
    plan = _plan(Stage(0, 1, ("b",), freqs=(0.5,)), Stage(2, 4, ("c",)))
    prep = prepare_run(MLP, cl, plan, requests=4, input_shape=(1, 64), partition="sequential")
    b, c = prep.setups["b"].emulate, prep.setups["c"].emulate
    assert (b.cpu_quota, b.freq) == (pytest.approx(0.375), 0.5)  # 0.75 core x 0.5
    assert (c.cpu_quota, c.freq) == (0.25, 1.0)
    assert prep.setups["a"].emulate.freq == 1.0  # the source holds no stage


def test_measured_energy_follows_the_cost_model_definition() -> None:
    from coinfer.core.instance import Device
    from coinfer.core.trace import TraceEvent
    from coinfer.runtime.results import measured_energy

    devs = {
        "a": Device("a", 1 << 30, power_idle_w=2.0, power_active_w=10.0, power_transmit_w=1.0),
        "b": Device("b", 1 << 30, power_idle_w=1.0, power_active_w=5.0, power_transmit_w=0.5),
    }
    trace = [
        TraceEvent("a", "compute", 0, 0.0, 0.1, 0),
        TraceEvent("b", "compute", 0, 0.2, 0.4, 1),
        TraceEvent("a->b", "transfer", 0, 0.1, 0.15, 1),
        TraceEvent("a", "compute", 1, 0.1, 0.2, 0),
        TraceEvent("b", "compute", 1, 0.4, 0.6, 1),
        TraceEvent("a->b", "transfer", 1, 0.2, 0.25, 1),
    ]
    freqs = {(0, "a"): 1.0, (1, "b"): 0.5}
    # a: 0.2 s x 10 W; b: 0.4 s x (1 + 4 x 0.5^3) W; a->b: 0.1 s x 1 W; over 2 requests
    want = (0.2 * 10.0 + 0.4 * (1.0 + 4.0 * 0.125) + 0.1 * 1.0) / 2
    assert measured_energy(trace, devs, freqs, 2) == pytest.approx(want)
    bare = {"a": Device("a", 1 << 30), "b": Device("b", 1 << 30)}
    assert measured_energy(trace, bare, freqs, 2) is None  # no power figures: no estimate
