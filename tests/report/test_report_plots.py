"""Report: Gantt/CDF/line plots write real PNGs; tables render; matplotlib stays lazy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parents[1] / "schedule"))
from sched_helpers import plan_of, tiny_instance

from coinfer.core.plans import Stage
from coinfer.errors import InputError
from coinfer.report import (
    TraceEvent,
    gantt,
    latency_cdf,
    resource_order,
    rows_table,
    schedule_table,
    sim_table,
    throughput_vs_devices,
    utilisation_table,
)
from coinfer.schedule import schedule
from coinfer.simulate import events_from_json, events_to_csv, events_to_json, load_events, simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim():
    inst = tiny_instance()
    plan = plan_of(inst, [Stage(0, 0, ("a",)), Stage(1, 3, ("b", "c"))])
    sched = schedule(plan, inst, 8)
    return sched, simulate(sched, inst)


def test_gantt_png(sim, tmp_path):
    _, res = sim
    out = gantt(res.events, tmp_path / "g.png", title="tiny", devices=("a", "b", "c"))
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    cropped = gantt(res.events, tmp_path / "g2.png", until_s=0.05)
    assert cropped.exists()
    with pytest.raises(InputError, match="no events"):
        gantt([], tmp_path / "x.png")


def test_resource_order_devices_then_links(sim):
    _, res = sim
    rows = resource_order(res.events, ("a", "b", "c"))
    assert rows[:3] == ["a", "b", "c"]
    assert all("->" in r for r in rows[3:]) and len(rows) > 3


def test_cdf_and_lines(sim, tmp_path):
    _, res = sim
    assert (
        latency_cdf({"sim": res.latency_s}, tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    )
    out = throughput_vs_devices(
        None, tmp_path / "t.png", panels={"m": {"dp": [(1, 1.0), (2, 1.8)]}}
    )
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(InputError):
        latency_cdf({}, tmp_path / "c2.png")


def test_tables_render(sim):
    sched, res = sim
    console = Console(record=True, width=140)
    console.print(
        sim_table(res, predicted={"latency_s": 0.05, "period_s": 0.02, "throughput_rps": 50.0})
    )
    console.print(utilisation_table(res))
    console.print(schedule_table(sched, max_actions=3))
    console.print(rows_table([{"algo": "dp", "x": 1.23456}], title="t"))
    text = console.export_text()
    assert "throughput" in text and "a->b" in text and "(+" in text and "1.235" in text


def test_trace_event_round_trips(sim, tmp_path):
    _, res = sim
    assert events_from_json(events_to_json(res.events)) == res.events
    (tmp_path / "e.csv").write_text(events_to_csv(res.events))
    back = load_events(tmp_path / "e.csv")
    assert back == res.events
    with pytest.raises(InputError, match="ends before it starts"):
        TraceEvent.from_dict(
            {"resource": "a", "kind": "compute", "request": 0, "start_s": 2, "end_s": 1}
        )
    with pytest.raises(InputError, match="kind"):
        TraceEvent.from_dict(
            {"resource": "a", "kind": "nap", "request": 0, "start_s": 0, "end_s": 1}
        )


def test_import_report_does_not_load_matplotlib():
    code = "import coinfer.report, coinfer.simulate, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
