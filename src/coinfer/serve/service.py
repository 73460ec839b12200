"""One served model: a live session, its batcher, its metrics, and a watch on its plan.

:func:`open_service` checks the model can be served (every input batch-first), starts a
:class:`~coinfer.runtime.session.Session` (fail-over through the caller's ``replan``) and wraps
it; :meth:`Service.close` stops taking requests, lets every admitted one finish, then closes
the session (its workers exit: nothing is left running).

Sizes, and why:

- micro-batches in the pipeline at most ``FEED_AHEAD x window`` — what the session forwards to
  the source ahead of its results; more would only wait inside the session, where they can no
  longer be batched with later arrivals;
- the queue holds ``4 x window x microbatch`` samples by default: four windows of work, so a
  burst is absorbed while a client that would wait longer than ~4 pipeline round trips is told
  to come back (429) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .batcher import Batcher
from .codecs import SampleSpec, contract_of, max_body_bytes
from .metrics import ServeMetrics

# Windows of work the queue holds by default (see the module docstring).
QUEUE_WINDOWS = 4
# Plan changes are looked for this often (epoch switches take seconds; a scrape reads counts).
WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True)
class ServeOptions:
    """How the server batches and bounds requests (defaults: see the module docstring)."""

    microbatch: int = 4
    queue_samples: int | None = None
    batch_wait_s: float | None = None  # None: the default, or derived from slo_s
    slo_s: float | None = None
    request_timeout_s: float = 65.0  # the session's 60 s stall bound, and some
    drain_timeout_s: float = 30.0
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.microbatch < 1:
            raise InputError(f"--microbatch must be >= 1, got {self.microbatch}")
        if self.queue_samples is not None and self.queue_samples < self.microbatch:
            raise InputError(
                f"--queue-limit {self.queue_samples} must hold at least one micro-batch "
                f"({self.microbatch} samples)"
            )
        if self.slo_s is not None and not self.slo_s > 0:
            raise InputError(f"--slo-ms must be > 0, got {self.slo_s * 1e3:g}")
        if self.batch_wait_s is not None and not 0 <= self.batch_wait_s <= 10:
            raise InputError(
                f"--batch-wait-ms must be in 0..10000, got {self.batch_wait_s * 1e3:g}"
            )


class Service:
    """A started session served through a :class:`~.batcher.Batcher` (see the module
    docstring). ``session`` must be started; the service owns it from here on."""

    def __init__(
        self,
        session: Any,
        contract: Sequence[SampleSpec],
        options: ServeOptions,
        *,
        model: str,
        expected_rate: float | None = None,
    ):
        from ..runtime.session import FEED_AHEAD

        self.session = session
        self.contract = tuple(contract)
        self.options = options
        self.model = model
        mb = options.microbatch
        window = max(int(session.window), 1)
        self.capacity = options.queue_samples or QUEUE_WINDOWS * window * mb
        self.max_request_samples = self.capacity
        self.max_body_bytes = max_body_bytes(self.contract, self.max_request_samples)
        self.batcher: Batcher | None = Batcher(
            session, mb, self.contract, capacity=self.capacity,
            max_inflight=FEED_AHEAD * window, wait_s=options.batch_wait_s,
            slo_s=options.slo_s, expected_rate=expected_rate,
        )  # fmt: skip
        self.failovers = 0
        self.handovers = 0
        self.closing = False
        self.scaler: Any = None  # a serve.scaler.Scaler when --scaling on
        self.report: Any = None
        self.metrics = ServeMetrics(self)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_plan, name="plan-watch", daemon=True)
        self._watch.start()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(serving?, a JSON-ready status)``."""
        failure = self.batcher.failure if self.batcher is not None else None
        if self.closing:
            return False, {"status": "closing"}
        if failure is not None:
            return False, {"status": "failed", "error": failure}
        return True, {"status": "ok", "devices": list(self.session.devices)}

    def plan_doc(self) -> dict[str, Any]:
        """``GET /v1/plan``: the live plan and what a client needs to call the server."""
        s = self.session
        b = self.batcher
        return {
            "model": self.model,
            "plan": s.plan.to_dict(),
            "devices": list(s.devices),
            "source": s.source,
            "alive": list(s.alive),
            "microbatch": self.options.microbatch,
            "window": s.window,
            "threads": s.check_threads,
            "inputs": [
                {"shape": ["n", *spec.shape], "dtype": spec.dtype_name} for spec in self.contract
            ],
            "max_request_samples": self.max_request_samples,
            "queue_capacity_samples": self.capacity,
            "batch_wait_s": b.wait_s() if b is not None else None,
            "slo_s": self.options.slo_s,
            "scaling": self.scaler.snapshot() if self.scaler is not None else None,
        }

    @property
    def scaling_events(self) -> list[dict[str, Any]]:
        """The scaler's events (scale-out / scale-in, decided and taken over); none without."""
        return list(self.scaler.events) if self.scaler is not None else []

    def _watch_plan(self) -> None:
        """Count plan changes (with a device lost a fail-over, without one a hand-over), and
        let the batcher feed the new plan's window."""
        from ..runtime.session import FEED_AHEAD

        s = self.session
        last_plan, last_alive = s.plan, set(s.alive)
        while not self._stop.wait(WATCH_INTERVAL_S):
            plan, alive = s.plan, set(s.alive)
            if plan is not last_plan:
                hand = s.handovers
                scaled = bool(hand) and hand[-1].reason.startswith(("scale-out #", "scale-in #"))
                if last_alive - alive:
                    self.failovers += 1
                elif not scaled:  # a scaling switch is counted (and shown) as a scaling event
                    self.handovers += 1
                if self.batcher is not None:  # a scaled plan keeps more micro-batches busy
                    self.batcher.set_max_inflight(FEED_AHEAD * max(int(s.window), 1))
            last_plan, last_alive = plan, alive

    def close(self) -> Any:
        """Stop taking requests, finish the admitted ones, close the session; its report."""
        if self.report is not None:
            return self.report
        self.closing = True
        if self.scaler is not None:
            self.scaler.stop()
        try:
            if self.batcher is not None:
                self.batcher.close(self.options.drain_timeout_s)
        finally:
            self._stop.set()
            self.report = self.session.close(timeout_s=self.options.drain_timeout_s)
        return self.report


def open_service(
    model: str,
    cluster: Any,
    plan: Any,
    options: ServeOptions,
    *,
    instance: Any = None,
    replan: Callable[[tuple[str, ...]], tuple[Any, Any]] | None = None,
    input_shape: tuple[int, ...] | None = None,
    partition: str = "graph",
    max_pieces: int | None = None,
    timeout_s: float = 60.0,
    telemetry_path: str | None = None,
    log: Callable[[str], None] | None = None,
    parameter_cache: bool = False,
) -> Service:
    """Start a session of ``plan`` for ``model`` and serve it (see :class:`Service`)."""
    from ..runtime.session import Session
    from ..zoo import load_model

    _, example = load_model(model, input_shape, meta=True)
    contract = contract_of(example)
    session = Session(
        model, cluster, plan, microbatch=options.microbatch, input_shape=input_shape,
        instance=instance, replan=replan, timeout_s=timeout_s, partition=partition,
        max_pieces=max_pieces, telemetry_path=telemetry_path, log=log,
        parameter_cache=parameter_cache,
    )  # fmt: skip
    try:
        session.start()
    except BaseException:  # a signal or a failure while the workers start: none may remain
        session.abort()
        raise
    try:
        rate = getattr(getattr(plan, "predicted", None), "throughput_rps", None)
        return Service(session, contract, options, model=model, expected_rate=rate or None)
    except BaseException:
        session.abort()
        raise


__all__ = ["QUEUE_WINDOWS", "ServeOptions", "Service", "open_service"]
