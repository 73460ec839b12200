"""Transport: contracts (pure) and real two-process gloo transfers with link emulation."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import socket
import time
from typing import Any

import pytest
import torch
import torch.distributed as dist

from coinfer.errors import InputError, PeerError
from coinfer.runtime.sendorder import SendOrder
from coinfer.runtime.transport import LinkShape, Transport, WireTensorSpec, init_process_group


def test_meta_roundtrip_and_check():
    t = torch.zeros(2, 3, dtype=torch.float16)
    m = WireTensorSpec.of(t)
    assert m == WireTensorSpec((2, 3), "float16")
    assert WireTensorSpec.from_list(m.to_list()) == m
    assert m.nbytes == 12
    m.check(t, "here")
    with pytest.raises(InputError, match="breaks the cut contract"):
        m.check(torch.zeros(2, 4, dtype=torch.float16), "here")
    with pytest.raises(InputError, match="unsupported tensor dtype"):
        WireTensorSpec.from_list([[1], "complex32"])


def test_link_delay():
    assert LinkShape().delay_s(10**6) == 0.0
    assert LinkShape(1e6, 0.01).delay_s(10**6) == pytest.approx(1.01)
    assert LinkShape.from_dict(LinkShape(2e6, 0.5).to_dict()) == LinkShape(2e6, 0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peer(rank: int, port: int, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    init_process_group(rank, 2, "127.0.0.1", port, 30)
    metas = [WireTensorSpec((4, 5), "float32"), WireTensorSpec((3,), "int64")]
    if rank == 0:
        tr = Transport(0, ["a", "b"], {1: LinkShape(None, 0.05)}, timeout_s=20)
        t0 = time.time()
        for m in range(3):
            tr.send(1, m, [torch.full((4, 5), float(m)), torch.arange(3) + m], metas)
        tr.flush()
        out.put(("sent", time.time() - t0))
    else:
        tr = Transport(1, ["a", "b"], {}, timeout_s=20)
        pend = [tr.post_recv(0, m, metas) for m in (2, 0, 1)]  # posted out of order, matched by tag
        got = {p.message: p.wait(20) for p in pend}
        ok = all(
            float(got[m][0].max()) == m and got[m][1].tolist() == [m, m + 1, m + 2]
            for m in range(3)
        )
        out.put(("recv", ok))
    dist.barrier()
    dist.destroy_process_group()


def _two_processes(target: Any, wait_s: float = 60) -> dict[str, Any]:
    """Run ``target(rank, port, queue)`` as ranks 0 and 1; their reports by key."""
    port = _free_port()
    store = dist.TCPStore(
        "127.0.0.1", port, world_size=None, is_master=True, timeout=dt.timedelta(seconds=30)
    )
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = dict(q.get(timeout=wait_s) for _ in range(2))
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    del store
    return res


@pytest.mark.integration
def test_two_process_transfer_with_latency():
    res = _two_processes(_peer)
    assert res["recv"] is True
    assert res["sent"] >= 3 * 0.05  # each message held the emulated link for its latency


def test_a_probe_holds_an_emulated_link_and_is_logged_not_sent(tmp_path):
    from coinfer.runtime.media import MediumClock
    from coinfer.runtime.transport import PROBE_BYTES, PROBE_MESSAGE, LinkShape, Transport

    shape = LinkShape(bandwidth_Bps=50e6, latency_s=0.002)
    air = LinkShape(bandwidth_Bps=50e6, latency_s=0.002, medium="wifi")
    clock = MediumClock(str(tmp_path / "wifi.clock"))
    t = Transport(0, ("a", "b", "c", "d"), {1: shape, 2: LinkShape(), 3: air},
                  timeout_s=5.0, clocks={"wifi": clock})  # fmt: skip
    assert t.probe(1) is True
    assert t.probe(2) is False  # unshaped: only real traffic measures it
    assert t.probe(3) is False  # a shared medium's airtime is not spent on probes
    assert t.probe(7) is False  # no link at all
    t.flush()  # no process group exists: a probe never touches the wire
    (ev,) = t.events
    assert (ev.kind, ev.message, ev.peer, ev.nbytes) == ("send", PROBE_MESSAGE, 1, PROBE_BYTES)
    assert ev.hold_s == pytest.approx(0.002 + PROBE_BYTES / 50e6)
    assert ev.end_s - ev.start_s >= 0.9 * ev.hold_s  # the link was really held that long


def _out_of_order_peer(rank: int, port: int, out: mp.Queue) -> None:
    """Rank 0 queues message 1 before message 0; rank 1 posts (and waits for) 0 first, as a
    receiver does whose earlier input comes later on the same link (a relayed flow merging
    with the sender's own outputs). The sender knows the receiver's order (``order``)."""
    torch.set_num_threads(1)
    init_process_group(rank, 2, "127.0.0.1", port, 30)
    metas = [WireTensorSpec((1 << 20,), "float32")]  # 4 MiB: gloo waits for the posted receive
    try:
        if rank == 0:
            tr = Transport(0, ["a", "b"], {}, timeout_s=20, orders={1: SendOrder(((0, 1),))})
            for m in (1, 0):
                tr.send(1, m, [torch.full((1 << 20,), float(m))], metas)
            tr.flush()
            out.put(("sent", True))
        else:
            tr = Transport(1, ["a", "b"], {}, timeout_s=20)
            first = tr.post_recv(0, 0, metas).wait(8)  # message 1 is not posted yet
            second = tr.post_recv(0, 1, metas).wait(8)
            out.put(("recv", float(first[0][0]) == 0.0 and float(second[0][0]) == 1.0))
    except Exception as exc:  # reported to the test, which names it
        out.put(("recv" if rank else "sent", f"{type(exc).__name__}: {exc}"))
    dist.destroy_process_group()


@pytest.mark.integration
def test_a_message_queued_before_one_the_receiver_waits_for_does_not_block_the_link():
    res = _two_processes(_out_of_order_peer, wait_s=90)
    assert res["recv"] is True, res
    assert res["sent"] is True, res


def test_a_message_whose_predecessor_never_comes_is_a_named_failure_not_a_hang():
    """The orders are the coordinator's promise; if one is broken the run fails at the flush,
    naming the message, instead of leaving it unsent."""
    metas = [WireTensorSpec((4,), "float32")]
    t = Transport(0, ("a", "b"), {}, timeout_s=5.0, orders={1: SendOrder(((6, 7),))},
                  label=lambda m: f"message {m}")  # fmt: skip
    t.send(1, 7, [torch.zeros(4)], metas)  # held: 6 goes first, and never comes
    with pytest.raises(
        PeerError, match=r"sending to b failed: message 7 \(1 held\) never became the next"
    ):
        t.flush()
