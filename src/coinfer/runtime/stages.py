"""Stage modules for the runtime: build one stage from code, move only its weights, cut contracts.

Every machine has the model code (as in any deployment), so a worker rebuilds the *structure* of
its stage from the model spec + cuts + index, then loads the weights the coordinator sends —
only that stage's tensors, as safetensors bytes (parsed without running code).

Two ways to cut a model into pieces (``partition``):

- ``"graph"``: coinfer's captured pieces (:func:`coinfer.graph.capture` / :func:`coinfer.graph.split`),
  the pieces that instances and planners number; any model capture supports;
- ``"sequential"``: the children of an ``nn.Sequential`` are the pieces — a manual split, used by
  tests and by the comparison with ``torch.distributed.pipelining`` (same split points there).

A stage module takes the tensors crossing its input cut as positional arguments and returns a
tuple of the tensors crossing its output cut.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InputError
from ..zoo import load_model
from .transport import WireTensorSpec

Partition = Literal["graph", "sequential"]
PARTITIONS: tuple[str, ...] = ("graph", "sequential")


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What a worker needs to rebuild its stage: model spec, input shape, cuts, partition."""

    model: str
    input_shape: tuple[int, ...] | None
    cuts: tuple[int, ...]
    partition: Partition = "graph"
    max_pieces: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "cuts": list(self.cuts),
            "partition": self.partition,
            "max_pieces": self.max_pieces,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageSpec:
        part = d.get("partition", "graph")
        if part not in PARTITIONS:
            raise InputError(f"unknown partition {part!r}; choose one of {', '.join(PARTITIONS)}")
        shape = d.get("input_shape")
        return cls(
            str(d["model"]),
            None if shape is None else tuple(int(s) for s in shape),
            tuple(int(c) for c in d["cuts"]),
            part,
            None if d.get("max_pieces") is None else int(d["max_pieces"]),
        )


class SequentialStage(nn.Module):
    """Children ``first..last`` of an ``nn.Sequential``: one tensor in, a 1-tuple out."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.layers(x),)


def _ranges(cuts: Sequence[int], num_pieces: int) -> list[tuple[int, int]]:
    bounds = [-1, *cuts, num_pieces - 1]
    if any(b >= c for b, c in itertools.pairwise(bounds)) or (cuts and cuts[-1] >= num_pieces - 1):
        raise InputError(
            f"cuts {list(cuts)} are not increasing piece indices below {num_pieces - 1}"
        )
    return [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1)]


def split_pieces(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    cuts: Sequence[int] | None,
    partition: Partition,
    max_pieces: int | None = None,
) -> tuple[list[nn.Module], int]:
    """Stage modules cut after pieces ``cuts`` (``None``: after every piece) and the piece count.

    One capture serves both answers (capturing is the slow part for large models).
    """
    if partition == "sequential":
        if not isinstance(model, nn.Sequential):
            raise InputError(
                f"partition 'sequential' needs an nn.Sequential model, got {type(model).__name__}"
            )
        children = list(model.children())
        n = len(children)
        cuts = range(n - 1) if cuts is None else cuts
        return [SequentialStage(children[a : b + 1]).eval() for a, b in _ranges(cuts, n)], n
    try:
        graph_mod = importlib.import_module("coinfer.graph")
        capture, split = graph_mod.capture, graph_mod.split
    except (ImportError, AttributeError):
        raise InputError(
            "partition 'graph' needs coinfer.graph.capture/split, which this install lacks"
        ) from None
    graph = capture(model, inputs, max_pieces=max_pieces)
    n = len(graph.pieces)
    cuts = range(n - 1) if cuts is None else cuts
    return [m.eval() for m in split(graph, list(cuts))], n


def split_model(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    cuts: Sequence[int],
    partition: Partition,
    max_pieces: int | None = None,
) -> list[nn.Module]:
    """Stage modules of ``model`` cut after pieces ``cuts`` (0-based, the plan's ``cuts``)."""
    return split_pieces(model, inputs, cuts, partition, max_pieces)[0]


def num_pieces(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    partition: Partition,
    max_pieces: int | None = None,
) -> int:
    """How many pieces ``model`` has under ``partition``."""
    if partition == "sequential":
        return len(list(model.children()))
    graph = importlib.import_module("coinfer.graph").capture(model, inputs, max_pieces=max_pieces)
    return len(graph.pieces)


def build_stage_module(spec: StageSpec, index: int) -> nn.Module:
    """The worker side: stage ``index`` rebuilt from code (weights to be loaded separately)."""
    if spec.partition == "graph":
        graph_mod = importlib.import_module("coinfer.graph")
        stage = graph_mod.build_stage(
            spec.model, spec.input_shape, spec.cuts, index, max_pieces=spec.max_pieces
        )
        return stage.eval()
    model, inputs = load_model(spec.model, spec.input_shape)
    stages = split_model(model, inputs, spec.cuts, spec.partition)
    if not 0 <= index < len(stages):
        raise InputError(f"stage index {index} out of range for {len(stages)} stages")
    return stages[index]


def as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    """A stage's (or model's) output as a tuple of tensors."""
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise InputError(
        f"stage output must be a tensor or a tuple of tensors, got {type(out).__name__}"
    )


def stage_weights(stage: nn.Module) -> bytes:
    """The stage's parameters and buffers as safetensors bytes (shared storage de-duplicated)."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in stage.state_dict().items()}
    return save(state)


def load_stage_weights(stage: nn.Module, data: bytes) -> None:
    """Load safetensors bytes into ``stage`` strictly (every key present, no extras)."""
    from safetensors.torch import load

    state = load(data)
    missing, unexpected = stage.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"stage weights do not match the stage: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def batch_inputs(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Repeat batch-1 example inputs to ``batch`` samples along dim 0."""
    return tuple(
        t.expand(batch, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in inputs
    )


@torch.inference_mode()
def cut_contracts(
    stages: Sequence[nn.Module], inputs: tuple[torch.Tensor, ...]
) -> list[list[WireTensorSpec]]:
    """``contracts[k]``: the tensors entering stage ``k``; ``contracts[K]``: the model's outputs.

    Found by one dry run of the stages on ``inputs`` (already at the micro-batch size).
    """
    contracts = [[WireTensorSpec.of(t) for t in inputs]]
    xs = inputs
    for st in stages:
        xs = as_tuple(st(*xs))
        contracts.append([WireTensorSpec.of(t) for t in xs])
    return contracts


def encode_tensors(tensors: Sequence[torch.Tensor]) -> bytes:
    """One message's tensors as a safetensors blob (keys ``t0, t1, ...``): a submission's
    inputs, a result's outputs."""
    from safetensors.torch import save

    return save({f"t{j}": t.contiguous() for j, t in enumerate(tensors)})


def decode_tensors(blob: bytes) -> list[torch.Tensor]:
    """The inverse of :func:`encode_tensors`; ``KeyError`` if the keys are not ``t0..tn-1``."""
    from safetensors.torch import load

    data = load(blob)
    return [data[f"t{j}"] for j in range(len(data))]


def decode_inputs(blob: bytes) -> dict[int, list[torch.Tensor]]:
    """The source's inputs blob (safetensors keys ``m{message}_{input}``) as tensors per message."""
    from safetensors.torch import load

    flat = load(blob)
    out: dict[int, list[torch.Tensor]] = {}
    for key in sorted(flat, key=lambda s: tuple(int(x) for x in s[1:].split("_"))):
        r, j = (int(x) for x in key[1:].split("_"))
        out.setdefault(r, []).append(flat[key])
        assert len(out[r]) == j + 1
    return out


__all__ = [
    "PARTITIONS",
    "Partition",
    "SequentialStage",
    "StageSpec",
    "as_tuple",
    "batch_inputs",
    "build_stage_module",
    "cut_contracts",
    "decode_inputs",
    "load_stage_weights",
    "num_pieces",
    "split_model",
    "split_pieces",
    "stage_weights",
]
