"""``coinfer zoo`` and ``coinfer inspect``: output formats and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from coinfer.cli import main
from coinfer.zoo import ZOO


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_zoo_lists_every_model_one_line_each(capsys) -> None:
    code, out, _ = _run(["zoo"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(ZOO) + 1  # header + one line per model
    assert lines[1].split()[0] == "alexnet" and "61.10 M" in lines[1] and "0.71" in lines[1]


def test_zoo_json(capsys) -> None:
    code, out, _ = _run(["zoo", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet50"]["published_gmacs"] == 4.1
    assert by_name["tiny_mlp"]["params"] == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_inspect_json_is_one_object(capsys) -> None:
    code, out, _ = _run(["inspect", "tiny_dag", "--json"], capsys)
    assert code == 0
    data = json.loads(out)  # fails if anything else was printed
    assert data["model"] == "tiny_dag"
    assert {"name", "op", "flops", "param_bytes", "out_bytes", "shape", "inputs"} <= set(
        data["nodes"][0]
    )
    assert {"index", "nodes", "flops", "param_bytes", "out_bytes"} <= set(data["pieces"][0])
    assert data["totals"]["flops"] == sum(n["flops"] for n in data["nodes"])
    assert data["totals"]["param_bytes"] == sum(p["param_bytes"] for p in data["pieces"])


def test_inspect_max_pieces_and_shape(capsys) -> None:
    code, out, _ = _run(
        ["inspect", "resnet18", "--input-shape", "1,3,32,32", "--max-pieces", "4", "--json"], capsys
    )
    assert code == 0
    data = json.loads(out)
    assert len(data["pieces"]) == 4
    assert data["inputs"][0]["shape"] == [1, 3, 32, 32]


def test_inspect_tables(capsys) -> None:
    code, out, _ = _run(["inspect", "tiny_cnn"], capsys)
    assert code == 0 and "pieces" in out and "total:" in out
    code, out, _ = _run(["inspect", "tiny_cnn", "--nodes"], capsys)
    assert code == 0 and "conv2d" in out and "adaptive_avgpool" in out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["inspect", "no_such_model"], "unknown model"),
        (["inspect", "tiny_cnn", "--input-shape", "1,3,x"], "bad input shape"),
        (["inspect", "resnet18", "--input-shape", "1,3,224"], "expected 4 dimensions"),
    ],
)
def test_inspect_errors_one_line_exit_2(argv: list[str], match: str, capsys) -> None:
    code, _out, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and match in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_factory_and_capture_errors_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def raises():
                raise ValueError("boom")

            class ValueBranch(nn.Module):
                def forward(self, x):
                    return x * 2 if x.sum() > 0 else x

            def uncapturable():
                return ValueBranch(), (torch.ones(3),)
            """
        )
    )
    # One real process (stderr exactly as the user sees it) for the uncapturable model, whose
    # failed torch.export attempt must not leak anything; the factory error goes through main().
    for factory, match in (("uncapturable", "cannot capture"),):
        proc = subprocess.run(
            [sys.executable, "-m", "coinfer", "inspect", f"{path}:{factory}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and match in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    code, _, err = _run(["inspect", f"{path}:raises"], capsys)
    assert code == 2 and err.startswith("error: ") and "raised ValueError: boom" in err
    assert len(err.strip().splitlines()) == 1
