"""What a run reports, computed from hand-built worker reports (no processes)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coinfer.errors import PeerError
from coinfer.runtime.ledger import Completion
from coinfer.runtime.results import (
    build_result,
    measured_links,
    output_errors,
    reference_outputs,
    trace_events,
)
from coinfer.runtime.transport import LinkShape


def _xfer(src: str, dst: str, request: int, start: float, nbytes: float, stage: int = 1) -> dict:
    return {"resource": f"{src}->{dst}", "kind": "transfer", "request": request,
            "start_s": start, "end_s": start, "stage": stage, "nbytes": nbytes}  # fmt: skip


def test_measured_bandwidth_counts_queueing_behind_the_previous_transfer() -> None:
    shapes = {"a": {"b": LinkShape(1e6, 0.01)}}
    trace = [_xfer("a", "b", 0, 0.0, 1e5), _xfer("a", "b", 1, 0.0, 1e5)]
    # both posted at t=0: the first arrives at 0.11 s (0.01 latency + 0.1 s of bytes), the second
    # queued behind it and arrives at 0.21 s, so it held the link only from 0.11 to 0.21
    arrivals = {("a", "b", 0, 1): 0.11, ("a", "b", 1, 1): 0.21}
    got = measured_links(trace, arrivals, shapes)["a->b"]
    assert got["transfers"] == 2 and got["bytes"] == 2e5
    # occupancy = (0.11 - 0.01) + (0.21 - 0.11) = 0.2 s for 200 kB: the emulated 1 MB/s
    assert got["measured_Bps"] == pytest.approx(1e6)
    assert got["nominal_Bps"] == 1e6


def test_unshaped_links_and_unmatched_transfers() -> None:
    trace = [_xfer("b", "a", 0, 1.0, 4e3), _xfer("b", "a", 1, 1.0, 4e3)]
    arrivals = {("b", "a", 0, 1): 1.002}  # request 1's arrival was never reported: not counted
    got = measured_links(trace, arrivals, {})["b->a"]
    assert got["transfers"] == 1 and got["measured_Bps"] == pytest.approx(4e3 / 0.002)
    assert math.isnan(got["nominal_Bps"])
    assert measured_links([{"kind": "compute", "resource": "a"}], {}, {}) == {}


def test_every_output_of_every_microbatch_is_compared() -> None:
    ref = {0: [torch.zeros(2, 3), torch.ones(2)], 1: [torch.zeros(2, 3), torch.ones(2)]}
    same = {m: [t.clone() for t in ts] for m, ts in ref.items()}
    assert output_errors(ref.__getitem__, same.__getitem__, 2) == 0.0
    # a wrong SECOND output of the LAST micro-batch must show (the old check read only output 0)
    bad = {0: same[0], 1: [same[1][0], torch.tensor([1.0, 1.25])]}
    assert output_errors(ref.__getitem__, bad.__getitem__, 2) == 0.25
    with pytest.raises(PeerError, match="micro-batch 1 returned 1 outputs, the model has 2"):
        output_errors(ref.__getitem__, {0: same[0], 1: same[1][:1]}.__getitem__, 2)
    with pytest.raises(PeerError, match=r"output 1 of micro-batch 0 has shape \(3,\)"):
        output_errors(ref.__getitem__, {0: [same[0][0], torch.ones(3)]}.__getitem__, 1)


class _TwoHeads(nn.Module):
    def forward(self, x: torch.Tensor):
        return {"sum": x.sum(dim=1), "both": (x * 2, x[:, :1])}


def test_reference_outputs_flatten_like_the_stages() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    outs = reference_outputs(_TwoHeads(), [x])
    assert [tuple(t.shape) for t in outs] == [(2,), (2, 3), (2, 1)]
    assert torch.equal(outs[1], x * 2)


def test_result_puts_everything_on_one_clock() -> None:
    comps = [Completion(m, 10.0 + m, 10.5 + m) for m in range(12)]
    trace = [{"resource": "b", "kind": "compute", "request": 0, "start_s": 10.1, "end_s": 10.3}]
    r = build_result(
        requests=24,
        microbatch=2,
        completions=comps,
        outputs=(torch.zeros(24, 10),),
        max_abs_error=0.0,
        trace=trace,
        busy_s={"b": 2.3, "c": 0.0},
        computing=("b", "c"),
        emulation={"b": {"mode": "cgroup"}},
        stages=((0, 4, ("b",)),),
        links={},
        netns=False,
    )
    # completions every 1 s from 10.5 to 21.5: wall 11.5 s from the first release, period 1 s
    assert r.wall_s == pytest.approx(11.5) and r.period_s == pytest.approx(1.0)
    assert r.throughput_rps == pytest.approx(2.0)  # 2 samples per micro-batch per second
    assert r.latency_p50_s == pytest.approx(0.5) and r.latency_p95_s == pytest.approx(0.5)
    assert r.utilisation == {"b": pytest.approx(2.3 / 11.5), "c": 0.0}
    (ev,) = r.trace
    assert (ev.start_s, ev.end_s) == (pytest.approx(0.1), pytest.approx(0.3))
    assert r.outputs is not None and r.outputs.shape == (24, 10) and r.emulation_mode == "cgroup"
    d = r.to_dict()
    assert d["trace"][0]["resource"] == "b" and d["emulation_mode"] == "cgroup"


def test_trace_events_sorted_by_start() -> None:
    raw = [{"resource": "x", "kind": "compute", "request": 1, "start_s": 5.0, "end_s": 6.0},
           {"resource": "y", "kind": "compute", "request": 0, "start_s": 4.0, "end_s": 4.5}]  # fmt: skip
    evs = trace_events(raw, 4.0)
    assert [(e.resource, e.start_s) for e in evs] == [("y", 0.0), ("x", 1.0)]
