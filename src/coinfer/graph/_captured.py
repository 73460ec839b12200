"""The record of one capture: the executable fx graph and what was measured on each value.

Its own module so that capture (which fills it), pieces (which cuts it) and split (which builds
stages from it) all depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import fx

from .types import Node, TensorMeta

# Value categories recorded per graph value.
TENSOR, CONST, OTHER = "tensor", "const", "other"


@dataclass(frozen=True, slots=True)
class ValueInfo:
    """What a graph value is: a tensor (with meta), a bakeable constant, or something else."""

    category: str
    meta: TensorMeta | None = None
    const: Any = None
    nbytes: int = 0  # tensor bytes, or the sum over tensors inside a container


@dataclass(frozen=True)
class Captured:
    """The executable graph and everything recorded about it (private to coinfer.graph).

    ``order`` lists compute-node names in topological order; ``users`` maps every value
    (model inputs included) to the names of compute nodes consuming it, with ``OUTPUT`` for
    the model output; ``output_names`` are the graph values that form the flattened tensor
    outputs, in order.
    """

    gm: fx.GraphModule
    backend: str
    order: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    values: dict[str, ValueInfo]
    users: dict[str, tuple[str, ...]]
    nodes: dict[str, Node]
    # node -> (storage key, bytes) of every parameter / buffer it uses, owned or shared: a
    # piece must hold all of them even when a tied weight is counted at another node.
    state: dict[str, tuple[tuple[Any, int], ...]] = field(default_factory=dict)


OUTPUT = "__output__"
