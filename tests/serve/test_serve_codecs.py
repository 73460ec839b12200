"""Request/response codecs: round trips, and one clear error with the right status for bad
bodies (pure: no server, no workers)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save

from coinfer.errors import InputError
from coinfer.serve import codecs
from coinfer.serve.codecs import BadInput, SampleSpec

FLOAT = (SampleSpec((4,), torch.float32),)
TWO = (SampleSpec((2, 3), torch.float32), SampleSpec((), torch.int64))


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_json_round_trip_is_exact_for_float32():
    x = torch.randn(3, 4)
    (t,) = codecs.decode_json(_json({"inputs": [x.tolist()]}), FLOAT, 8)
    assert t.dtype == torch.float32 and torch.equal(t, x)
    body, media = codecs.encode([x, torch.arange(3)], "json")
    assert media == codecs.JSON
    outs = json.loads(body)["outputs"]
    assert torch.equal(torch.tensor(outs[0], dtype=torch.float32), x)
    assert outs[1] == [0, 1, 2]


def test_json_two_inputs_and_scalar_samples():
    xs = codecs.decode_json(_json({"inputs": [[[[1, 2, 3], [4, 5, 6.5]]], [7]]}), TWO, 8)
    assert xs[0].shape == (1, 2, 3) and xs[0].dtype == torch.float32
    assert xs[1].tolist() == [7] and xs[1].dtype == torch.int64


def test_safetensors_round_trip_keeps_bits():
    x = torch.randn(5, 4)
    (t,) = codecs.decode_safetensors(save({"input_0": x}), FLOAT, 8)
    assert torch.equal(t, x)
    body, media = codecs.encode([x], "safetensors")
    assert media == codecs.SAFETENSORS
    from safetensors.torch import load

    assert torch.equal(load(body)["output_0"], x)


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (_json({"inputs": [[[0.0] * 4]], "extra": 1}), 422, "unknown field"),
        (_json({"input": []}), 422, "unknown field"),
        (_json({}), 422, "missing field 'inputs'"),
        (_json({"inputs": []}), 422, "1 nested list"),
        (_json({"inputs": "x"}), 422, "1 nested list"),
        (_json({"inputs": [[]]}), 422, "non-empty list"),
        (_json({"inputs": [[[0.0] * 3]]}), 422, "length 3 at depth 1"),
        (_json({"inputs": [[[0.0] * 4, [0.0] * 5]]}), 422, "length 5 at depth 1"),
        (_json({"inputs": [[0.0, 1.0]]}), 422, "found float at depth 1"),
        (_json({"inputs": [[[[0.0]] * 4]]}), 422, "takes float or int values, found list"),
        (_json({"inputs": [[["1", 2, 3, 4]]]}), 422, "found str"),
        (_json({"inputs": [[[True, 2, 3, 4]]]}), 422, "found bool"),
        (_json({"inputs": [[[None, 2, 3, 4]]]}), 422, "found NoneType"),
        (_json({"inputs": [[[0.0] * 4] * 9]}), 413, "at most 8"),
    ],
)
def test_bad_json_bodies_name_the_problem(body, status, match):
    with pytest.raises(BadInput, match=match) as err:
        codecs.decode_json(body, FLOAT, 8)
    assert err.value.status == status
    assert "\n" not in str(err.value)


def test_json_integer_input_refuses_floats_and_overflow():
    spec = (SampleSpec((), torch.int64),)
    with pytest.raises(BadInput, match="takes int values, found float"):
        codecs.decode_json(_json({"inputs": [[1.5]]}), spec, 8)
    with pytest.raises(BadInput, match="do not fit int64"):
        codecs.decode_json(_json({"inputs": [[2**70]]}), spec, 8)


def test_inputs_must_agree_on_the_batch():
    with pytest.raises(BadInput, match="disagree on the batch size"):
        codecs.decode_json(_json({"inputs": [[[[0] * 3] * 2] * 2, [1]]}), TWO, 8)


def test_deeply_nested_json_is_one_error():
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BadInput) as err:
        codecs.decode_json(body, FLOAT, 8)
    assert err.value.status in (400, 422)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"input_0": torch.zeros(2, 4, dtype=torch.float64)}, "float64, the model takes"),
        ({"input_0": torch.zeros(2, 5)}, r"\[2, 5\] float32"),
        ({"input_0": torch.zeros(4)}, r"\[4\] float32"),
        ({"x": torch.zeros(2, 4)}, "exactly input_0; got x"),
        ({"input_0": torch.zeros(2, 4), "input_1": torch.zeros(1)}, "exactly input_0"),
        ({"input_0": torch.zeros(0, 4)}, "at least 1"),
    ],
)
def test_bad_safetensors_bodies_are_422(tensors, match):
    with pytest.raises(BadInput, match=match) as err:
        codecs.decode_safetensors(save(tensors), FLOAT, 8)
    assert err.value.status == 422


def test_garbage_is_not_a_safetensors_file():
    for body in (b"", b"\x00" * 3, b"\xff" * 64, b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}'):
        with pytest.raises(BadInput, match="not a safetensors file") as err:
            codecs.decode_safetensors(body, FLOAT, 8)
        assert err.value.status == 400


def test_content_types_and_response_form():
    assert codecs.request_form("application/json; charset=utf-8") == "json"
    assert codecs.request_form("Application/Octet-Stream") == "safetensors"
    with pytest.raises(BadInput, match="Content-Type") as err:
        codecs.request_form("application/x-python-pickle")
    assert err.value.status == 415
    with pytest.raises(BadInput):
        codecs.request_form(None)
    assert codecs.response_form("json", None) == "json"
    assert codecs.response_form("json", "application/octet-stream") == "safetensors"
    assert codecs.response_form("safetensors", "application/json") == "json"
    assert codecs.response_form("safetensors", "*/*") == "safetensors"


def test_contract_needs_a_leading_batch_of_one():
    assert codecs.contract_of((torch.zeros(1, 64),)) == (SampleSpec((64,), torch.float32),)
    with pytest.raises(InputError, match="batch dimension of 1"):
        codecs.contract_of((torch.zeros(2, 64),))
    with pytest.raises(InputError, match="batch dimension of 1"):
        codecs.contract_of((torch.zeros(()),))


def test_body_limit_covers_the_largest_legal_json_request():
    spec = (SampleSpec((64,), torch.float32),)
    limit = codecs.max_body_bytes(spec, 16)
    worst = _json({"inputs": [[[-1.2345678901234567e-308] * 64] * 16]})
    assert len(worst) < limit
