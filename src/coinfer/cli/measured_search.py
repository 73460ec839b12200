"""``coinfer plan --algo bayes --measure``: a Bayesian plan search that measures on the cluster.

The shell joins two packages that must not know each other: the planner
(:func:`coinfer.plan.search.bayes.plan_bayes`, pure) and the runtime
(:class:`coinfer.runtime.measured_eval.MeasuredEvaluator` over one live
:class:`~coinfer.runtime.session.Session`). The session starts on the cost model's best plan
(the search's likeliest first pick, and a plan that surely runs), every candidate is a
hand-over, and the answer is the configuration the GP believes fastest among those measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError

# Distinct request inputs the measurements cycle through (each measured request costs the same
# whatever its values; a few distinct ones keep any value-dependent caching honest).
INPUT_POOL = 4


@contextmanager
def live_evaluator(
    model: str,
    cluster: Any,
    instance: Any,
    objective: str,
    *,
    max_pieces: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    min_time_s: float = 1.0,
    timeout_s: float = 120.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Iterator[tuple[Any, float]]:
    """``(evaluator, seconds the session took to start)``: a
    :class:`~coinfer.runtime.measured_eval.MeasuredEvaluator` over a session started on
    ``cluster`` with the cost model's best plan; the session is closed on leaving (aborted on
    an error)."""
    from ..core.plans import check_objective
    from ..plan import plan as run_planner
    from ..runtime.measured_eval import MeasuredEvaluator
    from ..runtime.prepare import make_inputs
    from ..runtime.session import Session
    from ..zoo import load_model

    obj = check_objective(objective)
    if obj == "energy":
        raise InputError("--measure measures throughput or latency; energy is not measured")
    _, example = load_model(model, input_shape)
    inputs = [list(x) for x in make_inputs(tuple(example), INPUT_POOL, seed)]
    first = run_planner(instance, "default", obj)  # the model's best: surely runs, likely picked
    t0 = time.perf_counter()
    session = Session(
        model, cluster, first, instance=instance, input_shape=input_shape,
        max_pieces=max_pieces, timeout_s=timeout_s, log=log,
    )  # fmt: skip
    session.start()
    try:
        ev = MeasuredEvaluator(
            session, inputs, obj, min_time_s=min_time_s, timeout_s=timeout_s, log=log
        )
        yield ev, time.perf_counter() - t0
    except BaseException:
        session.abort()
        raise
    session.close()


def measured_search(
    model: str,
    cluster: Any,
    instance: Any,
    objective: str,
    *,
    options: Any,
    max_pieces: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    min_time_s: float = 1.0,
    timeout_s: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Search with ``plan_bayes(instance, objective, options)`` measuring every candidate on
    ``cluster`` (``options.evaluator`` is replaced by the measured one). Returns the Plan; its
    ``details`` add ``measured`` (every measurement, per-configuration mean and spread, session
    start-up and search seconds) to ``bayes``'s own (``search_log``, ...)."""
    from ..plan.search.bayes import plan_bayes

    t0 = time.perf_counter()
    with live_evaluator(
        model, cluster, instance, objective, max_pieces=max_pieces, input_shape=input_shape,
        min_time_s=min_time_s, timeout_s=timeout_s, seed=options.seed, log=log,
    ) as (ev, start_s):  # fmt: skip
        t1 = time.perf_counter()
        result = plan_bayes(instance, objective, replace(options, evaluator=ev.sample))
        search_s = time.perf_counter() - t1
    report = ev.session.report
    details = dict(result.details)
    details["measured"] = {
        "session_start_s": start_s,
        "search_s": search_s,
        "total_s": time.perf_counter() - t0,
        "measurements": [r.to_dict() for r in ev.records],
        "per_config": ev.summary(),
        "handovers": len(report.handovers) if report else None,
        "lost": report.lost if report else None,
    }
    return replace(result, details=details)


def write_search_log(path: Path, plan: Any, *, title: str) -> Path:
    """Write the search log (JSON) to ``path`` and its plot beside it (``.png``); returns the
    plot's path."""
    from ..report.plots import search_trace

    det = plan.details
    body = {
        "objective": plan.objective,
        "answer": [str(s) for s in plan.stages],
        "predicted": plan.predicted.to_dict(),
        **{k: det[k] for k in ("evaluations", "distinct", "space", "stopped", "max_ei",
                               "noise_model", "prior", "measured_mean", "measured_std")},
        "search_log": det["search_log"],
        "measured": det.get("measured"),
    }  # fmt: skip
    try:
        path.write_text(json.dumps(body, indent=1))
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    return search_trace(det["search_log"], path.with_suffix(".png"), title=title)
