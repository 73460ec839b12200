"""The captured model's parts as data: tensors, nodes and pieces (the graph is in :mod:`.model_graph`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Name, shape and dtype of one tensor: enough to pre-allocate a receive buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "nbytes": self.nbytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorMeta:
        return cls(
            str(data["name"]),
            tuple(int(d) for d in data["shape"]),
            str(data["dtype"]),
            int(data["nbytes"]),
        )

    def empty(self) -> Any:
        """An uninitialised tensor of this shape and dtype (a receive buffer)."""
        import torch

        return torch.empty(self.shape, dtype=getattr(torch, self.dtype))


@dataclass(frozen=True, slots=True)
class Node:
    """One operation of the captured graph.

    ``flops`` follow the rules in :mod:`coinfer.graph._costs`; ``param_bytes`` counts each
    parameter once (the first node that uses it owns it), ``buffer_bytes`` likewise for
    persistent buffers such as batch-norm statistics; ``out_bytes`` is the size of the node's
    tensor output(s); ``inputs`` names the producing nodes or model inputs.
    """

    name: str
    op: str
    flops: int
    param_bytes: int
    out_bytes: int
    shape: tuple[int, ...] | None
    inputs: tuple[str, ...]
    buffer_bytes: int = 0
    target: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        shape = data.get("shape")
        return cls(
            name=str(data["name"]),
            op=str(data["op"]),
            flops=int(data["flops"]),
            param_bytes=int(data["param_bytes"]),
            out_bytes=int(data["out_bytes"]),
            shape=tuple(int(d) for d in shape) if shape is not None else None,
            inputs=tuple(str(i) for i in data["inputs"]),
            buffer_bytes=int(data.get("buffer_bytes", 0)),
            target=str(data.get("target", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "out_bytes": self.out_bytes,
            "shape": list(self.shape) if self.shape is not None else None,
            "inputs": list(self.inputs),
            "buffer_bytes": self.buffer_bytes,
            "target": self.target,
        }


@dataclass(frozen=True, slots=True)
class PieceInfo:
    """One piece: a run of nodes in topological order whose end is a legal cut point.

    Attributes
    ----------
    out_bytes : int
        Bytes crossing the cut after this piece: every tensor produced at or before this piece
        (model inputs included) and consumed after it, counted once; for the last piece the
        model's output bytes.
    mem_bytes : int
        Every parameter and buffer the piece uses (a tied weight counted at another piece too:
        the device needs it) + the peak bytes of live activations while it runs
        (its incoming tensors, pass-through tensors it must keep, and every tensor it produces
        until its last use), i.e. what a device must hold to run this piece alone.
    cut_tensors : tuple[TensorMeta, ...]
        The tensors crossing the cut after this piece, in the order stages exchange them.
    """

    index: int
    nodes: tuple[str, ...]
    flops: int
    param_bytes: int
    out_bytes: int
    mem_bytes: int
    cut_tensors: tuple[TensorMeta, ...]
    buffer_bytes: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PieceInfo:
        return cls(
            index=int(data["index"]),
            nodes=tuple(str(n) for n in data["nodes"]),
            flops=int(data["flops"]),
            param_bytes=int(data["param_bytes"]),
            out_bytes=int(data["out_bytes"]),
            mem_bytes=int(data.get("mem_bytes", 0)),
            cut_tensors=tuple(TensorMeta.from_dict(t) for t in data.get("cut_tensors", ())),
            buffer_bytes=int(data.get("buffer_bytes", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "nodes": list(self.nodes),
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "out_bytes": self.out_bytes,
            "mem_bytes": self.mem_bytes,
            "buffer_bytes": self.buffer_bytes,
            "cut_tensors": [t.to_dict() for t in self.cut_tensors],
        }
