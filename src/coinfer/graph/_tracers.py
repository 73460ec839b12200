"""The two tracers capture tries, torch.fx then torch.export, and the log silencing export needs.

Kept apart from :mod:`._capture` because they are the only code that depends on how each
tracer behaves (leaf modules, unlifting, its noisy loggers); capture only picks one and records.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, fx, nn


def trace_fx(model: nn.Module, inputs: tuple[Tensor, ...]) -> fx.GraphModule:
    """Symbolic trace keeping torch.nn layers as leaves; the model itself is not modified.

    The graph module is built from the traced objects themselves (a name -> object table), with
    every top-level name that collides with an attribute of ``fx.GraphModule`` renamed: a model
    whose submodule is called ``meta``, ``graph`` or ``code`` is legal PyTorch, but copied onto
    a GraphModule under that name it would clobber (or be refused by) the GraphModule's own
    attribute. The objects are the model's own (shared, not copied), as before.
    """
    tracer = fx.Tracer()
    graph = tracer.trace(model)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise TypeError(
            f"forward takes {len(placeholders)} inputs but {len(inputs)} example inputs were given"
        )
    root = tracer.root
    taken = {str(n.target).split(".", 1)[0] for n in graph.nodes if n.op in _ATTR_OPS}
    rename = {h: _free_name(h, taken) for h in sorted(taken) if h in _reserved_names()}
    table: dict[str, object] = {}
    for n in graph.nodes:
        if n.op not in _ATTR_OPS:
            continue
        target = str(n.target)
        obj = _lookup(root, target)
        head, dot, rest = target.partition(".")
        if head in rename:
            n.target = rename[head] + dot + rest
        table[str(n.target)] = obj
    graph.lint()
    return fx.GraphModule(table, graph, type(model).__name__)


_ATTR_OPS = ("call_module", "get_attr")


@functools.cache
def _reserved_names() -> frozenset[str]:
    """Every attribute name an ``fx.GraphModule`` instance already has (class and instance)."""
    probe = fx.GraphModule(nn.Module(), fx.Graph())
    return frozenset(dir(fx.GraphModule)) | frozenset(vars(probe))


def _free_name(name: str, taken: set[str]) -> str:
    reserved = _reserved_names()
    i = 0
    while True:
        cand = f"{name}_m{i}" if i else f"{name}_m"
        if cand not in taken and cand not in reserved:
            taken.add(cand)
            return cand
        i += 1


def _lookup(root: nn.Module, target: str) -> object:
    obj: object = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace_export(model: nn.Module, inputs: tuple[Tensor, ...]) -> fx.GraphModule:
    """torch.export (non-strict), unlifted so parameters are graph attributes again."""
    with _quiet_torch_logs():
        program = torch.export.export(model, inputs, strict=False)
    gm = program.module()
    assert isinstance(gm, fx.GraphModule)
    return gm


# Loggers torch.export writes warnings to while it explores a model; a failed attempt is
# reported in the CaptureError, so these would only be noise on the user's terminal.
_NOISY_LOGGERS = (
    "torch",
    "torch.fx.experimental.symbolic_shapes",
    "torch._dynamo",
    "torch.export",
    "torch._export",
    "torch._subclasses.fake_tensor",
)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        # A failed export also prints the partial graph to stderr; the reason is in our error.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
