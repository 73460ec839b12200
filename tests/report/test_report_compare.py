"""Measured vs simulated (report.compare): the same schedule through the simulator, row by row."""

from __future__ import annotations

import pytest
import torch
from sched_helpers import plan_of, tiny_instance

from coinfer.core.plans import Stage
from coinfer.report.compare import compare_with_simulation
from coinfer.runtime.ledger import Completion
from coinfer.runtime.results import build_result
from coinfer.schedule import schedule
from coinfer.simulate import simulate


def test_rows_put_the_run_beside_the_simulation_of_its_schedule() -> None:
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 1, ("a",)), Stage(2, 3, ("b",))])
    sched = schedule(plan, inst, 20)
    sim = simulate(sched, inst)
    # a made-up run exactly twice as slow as the simulation, b busy half the time
    period = 2 * sim.period_s
    comps = [Completion(m, m * period, m * period + 2 * sim.p50_s) for m in range(20)]
    wall = 19 * period + 2 * sim.p50_s  # first release to last output
    run = build_result(
        requests=20, microbatch=1, completions=comps, outputs=(torch.zeros(20, 1),),
        max_abs_error=0.0, trace=[], busy_s={"b": 0.5 * wall}, computing=("b",),
        emulation={}, stages=((0, 1, ("a",)), (2, 3, ("b",))), links={}, netns=False,
    )  # fmt: skip
    out = compare_with_simulation(run, sched, inst)
    rows = {r["metric"]: r for r in out["rows"]}
    thr = rows["throughput_rps"]
    assert thr["measured"] == pytest.approx(0.5 * sim.throughput_rps)
    assert thr["simulated"] == pytest.approx(sim.throughput_rps)
    assert thr["error_pct"] == pytest.approx(100.0)  # the simulation is 100 % optimistic
    lat = rows["latency_p50_ms"]
    assert lat["measured"] == pytest.approx(2 * sim.p50_s * 1e3)
    assert lat["error_pct"] == pytest.approx(-50.0)
    assert rows["util_b"]["measured"] == pytest.approx(0.5)
    assert rows["util_b"]["simulated"] == pytest.approx(sim.utilisation["b"])
    assert out["simulated"] == sim.summary()
