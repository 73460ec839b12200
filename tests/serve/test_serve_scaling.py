"""Quart's scaling for real: a served session whose only stage is slow is loaded until the
scaler replicates it on an idle device (workers forked from the zygote's parameter cache), then
the load stops and the replica is dropped again — every output exact, nothing lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from coinfer.core.instance import Device, Link, make_instance
from coinfer.core.plans import Metrics, Plan, Stage
from coinfer.core.scaling import ScalingPolicy
from coinfer.serve.scaler import Scaler
from coinfer.serve.service import ServeOptions, open_service
from coinfer.zoo import load_model

MLP = "coinfer.zoo.tiny:tiny_mlp"  # nn.Sequential of 5 children, input (1, 64)
MB = 2
BASE = Plan("manual", "throughput", (Stage(0, 4, ("b",)),), Metrics(0.0, 0.0))


def _cluster():
    """b and c are slow (a small CPU quota), so the one stage on b is the bottleneck."""
    from coinfer.cluster import cluster_from_yaml

    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, "
        f"emulate: {{cpu_quota: {q}, threads: 1}}}}"
        for d, q in (("a", 1.0), ("b", 0.02), ("c", 0.02))
    )
    links = "\n".join(
        f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 1000, latency_ms: 1}}"
        for u, v in (("a", "b"), ("a", "c"), ("b", "c"))
    )
    return cluster_from_yaml(f"name: t\nsource: a\ndevices:\n{rows}\nlinks:\n{links}\n")


def _instance():
    """Per sample; a is kept out of the replicas by its memory (the source only feeds)."""
    times = [{"a": 0.0005, "b": 0.0005, "c": 0.0005}] * 5
    devices = [Device("a", 1), Device("b", 1 << 30), Device("c", 1 << 30)]
    links = [Link(u, v, 125e6, 0.001) for u in "abc" for v in "abc" if u != v]
    return make_instance(times, [100] * 5, [256] * 5, 40, devices, links, "a")


@pytest.mark.integration
def test_key_stage_scales_out_under_load_and_back_in_when_it_stops():
    torch.manual_seed(0)
    model, _ = load_model(MLP, (1, 64))
    torch.set_num_threads(1)
    policy = ScalingPolicy(check_s=0.25, confirm=2, in_hold_s=2.0, cooldown_s=1.0)
    service = open_service(
        MLP, _cluster(), BASE, ServeOptions(microbatch=MB, queue_samples=64),
        instance=_instance(), input_shape=(1, 64), partition="sequential", timeout_s=60,
        parameter_cache=True,
    )  # fmt: skip
    scaler = Scaler(service, _instance(), policy).start()
    service.scaler = scaler
    results: list[tuple[torch.Tensor, torch.Tensor]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        while not stop.is_set():
            x = torch.randn(MB, 64, generator=gen)
            try:
                out = service.batcher.submit([x]).result(timeout=60)
            except Exception as exc:  # a full queue is fine; anything else is not
                if type(exc).__name__ != "QueueFull":
                    errors.append(exc)
                time.sleep(0.01)
                continue
            results.append((x, out[0]))

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    try:
        for t in clients:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = [e for e in scaler.events if e["kind"] == "scale_out" and e["serving_s"]]
            if done:
                break
            time.sleep(0.2)
        assert done, f"no scale-out served within 60 s: {scaler.snapshot()}"
        grown = service.session.plan.stages[0].devices
        assert set(grown) == {"b", "c"}
        time.sleep(2.0)  # the replica serves for a while
        stop.set()
        for t in clients:
            t.join(timeout=60)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(
            e["kind"] == "scale_in" and e["serving_s"] for e in scaler.events
        ):
            time.sleep(0.2)
        assert service.session.plan.stages[0].devices == ("b",), scaler.snapshot()
    finally:
        stop.set()
        report = service.close()
    assert not errors, errors[:3]
    assert report.lost == 0
    assert len(results) > 20
    with torch.inference_mode():
        for x, y in results:
            assert torch.equal(model(x), y)
    out = next(e for e in scaler.events if e["kind"] == "scale_out")
    assert out["replicas"] == [[0, "c"]] and out["decision_to_serving_s"] > 0
    assert any(h.reason.startswith("scale-out") and h.switched_s for h in report.handovers)
    # the stage was cached in the zygote, so the scaled epoch's workers got it by fork
    assert service.session.cache_info["stages"] >= 1
    # the weights handed to the zygote went through private files, all removed
    assert not list(Path("/dev/shm").glob("coinfer-warm-*")) if Path("/dev/shm").is_dir() else True
