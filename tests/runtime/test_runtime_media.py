"""Shared media on the emulated testbed: the cross-process reservation clock, the per-hop shapes,
the measured per-medium figures, and real runs whose transfers over a medium take turns."""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os

import pytest

from coinfer.cluster import cluster_from_yaml
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.runtime import media, run
from coinfer.runtime.prepare import link_shapes
from coinfer.runtime.results import measured_links
from coinfer.runtime.transport import LinkShape

WIDE = os.path.join(os.path.dirname(__file__), "runtime_models.py") + ":wide"


def _book(path: str, n: int, dur: float, out) -> None:  # type: ignore[no-untyped-def]
    clock = media.MediumClock(path)
    out.put([clock.reserve(dur) for _ in range(n)])
    clock.close()


def test_reservations_from_several_processes_never_overlap(tmp_path) -> None:
    path = str(tmp_path / "clock")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_book, args=(path, 40, 0.001, out)) for _ in range(3)]
    for p in procs:
        p.start()
    starts = sorted(s for _ in procs for s in out.get(timeout=60))
    for p in procs:
        p.join(timeout=30)
    assert len(starts) == 120
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert (
        min(gaps) >= 0.001 - 1e-6
    )  # each booking starts after the previous one ends (epoch-time floats)


def test_clock_files_are_named_per_run_and_removed(tmp_path) -> None:
    a, b = media.clock_path("run1", "wifi"), media.clock_path("run1", "../etc/passwd")
    assert os.path.dirname(a) == os.path.dirname(b) and "/" not in os.path.basename(b)[15:]
    media.MediumClock(a).close()
    assert os.path.exists(a)
    media.cleanup("run1")
    assert not os.path.exists(a)


def test_link_shapes_carry_the_medium() -> None:
    shapes = link_shapes(
        [("a", "b", 1e6, 0.001, "air"), ("b", "a", 1e6, 0.001, "air"), ("a", "c", 5e6, 0.0)],
        ["a", "b", "c"],
    )
    assert shapes["a"]["b"] == LinkShape(1e6, 0.001, "air")
    assert shapes["a"]["c"].medium is None
    assert LinkShape.from_dict(shapes["b"]["a"].to_dict()) == shapes["b"]["a"]


def test_measured_links_sequence_a_medium_across_directions() -> None:
    shapes = {"a": {"b": LinkShape(1e6, 0.0, "air")}, "b": {"a": LinkShape(1e6, 0.0, "air")}}
    late = {"a": {"b": LinkShape(1e6, 0.25, "air")}, "b": {"a": LinkShape(1e6, 0.25, "air")}}
    trace = [  # a->b from 0 to 1 s, b->a queued behind it (sent at 0.5, done at 2)
        {"kind": "transfer", "resource": "a->b", "start_s": 0.0, "end_s": 1.0, "nbytes": 1e6,
         "request": 0, "stage": 1},
        {"kind": "transfer", "resource": "b->a", "start_s": 0.5, "end_s": 2.0, "nbytes": 1e6,
         "request": 0, "stage": 2},
    ]  # fmt: skip
    links = measured_links(trace, {}, shapes, ends="sender")
    assert links["air<->"]["busy_s"] == pytest.approx(2.0)
    assert links["air<->"]["measured_Bps"] == pytest.approx(1e6)  # the configured rate
    assert links["b->a"]["busy_s"] == pytest.approx(1.0)  # not 1.5: it queued for the air
    assert links["b->a"]["nominal_Bps"] == 1e6 and links["air<->"]["nominal_Bps"] == 1e6
    # with 0.25 s of emulated latency per hop: held 2 s in all, moving bytes 1.75 s of it
    lat = measured_links(trace, {}, late, ends="sender")["air<->"]
    assert lat["busy_s"] == pytest.approx(2.0)
    assert lat["measured_Bps"] == pytest.approx(2e6 / 1.75)


# a feeds the 64 KiB cut to replicas b and c, which send the logits back
FAN_OUT = Plan(
    "manual", "throughput", (Stage(0, 1, ("a",)), Stage(2, 2, ("b", "c"))), Metrics(0.0, 0.0)
)


def _cluster(shared: bool):
    devices = "\n".join(
        f"  - {{name: {n}, speed: {{gflops: 10}}, memory: 1GiB, emulate: {{cpu_quota: 1.0, threads: 1}}}}"
        for n in "abc"
    )
    net = (
        "media:\n  - {name: air, members: [a, b, c], bandwidth_mbps: 20, latency_ms: 1}\n"
        if shared
        else "links:\n"
        + "".join(
            f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 20, latency_ms: 1}}\n"
            for u, v in (("a", "b"), ("a", "c"), ("b", "c"))
        )
    )
    return cluster_from_yaml(f"name: t\nsource: a\ndevices:\n{devices}\n{net}")


@pytest.mark.integration
def test_transfers_over_a_medium_take_turns_across_processes() -> None:
    """a sends 64 KiB to replicas b and c; with independent links both sends overlap, on one
    medium every hop (a->b, a->c, and b->a, c->a from other processes) waits for the air."""
    results = {}
    for shared in (True, False):
        results[shared] = run(
            WIDE,
            _cluster(shared),
            FAN_OUT,
            requests=24,
            input_shape=(1, 32),
            partition="sequential",
            timeout_s=60,
        )
        assert results[shared].max_abs_error == 0.0
    shapes = {("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")}
    nbytes = {"a": 16384 * 4, "b": 10 * 4, "c": 10 * 4}  # the 64 KiB cut out, the logits back
    hops = sorted(
        (e.start_s, e.start_s + 0.001 + nbytes[e.resource[0]] / 2.5e6, e.resource)
        for e in results[True].trace
        if e.kind == "transfer" and tuple(e.resource.split("->")) in shapes
    )
    assert {h[2] for h in hops} >= {"a->b", "a->c", "b->a", "c->a"}
    for (_, end, _), (start, _, _) in itertools.pairwise(hops):
        # no two emulated transfers hold the medium at once (1 ms: the workers' clock alignment)
        assert start >= end - 1e-3
    overlapping = sorted(
        (e.start_s, e.end_s)
        for e in results[False].trace
        if e.kind == "transfer" and e.resource in ("a->b", "a->c")
    )
    assert any(b[0] < a[1] for a, b in itertools.pairwise(overlapping))
    assert "air<->" in results[True].links and not math.isnan(
        results[True].links["air<->"]["nominal_Bps"]
    )


def _netns_ok() -> bool:
    from coinfer.runtime.netns import netns_available

    return netns_available()[0]


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.skipif(not _netns_ok(), reason="needs root + ip/tc for network namespaces")
def test_netns_medium_is_one_shaped_bottleneck() -> None:
    """With --netns the medium is one shaped ifb in the hub: a's sends to b and c share 20 Mbit/s
    instead of getting 20 each (the sequenced figure would read ~2x the rate if they did not)."""
    r = run(
        WIDE,
        _cluster(True),
        FAN_OUT,
        requests=16,
        input_shape=(1, 32),
        partition="sequential",
        netns=True,
        timeout_s=60,
    )
    assert r.max_abs_error == 0.0 and r.network.startswith("netns")
    air = r.links["air<->"]
    assert air["transfers"] >= 32
    assert 0.5 * air["nominal_Bps"] <= air["measured_Bps"] <= 1.25 * air["nominal_Bps"]
