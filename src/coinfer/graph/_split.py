"""Stages: contiguous runs of pieces as runnable modules, and how workers get them safely.

A stage is an ``fx.GraphModule`` holding only the submodules, parameters and buffers its own
nodes use. It takes the tensors crossing the cut before it (for the first stage: the model
inputs) and returns the tensors crossing the cut after it (for the last stage: the flattened
model outputs), both as tuples in :attr:`PieceInfo.cut_tensors` order, so
``x = inputs; for s in stages: x = s(*x)`` reproduces the model bit for bit: every stage calls
the same modules / ATen kernels in the same order as the unsplit graph. Tensors that a stage
does not use but a later one does (residual or U-Net skips) are passed through.

Shipping a stage to a remote worker never unpickles anything from the network: the worker
rebuilds the model from its spec (zoo name or importable factory; weights are deterministic),
captures and splits it locally with the same cuts (:func:`build_stage`), and optionally loads
this stage's weights from a safetensors file (:func:`save_stage` / :func:`load_stage`), which
holds tensors and a JSON header only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils import _pytree as pytree

from ..errors import InputError
from ..zoo import load_model
from ._capture import capture
from ._captured import CONST, Captured
from ._pieces import crossing_values
from .model_graph import ModelGraph
from .types import TensorMeta

# Node kinds that only query shapes: when their value must cross a cut, the consuming stage
# recomputes them from its own inputs instead of receiving (or baking in) the number.
REMATERIALIZE_KINDS = frozenset({"getattr", "getitem", "size", "dim"})

# safetensors header key under which a stage's recipe and I/O contract are stored.
STAGE_METADATA_KEY = "coinfer_stage"


class StageModule(fx.GraphModule):
    """One pipeline stage. ``forward(*tensors) -> tuple[Tensor, ...]``.

    Attributes
    ----------
    index : int
        Stage number (0-based).
    pieces : tuple[int, int]
        First and last piece (inclusive) of the ModelGraph this stage covers.
    input_meta, output_meta : tuple[TensorMeta, ...]
        Names, shapes and dtypes of the inputs / outputs, for pre-allocating receive buffers.
    recipe : dict or None
        How to rebuild this stage elsewhere (model spec, input shape, cuts, max pieces, index);
        set by :func:`build_stage`, ``None`` for stages split from an in-memory model.
    """

    index: int
    pieces: tuple[int, int]
    input_meta: tuple[TensorMeta, ...]
    output_meta: tuple[TensorMeta, ...]
    recipe: dict[str, Any] | None

    def describe(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in self.input_meta)
        outs = ", ".join(f"{t.name}{list(t.shape)}" for t in self.output_meta)
        return f"stage {self.index} pieces {self.pieces[0]}..{self.pieces[1]}: ({ins}) -> ({outs})"


def check_cuts(cuts: Sequence[int], num_pieces: int) -> tuple[int, ...]:
    """Validate cut indices: integers, strictly increasing, each in ``[0, num_pieces - 2]``."""
    result: list[int] = []
    for c in cuts:
        if isinstance(c, (bool, float, str)) or not hasattr(c, "__index__"):
            raise InputError(f"bad cut {c!r}: cuts are piece indices (integers)")
        c = int(c.__index__())
        if not 0 <= c <= num_pieces - 2:
            raise InputError(
                f"bad cut {c}: a cut goes after piece 0..{num_pieces - 2} "
                f"(the graph has {num_pieces} pieces)"
            )
        if result and c <= result[-1]:
            raise InputError(f"bad cuts {list(cuts)}: must be strictly increasing")
        result.append(c)
    return tuple(result)


def split(graph: ModelGraph, cuts: Sequence[int]) -> list[StageModule]:
    """Cut ``graph`` after each piece index in ``cuts`` into ``len(cuts) + 1`` stages.

    Parameters
    ----------
    graph : ModelGraph
        A captured graph (from :func:`coinfer.graph.capture`).
    cuts : sequence of int
        0-based piece indices after which to cut, strictly increasing.

    Returns
    -------
    list of StageModule
        Stage ``k`` holds only its own parameters; they are the captured model's own tensors
        (shared, not copied), so splitting costs no memory and never modifies the model.

    Raises
    ------
    InputError
        If a cut index is out of range or the cuts are not strictly increasing.
    """
    c = graph._captured
    if c is None:
        raise InputError(
            f"model graph {graph.name!r} has no executable graph (loaded from JSON); re-capture it"
        )
    cuts = check_cuts(cuts, len(graph.pieces))
    groups = [p.nodes for p in graph.pieces]
    crossing = crossing_values(c, groups)
    bounds = list(zip((0, *(k + 1 for k in cuts)), (*cuts, len(groups) - 1), strict=True))
    stages = []
    for index, (first, last) in enumerate(bounds):
        nodes = [name for g in groups[first : last + 1] for name in g]
        inputs = list(c.input_names) if first == 0 else crossing[first - 1]
        outputs = list(c.output_names) if last == len(groups) - 1 else crossing[last]
        stage = _build_stage(c, nodes, inputs, outputs, f"{graph.name}_stage{index}")
        stage.index = index
        stage.pieces = (first, last)
        stage.input_meta = tuple(_meta(c, v) for v in inputs)
        stage.output_meta = tuple(_meta(c, v) for v in outputs)
        stage.recipe = None
        stages.append(stage)
    return stages


def _arg_nodes(n: fx.Node) -> list[fx.Node]:
    return [a for a in pytree.tree_leaves((n.args, n.kwargs)) if isinstance(a, fx.Node)]


def _meta(c: Captured, name: str) -> TensorMeta:
    meta = c.values[name].meta
    assert meta is not None, name
    return meta


def _build_stage(
    c: Captured, nodes: list[str], inputs: list[str], outputs: list[str], class_name: str
) -> StageModule:
    src = {n.name: n for n in c.gm.graph.nodes}
    graph = fx.Graph()
    env: dict[str, Any] = {}
    for name in inputs:
        env[name] = graph.placeholder(name)
        env[name].meta = dict(src[name].meta)

    memo: dict[str, bool] = {}

    def derivable(name: str) -> bool:
        """Can this constant be recomputed here from the stage's own inputs (a shape query)?"""
        if name in env:
            return True
        if name not in memo:
            node = c.nodes.get(name)
            memo[name] = (
                node is not None
                and node.op in REMATERIALIZE_KINDS
                and all(
                    a.name in env
                    or a.op == "get_attr"
                    or (c.values[a.name].category == CONST and derivable(a.name))
                    for a in _arg_nodes(src[name])
                )
            )
        return memo[name]

    def remap(arg: fx.Node) -> Any:
        if arg.name in env:
            return env[arg.name]
        if arg.op == "get_attr":
            env[arg.name] = graph.get_attr(str(arg.target))
            return env[arg.name]
        info = c.values.get(arg.name)
        if info is not None and info.category == CONST:
            if derivable(arg.name):
                # Recompute sizes from the tensors this stage receives, so the stage keeps
                # working when the batch (or another dimension) differs from the capture.
                env[arg.name] = graph.node_copy(src[arg.name], remap)
                return env[arg.name]
            return info.const  # fixed for the captured input shape: bake it in
        raise AssertionError(f"{arg.name} is needed but neither an input nor computed here")

    for name in nodes:
        env[name] = graph.node_copy(src[name], remap)
    graph.output(tuple(env[name] if name in env else remap(src[name]) for name in outputs))
    graph.lint()
    return StageModule(c.gm, graph, class_name)


def save_stage(stage: StageModule, path: str | Path) -> Path:
    """Write the stage's weights and I/O contract to a safetensors file.

    The file holds the state dict (tensors only) and a JSON header with the stage's recipe,
    pieces and input/output metadata; loading it never executes code.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().clone() for k, v in stage.state_dict().items()}
    header = {
        "recipe": stage.recipe,
        "index": stage.index,
        "pieces": list(stage.pieces),
        "input_meta": [t.to_dict() for t in stage.input_meta],
        "output_meta": [t.to_dict() for t in stage.output_meta],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={STAGE_METADATA_KEY: json.dumps(header)})
    return path


def read_stage_header(path: str | Path) -> dict[str, Any]:
    """The JSON header :func:`save_stage` wrote (recipe, pieces, input/output meta)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"stage file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise InputError(f"{path} is not a safetensors stage file: {exc}") from exc
    if STAGE_METADATA_KEY not in meta:
        raise InputError(f"{path} has no {STAGE_METADATA_KEY!r} header: not written by save_stage")
    return json.loads(meta[STAGE_METADATA_KEY])


def load_stage(path: str | Path, stage: StageModule | None = None) -> StageModule:
    """Load a stage's weights from ``path`` (written by :func:`save_stage`).

    Parameters
    ----------
    path : path
        The safetensors file.
    stage : StageModule, optional
        A structurally identical stage to load the weights into (e.g. from :func:`split`).
        When omitted, the stage is rebuilt from the recipe in the file's header
        (:func:`build_stage`), which requires the stage to have been built from a model spec.

    Raises
    ------
    InputError
        Missing file, no header, no recipe to rebuild from, or weights / I/O contract that do
        not match the target stage (names the first mismatching key).
    """
    from safetensors.torch import load_file

    header = read_stage_header(path)
    if stage is None:
        recipe = header.get("recipe")
        if not recipe:
            raise InputError(
                f"{path}: the stage has no recipe (it was split from an in-memory model); "
                "pass the stage to load into"
            )
        stage = build_stage(
            recipe["model"],
            tuple(recipe["input_shape"]) if recipe.get("input_shape") else None,
            recipe["cuts"],
            recipe["index"],
            recipe.get("max_pieces"),
        )
    expected = [TensorMeta.from_dict(t) for t in header["input_meta"]]
    if list(stage.input_meta) != expected:
        raise InputError(
            f"{path}: stage inputs {expected} do not match the target stage {list(stage.input_meta)}"
        )
    tensors = load_file(str(path))
    own = stage.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise InputError(
            f"{path}: weights do not match the stage (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, value in tensors.items():
        if own[key].shape != value.shape or own[key].dtype != value.dtype:
            raise InputError(
                f"{path}: weight {key} has shape {tuple(value.shape)} {value.dtype}, "
                f"stage expects {tuple(own[key].shape)} {own[key].dtype}"
            )
    with torch.no_grad():
        stage.load_state_dict(tensors, strict=True)
    return stage


def build_stage(
    model: str,
    input_shape: tuple[int, ...] | None,
    cuts: Sequence[int],
    index: int,
    max_pieces: int | None = None,
    weights: str | Path | None = None,
) -> StageModule:
    """Rebuild stage ``index`` of ``model`` split at ``cuts``, locally and deterministically.

    This is how a remote worker obtains its stage: it receives only this recipe (strings and
    integers), loads the model from the zoo / its own files with the fixed seed, captures and
    splits it exactly as the coordinator did, and keeps stage ``index``. ``weights`` optionally
    names a safetensors file from :func:`save_stage` to load (for non-random weights).
    """

    module, inputs = load_model(model, input_shape)
    graph = capture(module, inputs, max_pieces=max_pieces, name=model)
    stages = split(graph, cuts)
    if not 0 <= index < len(stages):
        raise InputError(f"bad stage index {index}: {len(stages)} stages for cuts {list(cuts)}")
    stage = stages[index]
    stage.recipe = {
        "model": model,
        "input_shape": list(inputs[0].shape) if input_shape is not None else None,
        "cuts": [int(k) for k in cuts],
        "index": int(index),
        "max_pieces": max_pieces,
    }
    del stages, graph, module  # drop the other stages' weights
    if weights is not None:
        load_stage(weights, stage)
    return stage


def run_stages(stages: Sequence[nn.Module], inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Feed ``inputs`` through ``stages`` in order (the single-process reference pipeline)."""
    x: tuple[Tensor, ...] = tuple(inputs)
    with torch.no_grad():
        for stage in stages:
            x = stage(*x)
    return x
