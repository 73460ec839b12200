"""The batcher, in-process against a fake session (a stand-in for the runtime's Session with
the same ``submit -> Future`` contract): grouping, padding, splitting, back-pressure,
failures and draining."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
import torch

from coinfer.errors import PeerError
from coinfer.serve.batcher import (
    DEFAULT_WAIT_S,
    MAX_WAIT_S,
    Batcher,
    QueueFull,
    Unavailable,
    batch_wait_s,
)
from coinfer.serve.codecs import SampleSpec

SPEC = (SampleSpec((3,), torch.float32),)


class FakeSession:
    """Records every micro-batch; answers ``x * 10`` (per row, so slicing errors show) at
    once, or holds the futures when ``hold`` is set."""

    def __init__(self, hold: bool = False, fail: BaseException | None = None):
        self.batches: list[torch.Tensor] = []
        self.futures: list[Future] = []
        self.hold = hold
        self.fail = fail
        self.lock = threading.Lock()

    def submit(self, inputs):
        (x,) = inputs
        fut: Future = Future()
        with self.lock:
            self.batches.append(x.clone())
            self.futures.append(fut)
        if self.fail is not None:
            fut.set_exception(self.fail)
        elif not self.hold:
            fut.set_result([x * 10])
        return fut

    def release(self):
        with self.lock:
            pending = [
                (f, b) for f, b in zip(self.futures, self.batches, strict=True) if not f.done()
            ]
        for f, b in pending:
            f.set_result([b * 10])


def _rows(n: int, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32).repeat_interleave(3).reshape(n, 3)


def _batcher(session, **kw):
    opts = {"capacity": 32, "max_inflight": 4, "wait_s": 0.02} | kw
    return Batcher(session, 4, SPEC, **opts)


def test_requests_are_grouped_into_full_microbatches():
    s = FakeSession(hold=True)
    b = _batcher(s, max_inflight=1, wait_s=2.0)  # long: only full micro-batches go
    futs = [b.submit([_rows(2, 2 * i)]) for i in range(4)]  # 8 samples: two full batches
    time.sleep(0.1)
    s.release()
    time.sleep(0.05)
    s.release()
    outs = [f.result(timeout=2)[0] for f in futs]
    for i, o in enumerate(outs):
        assert torch.equal(o, _rows(2, 2 * i) * 10)
    assert [bt.shape[0] for bt in s.batches] == [4, 4]
    assert b.microbatches_full == 2 and b.microbatches_padded == 0
    b.close(1)


def test_a_partial_batch_is_padded_after_the_wait_and_padding_dropped():
    s = FakeSession()
    b = _batcher(s, wait_s=0.03)
    t0 = time.monotonic()
    (out,) = b.submit([_rows(1, 7)]).result(timeout=2)
    waited = time.monotonic() - t0
    assert torch.equal(out, _rows(1, 7) * 10) and out.shape == (1, 3)
    (batch,) = s.batches
    assert batch.shape == (4, 3) and torch.equal(batch[1:], torch.zeros(3, 3))
    assert waited >= 0.025
    assert (b.microbatches_padded, b.padding_samples) == (1, 3)
    b.close(1)


def test_a_large_request_spans_microbatches_and_comes_back_in_order():
    s = FakeSession()
    b = _batcher(s, wait_s=0.3)  # f1 waits for f2 even on a loaded machine
    f1 = b.submit([_rows(3, 0)])
    f2 = b.submit([_rows(7, 100)])  # 3 + 7 = 10 samples: 4 | 4 | 2 (+2 padding)
    assert torch.equal(f1.result(timeout=2)[0], _rows(3, 0) * 10)
    assert torch.equal(f2.result(timeout=2)[0], _rows(7, 100) * 10)
    assert [bt.shape[0] for bt in s.batches] == [4, 4, 4]
    assert torch.equal(s.batches[0][3], _rows(1, 100)[0])  # f2's first sample rode along
    b.close(1)


def test_a_full_queue_answers_queue_full_with_a_retry_hint():
    s = FakeSession(hold=True)
    b = _batcher(s, capacity=8, max_inflight=1, expected_rate=4.0)
    first = b.submit([_rows(4)])  # goes in flight at once
    time.sleep(0.05)
    waiting = [b.submit([_rows(4)]), b.submit([_rows(4)])]  # 8 samples wait: full
    with pytest.raises(QueueFull, match="queue full") as err:
        b.submit([_rows(1)])
    assert err.value.retry_after_s == pytest.approx(1 / 4.0)  # 1 sample over, at 4 samples/s
    with pytest.raises(QueueFull, match="capacity"):
        b.submit([_rows(9)])  # can never fit
    for _ in range(3):
        s.release()
        time.sleep(0.05)
    assert all(f.result(timeout=2) for f in [first, *waiting])
    b.close(1)


def test_inflight_is_bounded_and_a_busy_pipeline_batches_instead_of_padding():
    s = FakeSession(hold=True)
    b = _batcher(s, max_inflight=1, wait_s=0.0)
    futs = [b.submit([_rows(1, i)]) for i in range(1)]
    time.sleep(0.05)
    futs += [b.submit([_rows(1, i)]) for i in range(1, 5)]  # arrive while one is in flight
    time.sleep(0.05)
    assert len(s.batches) == 1 and b.inflight == 1 and b.queued_samples == 4
    s.release()
    time.sleep(0.05)
    s.release()
    for i, f in enumerate(futs):
        assert torch.equal(f.result(timeout=2)[0], _rows(1, i) * 10)
    assert [int((bt.sum(1) != 0).sum()) for bt in s.batches] == [0, 4]  # row 0 is zeros
    assert b.microbatches_full == 1
    b.close(1)


def test_a_session_failure_fails_the_batch_and_then_refuses_requests():
    s = FakeSession(fail=PeerError("device b: killed; no device left to fail over to"))
    b = _batcher(s, wait_s=0.0)
    fut = b.submit([_rows(2)])
    with pytest.raises(Unavailable, match="session failed: device b"):
        fut.result(timeout=2)
    time.sleep(0.02)
    assert b.failure is not None
    with pytest.raises(Unavailable, match="device b"):
        b.submit([_rows(1)])
    b.close(1)


def test_outputs_without_the_batch_dimension_fail_clearly():
    class Scalar(FakeSession):
        def submit(self, inputs):
            fut: Future = Future()
            fut.set_result([inputs[0].sum()])
            return fut

    b = _batcher(Scalar(), wait_s=0.0)
    with pytest.raises(Unavailable, match="not batch-first"):
        b.submit([_rows(1)]).result(timeout=2)
    b.close(1)


def test_close_sends_partial_batches_at_once_and_refuses_new_requests():
    s = FakeSession()
    b = _batcher(s, wait_s=5.0)  # a long wait: only the drain sends it
    fut = b.submit([_rows(1, 3)])
    t0 = time.monotonic()
    b.close(2)
    assert time.monotonic() - t0 < 1.0
    assert torch.equal(fut.result(timeout=0)[0], _rows(1, 3) * 10)
    with pytest.raises(Unavailable, match="shutting down"):
        b.submit([_rows(1)])


def test_close_fails_what_cannot_finish_in_time():
    s = FakeSession(hold=True)
    b = _batcher(s, max_inflight=1, wait_s=0.0)
    b.submit([_rows(4)])
    late = b.submit([_rows(1)])
    b.close(0.2)
    with pytest.raises(Unavailable, match="shut down"):
        late.result(timeout=0)


def test_batch_wait_from_the_slo():
    assert batch_wait_s(None, 0.5) == DEFAULT_WAIT_S
    assert batch_wait_s(0.1, 0.06) == pytest.approx(0.02)
    assert batch_wait_s(0.1, 0.2) == 0.0
    assert batch_wait_s(10.0, None) == MAX_WAIT_S


def test_throughput_counts_recent_samples():
    clock = [100.0]
    s = FakeSession()
    b = Batcher(s, 4, SPEC, capacity=16, max_inflight=2, wait_s=0.0, clock=lambda: clock[0])
    b.submit([_rows(4)]).result(timeout=2)
    clock[0] += 2.0
    b.submit([_rows(4)]).result(timeout=2)
    sps, mbps = b.throughput()
    assert sps == pytest.approx(8 / 2.0) and mbps == pytest.approx(2 / 2.0)
    clock[0] += 100.0
    assert b.throughput() == (0.0, 0.0)
    b.close(1)
