"""`coinfer cluster show|check`: tables on good files, one line + exit 2 on bad ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coinfer.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_show_prints_devices_and_links(capsys):
    code, out, _ = _run(["cluster", "show", str(EXAMPLES / "pico_rpi.yaml")], capsys)
    assert code == 0
    assert "pi5" in out and "directed links" in out
    assert "shared media" in out and "wifi" in out and "40.0" in out  # the Wi-Fi cell


def test_show_json_and_local(capsys):
    code, out, _ = _run(["cluster", "show", "local", "--json"], capsys)
    assert code == 0
    assert '"cpu_quota": 0.2' in out


def test_check_good_file(capsys):
    code, out, _ = _run(["cluster", "check", str(EXAMPLES / "multihop_edge.yaml")], capsys)
    assert code == 0
    assert out.startswith("ok: ") and "8 devices" in out


@pytest.mark.parametrize("cmd", ["check", "show"])
def test_bad_file_is_one_line_exit_2(tmp_path, capsys, cmd):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nsource: a\ndevices:\n  - {name: a, speed: {gflops: -1}, memory: 1GiB}\n"
    )
    code, out, err = _run(["cluster", cmd, str(bad)], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "devices[0].speed.gflops: must be > 0 (got -1)" in err
    assert "Traceback" not in err + out


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "coinfer", "cluster", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "source: missing required field" in proc.stderr
