"""Request and response bodies <-> tensors, checked against the model's input contract.

Two wire forms, never pickle (a pickle body would run the sender's code in the server):

- JSON: ``{"inputs": [T1, T2, ...]}``, one nested list per model input, each with the batch
  dimension first; answered as ``{"outputs": [...]}`` in the same form. JSON has no dtype, so
  numbers are cast to the contract's dtype after a kind check (an integer input takes only
  integers, a bool input only ``true``/``false``, a float input any number but a bool): a
  silent ``"1.5"`` -> 1.5 or ``true`` -> 1.0 would hide a client bug.
- safetensors (``application/octet-stream``): tensors named ``input_0``, ``input_1``, ...;
  answered with ``output_0``, ... . Dtypes must match exactly (no casting: a client sending
  binary tensors means their bytes).

Every failure is a :class:`BadInput` carrying the HTTP status it maps to (400: not parseable,
422: parseable but breaks the contract) and one line naming the input and what is wrong.
Float outputs survive JSON exactly: a float32 widened to a Python float prints as the shortest
decimal that parses back to the same double, hence to the same float32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import InputError

JSON = "application/json"
SAFETENSORS = "application/octet-stream"
Form = Literal["json", "safetensors"]

# JSON leaf types each dtype kind accepts (``bool`` is a subclass of ``int`` in Python, so the
# check is on exact types).
_FLOAT_KINDS = frozenset({int, float})
_INT_KINDS = frozenset({int})
_BOOL_KINDS = frozenset({bool})


class BadInput(InputError):
    """A request body the server cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """The contract of one model input for one sample: shape without the batch dimension."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def sample_bytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def describe(self) -> str:
        return f"[n, {', '.join(str(s) for s in self.shape)}] {self.dtype_name}".replace(
            "[n, ]", "[n]"
        )


def contract_of(example: Sequence[torch.Tensor]) -> tuple[SampleSpec, ...]:
    """The per-sample contract from a model's batch-1 example inputs.

    Raises :class:`InputError` for an input without a leading batch dimension of 1: the
    runtime batches only such inputs (``runtime.stages.batch_inputs``), so the server could
    not group requests for that model."""
    specs = []
    for j, t in enumerate(example):
        if t.dim() == 0 or t.shape[0] != 1:
            raise InputError(
                f"model input {j} has shape {tuple(t.shape)}: serving needs every input to have "
                "a batch dimension of 1 first"
            )
        specs.append(SampleSpec(tuple(int(s) for s in t.shape[1:]), t.dtype))
    return tuple(specs)


def _kinds(dtype: torch.dtype) -> frozenset[type]:
    if dtype == torch.bool:
        return _BOOL_KINDS
    if dtype.is_floating_point:
        return _FLOAT_KINDS
    if dtype.is_complex:
        raise BadInput(f"complex inputs ({dtype}) cannot be sent as JSON; use safetensors")
    return _INT_KINDS


def _nested_to_tensor(data: Any, spec: SampleSpec, where: str) -> torch.Tensor:
    """One input's nested list -> tensor of shape ``(n, *spec.shape)``, walking level by level
    (a level's lengths are checked before the next is read, so a ragged or too-deep list is
    named at the level it breaks, in time linear in its size)."""
    if not isinstance(data, list) or not data:
        raise BadInput(f"{where}: expected a non-empty list (batch first), got {_kind(data)}")
    shape = (len(data), *spec.shape)
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        nxt: list[Any] = []
        for item in level:
            if not isinstance(item, list):
                raise BadInput(
                    f"{where}: expected shape {list(shape)}, found {_kind(item)} at depth {depth}"
                )
            if len(item) != size:
                raise BadInput(
                    f"{where}: expected shape {list(shape)}, found length {len(item)} at depth "
                    f"{depth}"
                )
            nxt.extend(item)
        level = nxt
    allowed = _kinds(spec.dtype)
    found = {type(v) for v in level}
    if not found <= allowed:
        bad = sorted(t.__name__ for t in found - allowed)
        raise BadInput(
            f"{where}: {spec.dtype_name} input takes {' or '.join(sorted(a.__name__ for a in allowed))}"
            f" values, found {', '.join(bad)} (expected shape {list(shape)})"
        )
    try:
        return torch.tensor(level, dtype=spec.dtype).reshape(shape)
    except (OverflowError, RuntimeError, ValueError) as exc:
        raise BadInput(f"{where}: values do not fit {spec.dtype_name} ({exc})"[:300]) from None


def _kind(x: Any) -> str:
    if isinstance(x, list):
        return f"a list of {len(x)}"
    return "null" if x is None else type(x).__name__


def _batch(tensors: Sequence[torch.Tensor], max_samples: int) -> int:
    sizes = {int(t.shape[0]) for t in tensors}
    if len(sizes) != 1:
        raise BadInput(f"inputs disagree on the batch size: {sorted(sizes)}")
    (n,) = sizes
    if n < 1:
        raise BadInput("the batch dimension must be at least 1")
    if n > max_samples:
        raise BadInput(
            f"{n} samples in one request; this server takes at most {max_samples}", status=413
        )
    return n


def decode_json(
    body: bytes, contract: Sequence[SampleSpec], max_samples: int
) -> list[torch.Tensor]:
    """A JSON request body -> one tensor per model input (batch dimension first)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"body is not JSON ({exc})"[:200], status=400) from None
    except RecursionError:
        raise BadInput("body JSON is nested too deeply", status=400) from None
    if not isinstance(doc, dict):
        raise BadInput(f'body must be a JSON object {{"inputs": [...]}}, got {_kind(doc)}')
    unknown = sorted(set(doc) - {"inputs"})
    if unknown:
        raise BadInput(f"unknown field(s) {', '.join(map(repr, unknown))}; the body takes 'inputs'")
    if "inputs" not in doc:
        raise BadInput("missing field 'inputs' (a list with one nested list per model input)")
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or len(inputs) != len(contract):
        got = f"{len(inputs)}" if isinstance(inputs, list) else _kind(inputs)
        raise BadInput(
            f"'inputs' must hold {len(contract)} nested list(s), one per model input "
            f"({'; '.join(s.describe() for s in contract)}), got {got}"
        )
    tensors = [
        _nested_to_tensor(x, spec, f"input {j}")
        for j, (x, spec) in enumerate(zip(inputs, contract, strict=True))
    ]
    _batch(tensors, max_samples)
    return tensors


def decode_safetensors(
    body: bytes, contract: Sequence[SampleSpec], max_samples: int
) -> list[torch.Tensor]:
    """A safetensors request body (``input_0``, ``input_1``, ...) -> one tensor per input."""
    from safetensors.torch import load

    try:
        named = load(body)
    except Exception as exc:  # the parser's own error types vary between versions
        raise BadInput(f"body is not a safetensors file ({exc})"[:200], status=400) from None
    expected = [f"input_{j}" for j in range(len(contract))]
    if sorted(named) != sorted(expected):
        raise BadInput(
            f"safetensors body must hold exactly {', '.join(expected)}; got "
            f"{', '.join(sorted(named)) or 'nothing'}"
        )
    tensors = []
    for j, (name, spec) in enumerate(zip(expected, contract, strict=True)):
        t = named[name]
        if (
            t.dtype != spec.dtype
            or t.dim() != len(spec.shape) + 1
            or tuple(t.shape[1:]) != spec.shape
        ):
            raise BadInput(
                f"input {j} ({name}): got {list(t.shape)} {str(t.dtype).removeprefix('torch.')}, "
                f"the model takes {spec.describe()}"
            )
        tensors.append(t)
    _batch(tensors, max_samples)
    return tensors


def decode(
    body: bytes, form: Form, contract: Sequence[SampleSpec], max_samples: int
) -> list[torch.Tensor]:
    """Decode a request body in ``form`` (see :func:`request_form`)."""
    if form == "json":
        return decode_json(body, contract, max_samples)
    return decode_safetensors(body, contract, max_samples)


def request_form(content_type: str | None) -> Form:
    """The body's form from its ``Content-Type`` (415 for anything else)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == JSON:
        return "json"
    if base == SAFETENSORS:
        return "safetensors"
    raise BadInput(
        f"Content-Type must be {JSON} or {SAFETENSORS} (safetensors), got {base or 'none'!r}",
        status=415,
    )


def response_form(request: Form, accept: str | None) -> Form:
    """Answer in the request's form unless ``Accept`` names only the other one."""
    wanted = {a.split(";", 1)[0].strip().lower() for a in (accept or "").split(",")}
    if request == "safetensors" and JSON in wanted and SAFETENSORS not in wanted:
        return "json"
    if request == "json" and SAFETENSORS in wanted and JSON not in wanted:
        return "safetensors"
    return request


def encode(outputs: Sequence[torch.Tensor], form: Form) -> tuple[bytes, str]:
    """Outputs -> ``(body, content type)``. JSON keeps non-finite floats as ``NaN``/
    ``Infinity`` tokens (as Python's and JavaScript's JSON readers take them); ask for
    safetensors to avoid them."""
    if form == "json":
        doc = {"outputs": [t.tolist() for t in outputs]}
        return json.dumps(doc, separators=(",", ":")).encode(), JSON
    from safetensors.torch import save

    return save({f"output_{i}": t.contiguous() for i, t in enumerate(outputs)}), SAFETENSORS


def max_body_bytes(contract: Sequence[SampleSpec], max_samples: int) -> int:
    """The largest body a request of ``max_samples`` can need: 32 characters per number in
    JSON (``-1.2345678901234567e-308,`` is 25) and a 64 kB allowance for headers and
    brackets; a safetensors body is smaller than that."""
    numbers = max_samples * sum(s.numel for s in contract)
    return 32 * numbers + 65_536


__all__ = [
    "JSON",
    "SAFETENSORS",
    "BadInput",
    "SampleSpec",
    "contract_of",
    "decode",
    "decode_json",
    "decode_safetensors",
    "encode",
    "max_body_bytes",
    "request_form",
    "response_form",
]
