"""The two tracers capture tries, torch.fx then torch.export, and the log silencing export needs.

Kept apart from :mod:`._capture` because they are the only code that depends on how each
tracer behaves (leaf modules, unlifting, its noisy loggers); capture only picks one and records.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, fx, nn


def trace_fx(model: nn.Module, inputs: tuple[Tensor, ...]) -> fx.GraphModule:
    """Symbolic trace keeping torch.nn layers as leaves; the model itself is not modified."""
    tracer = fx.Tracer()
    graph = tracer.trace(model)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise TypeError(
            f"forward takes {len(placeholders)} inputs but {len(inputs)} example inputs were given"
        )
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


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
