"""`coinfer plan` and `coinfer compare`: output, files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coinfer.cli import app, main
from coinfer.core.plans import Plan
from coinfer.testing import random_instance

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "instances"
runner = CliRunner()


def _fails_with_one_line(argv: list[str], capsys, pattern: str) -> None:
    """Through the real entry point: exit code 2, a single 'error:' line, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert pattern in err, err


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_plan_json_for_every_example(example: str, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(
        app, ["plan", "--instance", str(EXAMPLES / example), "--json", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    assert printed["algo"] == "pico" and printed["objective"] == "throughput"  # the default
    assert set(printed) >= {"algo", "objective", "stages", "predicted", "planning_time_s"}
    saved = Plan.load(out)
    assert saved.to_dict()["stages"] == printed["stages"]


def test_plan_table_and_dump_instance(tmp_path: Path) -> None:
    inst_file = tmp_path / "inst.json"
    random_instance(3, 6, 3).save(inst_file)
    dump = tmp_path / "again.json"
    res = runner.invoke(app, ["plan", "--instance", str(inst_file), "--algo", "pico", "--objective", "latency",
                              "--dump-instance", str(dump)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "pico plan for latency" in res.output and "predicted latency" in res.output
    assert json.loads(dump.read_text()) == json.loads(inst_file.read_text())


def test_compare_table_json_and_png(tmp_path: Path) -> None:
    png = tmp_path / "cmp.png"
    args = [
        "compare",
        "--instance",
        str(EXAMPLES / "pico_rpi.json"),
        "--algos",
        "dp,pico,single,even",
    ]
    res = runner.invoke(app, [*args, "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "planners compared for throughput" in res.output and "pico" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, [*args, "--json"])
    rows = json.loads(res.output)
    assert [r["algo"] for r in rows] == ["dp", "pico", "single", "even"]
    assert all(r["status"] == "ok" for r in rows)
    by = {r["algo"]: r for r in rows}
    assert (
        by["pico"]["throughput_rps"] >= by["dp"]["throughput_rps"] >= by["single"]["throughput_rps"]
    )


def test_compare_says_why_a_planner_is_skipped() -> None:
    res = runner.invoke(app, ["compare", "--instance", str(EXAMPLES / "pico_rpi.json"), "--objective", "energy",
                              "--algos", "dp,single", "--json"])  # fmt: skip
    rows = json.loads(res.output)
    assert all(r["status"].startswith("skipped: objective 'energy' needs power") for r in rows)


def test_errors_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"pieces": []}')
    _fails_with_one_line(["plan", "--instance", str(bad)], capsys, str(bad))
    notjson = tmp_path / "notjson.json"
    notjson.write_text("{oops")
    _fails_with_one_line(["plan", "--instance", str(notjson)], capsys, "not valid JSON")
    _fails_with_one_line(
        ["plan", "--instance", str(tmp_path / "missing.json")], capsys, "cannot read"
    )
    ex = str(EXAMPLES / "phone_edge_cloud.json")
    _fails_with_one_line(
        ["plan", "--instance", ex, "--algo", "warp"], capsys, "unknown planner 'warp'"
    )
    _fails_with_one_line(
        ["plan", "--instance", ex, "--objective", "speed"], capsys, "unknown objective"
    )
    _fails_with_one_line(
        ["compare", "--instance", ex, "--algos", "dp,warp"], capsys, "unknown planner"
    )
    _fails_with_one_line(["plan"], capsys, "give MODEL --cluster FILE or --instance FILE")
    tiny = json.loads(Path(ex).read_text())
    for d in tiny["devices"]:
        d["mem"] = 1000
    small = tmp_path / "small.json"
    small.write_text(json.dumps(tiny))
    _fails_with_one_line(["plan", "--instance", str(small)], capsys, "bytes short")


def test_real_process_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    proc = subprocess.run([sys.executable, "-m", "coinfer", "plan", "--instance", str(bad)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "must hold a JSON object" in proc.stderr


def test_plan_from_model_and_cluster(tmp_path: Path) -> None:
    """MODEL --cluster: the cost model builds the instance; --dump-instance saves it for replay."""
    cluster = (
        Path(__file__).resolve().parents[2] / "examples" / "clusters" / "phone_edge_cloud.yaml"
    )
    if not cluster.exists():
        pytest.skip("example cluster file not present")
    dump = tmp_path / "inst.json"
    res = runner.invoke(app, ["plan", "tiny_cnn", "--cluster", str(cluster), "--max-pieces", "4", "--json",
                              "--dump-instance", str(dump)])  # fmt: skip
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    from coinfer.core.instance import load_instance

    inst = load_instance(dump)
    assert inst.num_pieces <= 4
    assert printed["stages"][-1]["pieces"][1] == inst.num_pieces - 1
    again = runner.invoke(app, ["plan", "--instance", str(dump), "--json"])
    assert json.loads(again.output)["stages"] == printed["stages"]


def test_seed_reaches_seeded_planners(tmp_path: Path) -> None:
    from coinfer.plan import PLANNERS

    seeded = sorted(
        n for n, i in PLANNERS.items() if i.seeded and "latency" in i.objectives and i.needs is None
    )
    if not seeded:
        pytest.skip("no seeded planner registered")
    inst_file = tmp_path / "inst.json"
    random_instance(2, 5, 2).save(inst_file)
    res = runner.invoke(app, ["plan", "--instance", str(inst_file), "--algo", seeded[0], "--objective", "latency",
                              "--seed", "5", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["seed"] == 5


def test_search_flags_are_checked_before_anything_runs(tmp_path: Path, capsys) -> None:
    inst_file = tmp_path / "inst.json"
    random_instance(2, 5, 2).save(inst_file)
    base = ["plan", "--instance", str(inst_file)]
    _fails_with_one_line([*base, "--measure"], capsys, "need --algo bayes")
    _fails_with_one_line([*base, "--algo", "dp", "--budget", "5"], capsys, "need --algo bayes")
    _fails_with_one_line([*base, "--algo", "bayes", "--measure"], capsys, "MODEL --cluster")
    _fails_with_one_line([*base, "--algo", "bayes", "--budget", "0"], capsys, "--budget")
    _fails_with_one_line(
        ["plan", "tiny_mlp", "--cluster", "x.yaml", "--algo", "bayes", "--measure",
         "--objective", "energy"], capsys, "energy is not measured",
    )  # fmt: skip
    _fails_with_one_line([*base, "--algo", "bayes", "--ei-stop", "-1"], capsys, "--ei-stop")
    _fails_with_one_line(
        ["plan", "tiny_mlp", "--cluster", "x.yaml", "--algo", "bayes", "--measure",
         "--measure-seconds", "0"], capsys, "--measure-seconds",
    )  # fmt: skip


def test_bayes_search_log_without_measuring(tmp_path: Path) -> None:
    """The simulated search writes the same log and plot; --budget and --ei-stop reach it."""
    inst_file = tmp_path / "inst.json"
    random_instance(4, 6, 3).save(inst_file)
    log = tmp_path / "log.json"
    res = runner.invoke(app, ["plan", "--instance", str(inst_file), "--algo", "bayes", "--budget", "9",
                              "--ei-stop", "0", "--search-log", str(log), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    body = json.loads(log.read_text())
    assert body["evaluations"] == 9 and len(body["search_log"]) == 9
    assert body["answer"] == [str(s) for s in Plan.from_dict(json.loads(res.stdout)).stages]
    assert body["measured"] is None and log.with_suffix(".png").exists()
