"""Bad files and bad numbers at the CLI: one line naming the file (or flag), exit code 2.

Files that are not UTF-8, JSON or YAML nested past the parser's recursion limit, and timeouts
that are not a finite positive number of seconds used to end in tracebacks with exit code 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coinfer.cli import main

CLUSTER = str(Path(__file__).resolve().parents[2] / "examples" / "clusters" / "local_testbed.yaml")

CASES = {
    "cluster.yaml": (b"\xff\xfename: x\n", ["cluster", "check", "{f}"], "cluster file is not UTF-8"),
    "instance.json": (b'{"a": "\xff"}', ["plan", "--instance", "{f}", "--algo", "dp"],
                      "instance file is not UTF-8 text (byte 0xff at offset 7)"),
    "deep.json": (b"[" * 100_000 + b"]" * 100_000, ["plan", "--instance", "{f}", "--algo", "dp"],
                  "JSON nested too deeply"),
    "deep.yaml": (b"a: " + b"[" * 100_000 + b"]" * 100_000, ["cluster", "check", "{f}"],
                  "YAML nested too deeply"),
    "plan.json": (b"\x80\x81", ["simulate", "tiny_cnn", "--cluster", CLUSTER, "--plan", "{f}"],
                  "plan file is not UTF-8"),
}  # fmt: skip


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.err


@pytest.mark.parametrize("name", sorted(CASES))
def test_unreadable_files_are_one_line_errors(name, tmp_path, capsys):
    data, argv, message = CASES[name]
    f = tmp_path / name
    f.write_bytes(data)
    code, err = _run([a.format(f=f) for a in argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(f) in lines[0], err


@pytest.mark.parametrize("value", ["nan", "0", "-1", "inf"])
def test_run_timeout_must_be_finite_and_positive(value, capsys):
    code, err = _run(["run", "tiny_cnn", "--timeout", value, "--requests", "2"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --timeout must be a finite number of seconds > 0 (got {float(value)})"
    ]
