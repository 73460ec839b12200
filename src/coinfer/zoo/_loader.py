"""Resolve a model spec into ``(module, example_inputs)``, deterministically."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, ModelLoadError
from ._registry import TEXT_VOCAB_FOR_INPUTS, ZOO, ZooEntry

# Seed for weights and example inputs: a fixed value makes "same spec → identical weights"
# hold across processes, which is how remote workers rebuild their stage without receiving
# pickled modules.
MODEL_SEED = 0
# Example inputs use a different stream so changing the input shape never changes weights.
INPUT_SEED = 1


def parse_input_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``"1,3,224,224"`` (also ``1x3x224x224`` or spaces) into a tuple of positive ints.

    Raises
    ------
    InputError
        When a dimension is not a positive integer.
    """
    if text is None:
        return None
    if isinstance(text, str):
        body = text.strip().strip("()[]")
        # Commas (or spaces) separate dimensions; "1x3x224x224" is accepted when no comma is used.
        sep = r"[,\s]+" if ("," in body or " " in body.strip()) else r"[x×]"
        parts = [p for p in re.split(sep, body.strip()) if p]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise InputError(
                f"bad input shape {text!r}: expected comma-separated positive integers like 1,3,224,224"
            ) from None
    else:
        dims = tuple(int(d) for d in text)
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"bad input shape {text!r}: every dimension must be a positive integer")
    return dims


def make_inputs(
    shape: tuple[int, ...], kind: str = "image", like: Tensor | None = None
) -> tuple[Tensor, ...]:
    """Deterministic example inputs of ``shape``: ``randn`` floats or token ids.

    ``like`` (an example tensor from a user factory) decides the dtype: integer tensors get
    ids in ``[0, max(like) + 1)`` so they stay valid indices for the model's embeddings.
    """
    gen = torch.Generator().manual_seed(INPUT_SEED)
    if like is not None and not like.is_floating_point():
        # Meta examples have no values to bound the ids: any valid id will do for costing.
        high = int(like.max().item()) + 1 if like.numel() and not like.is_meta else 1
        return (torch.randint(0, max(high, 1), shape, generator=gen, dtype=like.dtype),)
    if kind == "tokens":
        return (torch.randint(0, TEXT_VOCAB_FOR_INPUTS, shape, generator=gen),)
    dtype = like.dtype if like is not None else torch.float32
    return (torch.randn(shape, generator=gen).to(dtype),)


def load_model(
    spec: str, input_shape: tuple[int, ...] | None = None, *, meta: bool = False
) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """Build the model named by ``spec`` with deterministic random weights, in eval mode.

    Parameters
    ----------
    spec : str
        A zoo name (``resnet50``), ``path/to/file.py:factory`` or ``package.module:factory``.
        A factory takes no arguments and returns an ``nn.Module`` or ``(module, example_inputs)``.
    input_shape : tuple of int, optional
        Shape of the (single) example input; defaults to the zoo entry's shape or the
        factory's example inputs.

    Returns
    -------
    (module, example_inputs)
        The float32 module in eval mode and a tuple of example input tensors.

    Raises
    ------
    ModelLoadError
        File missing, no such attribute, the factory raised, returned the wrong type, or the
        input shape does not fit the model.

    Notes
    -----
    ``meta=True`` builds the model on PyTorch's meta device: shapes only, no weight memory and
    no initialisation time. Such a model can be captured with ``capture(..., fake=True)`` to
    cost it (FLOPs, bytes, pieces) in well under a second, but not run.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"bad model spec {spec!r}: expected a zoo name or file.py:factory")
    spec = spec.strip()
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    entry = ZOO.get(spec)
    if entry is not None:
        return _load_zoo(entry, shape, meta)
    if ":" not in spec:
        raise ModelLoadError(
            f"unknown model {spec!r}: not a zoo name ({', '.join(ZOO)}) "
            "and not of the form file.py:factory or package.module:factory"
        )
    factory = _resolve_factory(spec)
    result = _call_seeded(factory, spec, meta)
    model, inputs = _unpack(result, spec)
    if shape is not None:
        inputs = make_inputs(shape, like=inputs[0] if inputs else None)
    if not inputs:
        raise ModelLoadError(
            f"model {spec!r}: the factory returned no example inputs; pass an input shape"
        )
    return _finish(model), _to_meta(inputs) if meta else inputs


def _to_meta(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(t.to("meta") for t in inputs)


def _load_zoo(
    entry: ZooEntry, shape: tuple[int, ...] | None, meta: bool = False
) -> tuple[nn.Module, tuple[Tensor, ...]]:
    if shape is not None and len(shape) != len(entry.input_shape):
        raise ModelLoadError(
            f"bad input shape {shape} for {entry.name}: expected {len(entry.input_shape)} "
            f"dimensions like {','.join(map(str, entry.input_shape))}"
        )
    if shape is not None and entry.input_kind == "image" and shape[1] != entry.input_shape[1]:
        raise ModelLoadError(
            f"bad input shape {shape} for {entry.name}: expected {entry.input_shape[1]} channels"
        )
    model = _call_seeded(entry.resolve(), entry.name, meta)
    inputs = make_inputs(shape or entry.input_shape, entry.input_kind)
    return _finish(model), _to_meta(inputs) if meta else inputs


def _resolve_factory(spec: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not attr or not target:
        raise ModelLoadError(f"bad model spec {spec!r}: expected file.py:factory")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        # A stable module name per file so re-loading the same file reuses one module object.
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"_coinfer_user_model_{digest}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ModelLoadError(f"cannot import model file {path}")
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                raise ModelLoadError(
                    f"importing {path} failed: {type(exc).__name__}: {exc}"
                ) from exc
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot import module {target!r}: {type(exc).__name__}: {exc}"
            ) from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelLoadError(f"{target} has no attribute {attr!r}")
    if not callable(factory):
        raise ModelLoadError(f"{target}:{attr} is not callable")
    return factory


def _call_seeded(factory: Any, spec: str, meta: bool = False) -> Any:
    """Call ``factory()`` with the global RNG seeded, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]), torch.device("meta" if meta else "cpu"):
        torch.manual_seed(MODEL_SEED)
        try:
            return factory()
        except Exception as exc:
            raise ModelLoadError(
                f"model factory {spec!r} raised {type(exc).__name__}: {exc}"
            ) from exc


def _unpack(result: Any, spec: str) -> tuple[nn.Module, tuple[Tensor, ...]]:
    if isinstance(result, nn.Module):
        return result, ()
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        model, inputs = result
        if isinstance(inputs, Tensor):
            inputs = (inputs,)
        if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, Tensor) for t in inputs):
            raise ModelLoadError(
                f"model factory {spec!r} returned example inputs of type "
                f"{type(inputs).__name__}; expected a tensor or a tuple of tensors"
            )
        return model, tuple(inputs)
    raise ModelLoadError(
        f"model factory {spec!r} returned {type(result).__name__}; "
        "expected an nn.Module or (nn.Module, example_inputs)"
    )


def _finish(model: nn.Module) -> nn.Module:
    """float32 + eval: the only form coinfer profiles, splits and runs."""
    return model.float().eval()
