"""Capture a model into a costed DAG, cut it into ordered pieces, and split it into stages.

``capture(model, inputs)`` → :class:`ModelGraph` (nodes with FLOPs / parameter bytes / output
bytes, pieces with cut bytes and memory); ``split(graph, cuts)`` → runnable stage modules whose
composition reproduces the model exactly. See docs/graph.md.
"""

from __future__ import annotations

from ._capture import capture
from ._pieces import merge_boundaries
from ._split import (
    StageModule,
    build_stage,
    check_cuts,
    load_stage,
    read_stage_header,
    run_stages,
    save_stage,
    split,
)
from .model_graph import ModelGraph
from .types import Node, PieceInfo, TensorMeta

__all__ = [
    "ModelGraph",
    "Node",
    "PieceInfo",
    "StageModule",
    "TensorMeta",
    "build_stage",
    "capture",
    "check_cuts",
    "load_stage",
    "merge_boundaries",
    "read_stage_header",
    "run_stages",
    "save_stage",
    "split",
]
