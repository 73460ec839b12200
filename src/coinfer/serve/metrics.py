"""The server's Prometheus metrics: what the HTTP side counts, and what it reads at a scrape.

Counted as requests come and go (by the app): received requests, outcomes, latency, goodput.
Read at each scrape (a custom collector, so a device that leaves the plan leaves the output):
the batcher's queue, in-flight micro-batches, padding and throughput; the session's latest
telemetry per device (utilisation, mean compute time), per stage (its devices' mean
utilisation), per link (achieved bandwidth); and the plan changes the server has watched
(fail-overs, hand-overs).

Each server has its own registry (not prometheus-client's global one), so two servers in one
process, or one per test, never share counters.

Per-stage queue length: each worker reports how long the inputs of the computes it finished
waited, received, for its stage; over the interval that is the stage's mean queue (Little's
law), summed over the stage's replicas. Scaling events (scale-out, scale-in) are counted by kind,
with the last decision-to-serving time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Request latency buckets (s): from a loopback round trip of the tiny models (~2 ms) to the
# session's default stall bound (60 s).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Outcomes of a POST /v1/infer: every received request ends in exactly one.
OUTCOMES = ("completed", "failed", "rejected", "invalid", "unauthorized")


class ServeMetrics:
    """The registry of one server; ``state`` is read at each scrape (see :class:`_Live`)."""

    def __init__(self, state: Any):
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "coinfer_requests_received", "POST /v1/infer requests received.",
            registry=self.registry,
        )  # fmt: skip
        self.outcomes = Counter(
            "coinfer_requests",
            "Requests by outcome: completed (200), failed (503: the session failed or timed "
            "out), rejected (429: queue full), invalid (400/413/415/422), unauthorized (401).",
            ["outcome"],
            registry=self.registry,
        )
        for o in OUTCOMES:
            self.outcomes.labels(o)
        self.goodput = Counter(
            "coinfer_requests_within_slo",
            "Completed requests answered within the SLO (--slo-ms); 0 without one.",
            registry=self.registry,
        )
        self.samples = Counter(
            "coinfer_samples_completed", "Samples (rows of the batch dimension) answered.",
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "coinfer_request_latency_seconds",
            "Completed requests: body received to response ready.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Live(state))

    def outcome(self, name: str) -> None:
        self.outcomes.labels(name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, value: float, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    if not labels:
        g.add_metric([], value)
    return g


def latest_per_device(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest telemetry record of each device in the newest epoch seen."""
    if not records:
        return {}
    epoch = max(r.get("epoch", 0) for r in records)
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("epoch", 0) == epoch:
            out[r["device"]] = r  # records arrive in time order: the last one wins
    return out


class _Live(Collector):
    """Reads the service's state at scrape time. ``state`` provides ``batcher``, ``session``
    (``telemetry``, ``plan``, ``alive``) and the watched event counts ``failovers``,
    ``handovers``."""

    def __init__(self, state: Any):
        self.state = state

    def collect(self) -> Iterator[Any]:
        b = self.state.batcher
        if b is not None:
            yield _gauge("coinfer_queue_samples", "Samples waiting for a micro-batch.",
                         b.queued_samples)  # fmt: skip
            yield _gauge("coinfer_queue_requests", "Requests with samples waiting.",
                         b.queued_requests)  # fmt: skip
            yield _gauge("coinfer_queue_capacity_samples",
                         "Samples the queue holds before answering 429.", b.capacity)  # fmt: skip
            yield _gauge("coinfer_inflight_microbatches",
                         "Micro-batches inside the pipeline (submitted, not back).", b.inflight)  # fmt: skip
            mb = CounterMetricFamily("coinfer_microbatches", "Micro-batches sent, by kind.",
                                     labels=["kind"])  # fmt: skip
            mb.add_metric(["full"], b.microbatches_full)
            mb.add_metric(["padded"], b.microbatches_padded)
            yield mb
            yield CounterMetricFamily("coinfer_padding_samples",
                                      "Zero samples added to fill partial micro-batches.",
                                      value=b.padding_samples)  # fmt: skip
            sps, mbps = b.throughput()
            yield _gauge("coinfer_throughput_samples_per_second",
                         "Samples completed per second over the last 10 s.", sps)  # fmt: skip
            yield _gauge("coinfer_throughput_microbatches_per_second",
                         "Micro-batches completed per second over the last 10 s.", mbps)  # fmt: skip
            yield _gauge("coinfer_batch_wait_seconds",
                         "Current wait of a partial micro-batch for more samples.", b.wait_s())  # fmt: skip
        yield from self._session()

    def _session(self) -> Iterator[Any]:
        s = self.state.session
        if s is None:
            return
        plan = s.plan
        latest = latest_per_device(s.telemetry)
        util = GaugeMetricFamily("coinfer_device_utilisation",
                                 "Busy fraction of each device's last telemetry interval.",
                                 labels=["device"])  # fmt: skip
        comp = GaugeMetricFamily("coinfer_device_compute_ms",
                                 "Mean stage compute time (ms) in the last interval.",
                                 labels=["device"])  # fmt: skip
        link = GaugeMetricFamily("coinfer_link_achieved_bytes_per_second",
                                 "Achieved bandwidth of each link in the last interval.",
                                 labels=["src", "dst"])  # fmt: skip
        for dev, rec in sorted(latest.items()):
            util.add_metric([dev], float(rec.get("utilisation") or 0.0))
            if rec.get("compute_ms") is not None:
                comp.add_metric([dev], float(rec["compute_ms"]))
            for peer, st in sorted((rec.get("links") or {}).items()):
                if st.get("achieved_Bps") is not None:
                    link.add_metric([dev, str(peer)], float(st["achieved_Bps"]))
        stage = GaugeMetricFamily("coinfer_stage_utilisation",
                                  "Mean utilisation of each stage's devices (last interval).",
                                  labels=["stage", "devices"])  # fmt: skip
        queue = GaugeMetricFamily("coinfer_stage_queue",
                                  "Mean number of received inputs waiting for each stage's "
                                  "compute over the last interval (all replicas).",
                                  labels=["stage", "devices"])  # fmt: skip
        replicas = GaugeMetricFamily("coinfer_stage_replicas",
                                     "Devices serving each stage of the running plan.",
                                     labels=["stage"])  # fmt: skip
        for k, st in enumerate(plan.stages):
            replicas.add_metric([str(k)], len(st.devices))
            seen = [latest[d] for d in st.devices if d in latest]
            if seen:
                label = [str(k), ",".join(st.devices)]
                stage.add_metric(label, sum(float(r.get("utilisation") or 0.0) for r in seen)
                                 / len(seen))  # fmt: skip
                queue.add_metric(label, sum(float(r.get("queue") or 0.0) for r in seen))
        yield from (util, comp, link, stage, queue, replicas)
        yield _gauge("coinfer_plan_stages", "Stages of the running plan.", len(plan.stages))
        yield _gauge("coinfer_devices_alive", "Cluster devices not known to have failed.",
                     len(s.alive))  # fmt: skip
        ev = CounterMetricFamily(
            "coinfer_replans",
            "Plan changes seen while serving: failover (a device lost, re-planned over the "
            "survivors) or handover (a switch to another plan without a loss; scaling switches "
            "are counted in coinfer_scaling_events instead).",
            labels=["reason"],
        )
        ev.add_metric(["failover"], self.state.failovers)
        ev.add_metric(["handover"], self.state.handovers)
        yield ev
        events = list(getattr(self.state, "scaling_events", []))
        sc = CounterMetricFamily("coinfer_scaling_events",
                                 "Scaling decisions by kind (scale_out, scale_in).",
                                 labels=["kind"])  # fmt: skip
        for kind in ("scale_out", "scale_in"):
            sc.add_metric([kind], sum(1 for e in events if e["kind"] == kind))
        yield sc
        took = [e["decision_to_serving_s"] for e in events if "decision_to_serving_s" in e]
        if took:
            yield _gauge("coinfer_scaling_last_decision_to_serving_seconds",
                         "Last scaling event: decision to the new plan taking requests.",
                         took[-1])  # fmt: skip


__all__ = ["LATENCY_BUCKETS", "OUTCOMES", "ServeMetrics", "latest_per_device"]
