"""Report: Gantt/CDF/line plots write real PNGs; tables render; matplotlib stays lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console
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


def _capture_figure(monkeypatch) -> list:
    """Make the plots hand their figure here instead of (only) writing a PNG."""
    import coinfer.report.plots as plots

    seen: list = []
    real = plots._save

    def keep(plt, fig, path):
        seen.append(fig)
        fig.canvas.draw()
        axes = fig.axes[0]
        seen.append(
            {
                "bars": [
                    (p.get_x(), p.get_width(), p.get_y() + p.get_height() / 2, p.get_hatch())
                    for p in axes.patches
                ],
                "rows": [t.get_text() for t in axes.get_yticklabels()],
                "xlim": axes.get_xlim(),
            }
        )
        return real(plt, fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def test_gantt_draws_one_bar_per_event_where_it_happened(monkeypatch, tmp_path):
    events = [
        TraceEvent("a", "compute", 0, 1.000, 1.004, 0),
        TraceEvent("a->b", "transfer", 0, 1.004, 1.005, 1),
        TraceEvent("b", "compute", 0, 1.005, 1.011, 1),
        TraceEvent("a", "compute", 1, 1.004, 1.008, 0),
    ]
    seen = _capture_figure(monkeypatch)
    gantt(events, tmp_path / "g.png", devices=("a", "b"))
    drawn = seen[1]
    assert drawn["rows"] == ["a", "b", "a->b"]  # devices first, then links
    assert len(drawn["bars"]) == len(events)
    row = {name: i for i, name in enumerate(drawn["rows"])}
    # milliseconds from the first event (the span is < 2 s)
    want = sorted((round((e.start_s - 1.0) * 1e3, 6), round(e.duration_s * 1e3, 6),
                   row[e.resource], e.kind == "transfer") for e in events)  # fmt: skip
    got = sorted((round(x, 6), round(w, 6), round(y), bool(h)) for x, w, y, h in drawn["bars"])
    assert got == want
    assert drawn["xlim"] == pytest.approx((0.0, 11.0))


def test_gantt_crop_clips_bars_to_the_window(monkeypatch, tmp_path):
    events = [TraceEvent("a", "compute", r, r * 1.0, r * 1.0 + 0.8, 0) for r in range(5)]
    seen = _capture_figure(monkeypatch)
    gantt(events, tmp_path / "g.png", until_s=2.5)
    drawn = seen[1]
    # events starting within 2.5 s of the first are drawn, in seconds (span >= 2 s), clipped
    assert sorted((round(x, 6), round(w, 6)) for x, w, _, _ in drawn["bars"]) == [
        (0.0, 0.8), (1.0, 0.8), (2.0, 0.5)
    ]  # fmt: skip
    assert drawn["xlim"] == pytest.approx((0.0, 2.5))


def test_sim_table_gap_is_simulated_over_reference(sim):
    _, res = sim
    console = Console(record=True, width=200)
    predicted = {
        "latency_s": res.latency_s[0] / 1.25,
        "period_s": res.period_s,
        "throughput_rps": res.throughput_rps,
    }
    console.print(sim_table(res, predicted=predicted))
    text = console.export_text()
    lat_row = next(ln for ln in text.splitlines() if "latency, request 0" in ln)
    assert "+25.0%" in lat_row  # simulated is 1.25x the reference figure
    thr_row = next(ln for ln in text.splitlines() if "throughput" in ln)
    assert "+0.0%" in thr_row


def test_search_trace_draws_the_log_and_the_gap_curves(tmp_path):
    from coinfer.plan.search.bayes import BayesOptions, plan_bayes
    from coinfer.report import search_trace
    from coinfer.testing import random_adv_instance

    p = plan_bayes(random_adv_instance(2, 5, 3), "latency", BayesOptions(budget=8, seed=0))
    log = p.details["search_log"]
    one = search_trace(log, tmp_path / "one.png", title="t", best=0.5 * log[0]["measured"])
    two = search_trace(log, tmp_path / "two.png", title="t", curves={"bo": [(1, 9.0), (2, 1.0)]})
    assert one.read_bytes()[:8] == two.read_bytes()[:8] == PNG_MAGIC
    # the curves panel makes the figure twice as wide (PNG width: bytes 16..20, big-endian)
    width = lambda path: int.from_bytes(path.read_bytes()[16:20], "big")  # noqa: E731
    assert width(two) == 2 * width(one)
    with pytest.raises(InputError, match="empty"):
        search_trace([], tmp_path / "none.png", title="t")
