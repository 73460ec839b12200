"""``coinfer simulate`` / ``coinfer schedule``: happy paths and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sched_helpers import random_chain_instance, random_plan

COINFER = [sys.executable, "-m", "coinfer"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("simcli")
    inst = random_chain_instance(5, devices=3)
    inst.save(d / "inst.json")
    random_plan(inst, 5).save(d / "plan.json")
    (d / "arrivals.csv").write_text("time_s\n" + "\n".join(str(0.2 * i) for i in range(10)) + "\n")
    return d


def _run(*args):
    from typer.testing import CliRunner

    from coinfer.cli import app

    return CliRunner().invoke(app, list(map(str, args)))


def test_simulate_json_and_gantt(files):
    res = _run("simulate", "--instance", files / "inst.json", "--plan", files / "plan.json",
               "--requests", 20, "--json", "--gantt", files / "g.png", "--trace", files / "t.json")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    plan = data["plan"]
    assert data["simulated"]["throughput_rps"] == pytest.approx(
        plan["predicted"]["throughput_rps"], rel=0.01
    )
    assert (files / "g.png").stat().st_size > 1000
    assert len(json.loads((files / "t.json").read_text())) > 20


def test_simulate_table_and_arrival_file(files):
    res = _run("simulate", "--instance", files / "inst.json", "--plan", files / "plan.json",
               "--requests", 10, "--arrivals", files / "arrivals.csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "latency, request 0" in res.output and "utilisation" in res.output


def test_schedule_json(files):
    res = _run(
        "schedule",
        "--instance",
        files / "inst.json",
        "--plan",
        files / "plan.json",
        "--requests",
        3,
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["requests"] == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--instance", "/nonexistent/i.json"], "cannot read instance file"),
        (["simulate"], "give MODEL --cluster FILE or --instance FILE"),
        (
            ["simulate", "--instance", "{inst}", "--plan", "{plan}", "--arrivals", "bursty"],
            "--arrivals 'bursty'",
        ),
        (["simulate", "--instance", "{inst}", "--plan", "{plan}", "--arrivals", "poisson"], "rate"),
        (
            ["schedule", "--instance", "{inst}", "--plan", "{plan}", "--requests", "0"],
            "requests must be >= 1",
        ),
        (["simulate", "--instance", "{inst}", "--algo", "nosuchplanner"], "unknown planner"),
    ],
)
def test_bad_input_is_one_line_exit_2(files, args, needle):
    args = [a.format(inst=files / "inst.json", plan=files / "plan.json") for a in args]
    out = subprocess.run([*COINFER, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_gantt_from_trace_file(files):
    res = _run("simulate", "--instance", files / "inst.json", "--plan", files / "plan.json",
               "--requests", 5, "--json", "--trace", files / "t5.json")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = _run("gantt", files / "t5.json", "--out", files / "g5.png", "--until", 0.5)
    assert res.exit_code == 0, res.output
    assert (files / "g5.png").read_bytes().startswith(b"\x89PNG")
    bad = files / "bad.json"
    bad.write_text('[{"resource": "a"}]')
    out = subprocess.run([*COINFER, "gantt", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "missing or malformed field" in out.stderr


def test_simulate_from_model_and_cluster():
    """MODEL --cluster: the cost model builds the instance (analytic costs for these boards)."""
    cluster = Path(__file__).parents[2] / "examples" / "clusters" / "pico_rpi.yaml"
    res = _run("simulate", "tiny_cnn", "--cluster", cluster, "--requests", 5, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["simulated"]["requests"] == 5
    assert data["simulated"]["latency_p50_s"] > 0
    out = subprocess.run(
        [*COINFER, "simulate", "tiny_cnn", "--instance", "x.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not both" in out.stderr
