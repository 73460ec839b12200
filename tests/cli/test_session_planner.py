"""Which planner a session's re-planning runs: live re-planning keeps to the fast dp."""

from __future__ import annotations

from coinfer.cli.session_run import make_planner, make_replan
from coinfer.testing import random_instance


def test_live_replanning_maps_default_to_dp_and_fail_over_keeps_default() -> None:
    inst = random_instance(3, 6, 3)
    live_plan, made_for = make_planner("default", "throughput", live=True)(inst)
    assert live_plan.algo == "dp"
    assert made_for is inst
    assert make_planner("default", "throughput")(inst)[0].algo == "pico"
    # an explicit planner is used as given, live or not
    assert make_planner("even", "throughput", live=True)(inst)[0].algo == "even"
    survivors = make_replan(inst, "default", "throughput")(tuple(inst.device_names[:2]))[0]
    assert survivors.algo == "pico"
    assert {d for st in survivors.stages for d in st.devices} <= set(inst.device_names[:2])
