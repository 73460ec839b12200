"""The captured model as data: costed nodes in order, the ordered pieces over them, and the
executable graph behind them (private), which is what lets a graph be re-pieced or split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from ..errors import InputError
from ._captured import Captured
from ._pieces import build_pieces, choose_boundaries
from .types import Node, PieceInfo, TensorMeta


@dataclass(frozen=True)
class ModelGraph:
    """A captured model: costed nodes in topological order and the ordered pieces over them.

    Build with :func:`coinfer.graph.capture`; split with :func:`coinfer.graph.split`. The
    executable graph behind it (``_captured``) is private: it references the model's own
    submodules, so a ModelGraph keeps the model's weights alive but never changes them.
    """

    name: str
    nodes: tuple[Node, ...]
    pieces: tuple[PieceInfo, ...]
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    backend: str
    _captured: Captured | None = field(default=None, repr=False, compare=False)

    @property
    def input_bytes(self) -> int:
        """Bytes of the model inputs (``b[0]`` of the cost model)."""
        return sum(t.nbytes for t in self.inputs)

    @property
    def output_bytes(self) -> int:
        """Bytes of the model outputs (``b[P]``)."""
        return sum(t.nbytes for t in self.outputs)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        """Bytes of the model's parameters, each shared parameter counted once."""
        return sum(n.param_bytes for n in self.nodes)

    @property
    def total_buffer_bytes(self) -> int:
        return sum(n.buffer_bytes for n in self.nodes)

    @property
    def num_pieces(self) -> int:
        return len(self.pieces)

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError if none)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def with_max_pieces(self, n: int | None) -> ModelGraph:
        """The same graph with adjacent pieces merged until at most ``n`` remain.

        Merging always starts from the default (finest) pieces, so
        ``g.with_max_pieces(8).with_max_pieces(16)`` equals ``g.with_max_pieces(16)``.
        See :func:`coinfer.graph.merge_boundaries` for the algorithm (docs/graph.md).
        """
        if self._captured is None:
            raise InputError(
                f"model graph {self.name!r} has no executable graph (loaded from JSON); "
                "re-capture it to re-piece it"
            )
        groups = choose_boundaries(self._captured, n)
        return replace(self, pieces=build_pieces(self._captured, groups))

    def to_networkx(self) -> nx.DiGraph:
        """The DAG: node attrs ``flops``, ``param_bytes``, ``out_bytes``, ``op``, ``piece``; edge attr ``bytes``.

        Model inputs appear as nodes with ``op="input"``.
        """
        g = nx.DiGraph(name=self.name)
        piece_of = {name: p.index for p in self.pieces for name in p.nodes}
        out_bytes = {t.name: t.nbytes for t in self.inputs}
        for t in self.inputs:
            g.add_node(t.name, op="input", flops=0, param_bytes=0, out_bytes=t.nbytes, piece=-1)
        for n in self.nodes:
            out_bytes[n.name] = n.out_bytes
            g.add_node(
                n.name,
                op=n.op,
                flops=n.flops,
                param_bytes=n.param_bytes,
                out_bytes=n.out_bytes,
                piece=piece_of.get(n.name, -1),
            )
        for n in self.nodes:
            for src in n.inputs:
                if src in out_bytes:
                    g.add_edge(src, n.name, bytes=out_bytes[src])
        return g

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the ``coinfer inspect --json`` object plus inputs/outputs)."""
        return {
            "model": self.name,
            "backend": self.backend,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "nodes": [n.to_dict() for n in self.nodes],
            "pieces": [p.to_dict() for p in self.pieces],
            "totals": {
                "flops": self.total_flops,
                "param_bytes": self.total_param_bytes,
                "buffer_bytes": self.total_buffer_bytes,
                "input_bytes": self.input_bytes,
                "output_bytes": self.output_bytes,
                "nodes": len(self.nodes),
                "pieces": len(self.pieces),
            },
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelGraph:
        """Rebuild the costs from :meth:`to_dict` / ``coinfer inspect --json`` output.

        The result has every number but no executable graph: it can be inspected, turned into
        a networkx DAG or used to build a planning instance, not split or re-pieced.

        Raises
        ------
        InputError
            When a required key is missing or has the wrong type (names the key).
        """
        try:
            return cls(
                name=str(data["model"]),
                nodes=tuple(Node.from_dict(n) for n in data["nodes"]),
                pieces=tuple(PieceInfo.from_dict(p) for p in data["pieces"]),
                inputs=tuple(TensorMeta.from_dict(t) for t in data.get("inputs", ())),
                outputs=tuple(TensorMeta.from_dict(t) for t in data.get("outputs", ())),
                backend=str(data.get("backend", "unknown")),
            )
        except KeyError as exc:
            raise InputError(f"model graph JSON: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"model graph JSON: bad value ({exc})") from None

    def __str__(self) -> str:
        return (
            f"ModelGraph {self.name!r} ({self.backend}): {len(self.nodes)} nodes, "
            f"{len(self.pieces)} pieces, {self.total_flops / 1e9:.3f} GFLOPs, "
            f"{self.total_param_bytes / 1e6:.2f} MB params, "
            f"in {self.input_bytes} B, out {self.output_bytes} B"
        )
