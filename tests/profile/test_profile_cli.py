"""`coinfer profile` and `coinfer predict`: output on good input, one line + exit 2 on bad."""

from __future__ import annotations

import json

import pytest

from coinfer.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_profile_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    code, out, _ = _run(
        ["profile", "tiny_mlp", "--repeats", "2", "--warmup", "0", "--json"], capsys
    )
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "tiny_mlp" and data["pieces"] and data["nodes"]
    code, out, _ = _run(
        ["profile", "tiny_mlp", "--repeats", "2", "--warmup", "0", "--nodes"], capsys
    )
    assert code == 0
    assert "per piece" in out and "per node" in out and "cache hit" in out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["profile", "no_such_model"], "unknown model 'no_such_model'"),
        (["profile", "tiny_mlp", "--cpu-quota", "0"], "cpu-quota must be > 0"),
        (["profile", "tiny_mlp", "--input-shape", "1,x"], "bad input shape"),
        (["predict", "tiny_mlp", "--cluster", "local", "--device", "d9"], "no device 'd9'"),
        (["predict", "tiny_mlp", "--cluster", "nope.yaml"], "nope.yaml: cannot read cluster file"),
        (
            ["predict", "tiny_mlp", "--cluster", "local", "--predictor", "missing.joblib"],
            "predictor file not found",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert match in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err + out


def test_predict_table_and_json(capsys):
    from coinfer.profile.predictor import DEFAULT_PREDICTOR_PATH

    if not DEFAULT_PREDICTOR_PATH.exists():
        pytest.skip("no packaged predictor yet")
    code, out, _ = _run(["predict", "tiny_cnn", "--cluster", "local"], capsys)
    assert code == 0 and "d3" in out and "total" in out
    code, out, _ = _run(
        ["predict", "tiny_cnn", "--cluster", "local", "--device", "d1", "--json"], capsys
    )
    data = json.loads(out)
    assert list(data) == ["d1"] and all(t > 0 for t in data["d1"])
