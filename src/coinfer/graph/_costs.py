"""Operator kinds and FLOP counts: how capture prices each node.

Counting rules (docs/graph.md, "Costs"):

* convolution / linear / matmul / attention: FLOPs = 2 × MACs (one multiply + one add), the
  convention under which published "GMACs" figures are doubled. Bias adds are not counted, as in
  the published figures.
* element-wise ops: a small documented constant per output element (``ELEMENTWISE_FLOPS``):
  1 for add/mul/ReLU-like ops, more for normalisation and softmax.
* pooling: one op per window element per output element (adaptive pools: one per input element).
* views, reshapes, getitem, dropout in eval mode, concatenation bookkeeping: 0 FLOPs
  (concatenation copies memory but does no arithmetic).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Per-output-element FLOPs of non-matmul ops. Small integers by convention (fvcore/ptflops
# count similar constants); they matter little next to convolutions and matmuls.
ELEMENTWISE_FLOPS: dict[str, int] = {
    "add": 1, "sub": 1, "mul": 1, "div": 1, "neg": 1, "pow": 1, "sqrt": 1, "rsqrt": 1,
    "exp": 1, "log": 1, "abs": 1, "clamp": 1, "where": 1, "mean": 1, "sum": 1,
    "relu": 1, "relu6": 1, "leaky_relu": 1, "hardtanh": 1, "sigmoid": 1, "tanh": 1,
    "silu": 1, "hardswish": 1, "hardsigmoid": 1,
    "gelu": 1,
    "batchnorm": 2,  # eval mode: one scale and one shift per element
    "layernorm": 5,  # mean, variance, subtract, divide, affine
    "groupnorm": 5,
    "softmax": 3,  # exp, sum, divide
    "log_softmax": 3,
    "maxpool": 0, "avgpool": 0,  # priced by window below
    "cat": 0, "stack": 0, "pad": 0, "upsample": 1,
    "embedding": 0,  # a gather: memory traffic, no arithmetic
}  # fmt: skip

# Kinds that only reinterpret or route data (no arithmetic, no new storage worth a piece of
# its own); they never start a piece.
VIEW_KINDS: frozenset[str] = frozenset(
    {
        "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous",
        "getitem", "getattr", "size", "expand", "squeeze", "unsqueeze", "split", "chunk",
        "dropout", "identity", "slice", "select", "to", "type_as", "clone", "alias",
        "detach", "assert", "sym", "arange", "full", "zeros", "ones", "tensor", "scalar",
        "masked_fill", "tril", "triu", "guardsfn", "gather",
    }
)  # fmt: skip

# Single-input element-wise kinds that fuse into the producing layer's piece ("layer-like"
# granularity: conv + BN + ReLU is one piece, since a cut between them costs the same bytes).
FUSABLE_KINDS: frozenset[str] = frozenset(
    {
        "batchnorm", "relu", "relu6", "leaky_relu", "hardtanh", "gelu", "silu", "sigmoid",
        "tanh", "hardswish", "hardsigmoid", "dropout", "identity",
    }
)  # fmt: skip

_MODULE_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Conv1d, "conv1d"),
    (nn.Conv2d, "conv2d"),
    (nn.Conv3d, "conv3d"),
    (nn.ConvTranspose1d, "conv_transpose1d"),
    (nn.ConvTranspose2d, "conv_transpose2d"),
    (nn.ConvTranspose3d, "conv_transpose3d"),
    (nn.Linear, "linear"),
    (nn.Bilinear, "bilinear"),
    (nn.MultiheadAttention, "attention"),
    (nn.modules.batchnorm._BatchNorm, "batchnorm"),
    (nn.LayerNorm, "layernorm"),
    (nn.GroupNorm, "groupnorm"),
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu6"),
    (nn.LeakyReLU, "leaky_relu"),
    (nn.Hardtanh, "hardtanh"),
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.Hardswish, "hardswish"),
    (nn.Hardsigmoid, "hardsigmoid"),
    (nn.Softmax, "softmax"),
    (nn.MaxPool1d, "maxpool"),
    (nn.MaxPool2d, "maxpool"),
    (nn.MaxPool3d, "maxpool"),
    (nn.AvgPool1d, "avgpool"),
    (nn.AvgPool2d, "avgpool"),
    (nn.AvgPool3d, "avgpool"),
    (nn.AdaptiveAvgPool1d, "adaptive_avgpool"),
    (nn.AdaptiveAvgPool2d, "adaptive_avgpool"),
    (nn.AdaptiveAvgPool3d, "adaptive_avgpool"),
    (nn.AdaptiveMaxPool2d, "adaptive_maxpool"),
    (nn.Dropout, "dropout"),
    (nn.Identity, "identity"),
    (nn.Flatten, "flatten"),
    (nn.Unflatten, "unflatten"),
    (nn.Embedding, "embedding"),
    (nn.Upsample, "upsample"),
    (nn.modules.padding._ReplicationPadNd, "pad"),
    (nn.modules.padding._ConstantPadNd, "pad"),
    (nn.modules.padding._ReflectionPadNd, "pad"),
)

# Aliases from Python / aten function names to kinds.
_NAME_KINDS: dict[str, str] = {
    "iadd": "add", "radd": "add", "add_": "add", "sub_": "sub", "mul_": "mul", "truediv": "div",
    "floordiv": "div", "rsub": "sub", "rmul": "mul", "imul": "mul",
    "conv2d": "conv2d", "conv1d": "conv1d", "conv3d": "conv3d", "convolution": "conv2d",
    "conv_transpose2d": "conv_transpose2d", "conv_transpose1d": "conv_transpose1d",
    "linear": "linear", "addmm": "linear", "mm": "matmul", "bmm": "matmul", "matmul": "matmul",
    "baddbmm": "matmul", "einsum": "matmul",
    "scaled_dot_product_attention": "attention",
    "batch_norm": "batchnorm", "_native_batch_norm_legit_no_training": "batchnorm",
    "native_batch_norm": "batchnorm", "layer_norm": "layernorm", "native_layer_norm": "layernorm",
    "group_norm": "groupnorm", "native_group_norm": "groupnorm",
    "relu_": "relu", "relu6": "relu6", "hardtanh_": "hardtanh", "leaky_relu_": "leaky_relu",
    "gelu": "gelu", "silu_": "silu", "sigmoid_": "sigmoid", "tanh_": "tanh",
    "softmax": "softmax", "_softmax": "softmax", "_safe_softmax": "softmax",
    "log_softmax": "log_softmax", "_log_softmax": "log_softmax",
    "max_pool2d": "maxpool", "max_pool2d_with_indices": "maxpool", "max_pool1d": "maxpool",
    "avg_pool2d": "avgpool", "avg_pool1d": "avgpool",
    "adaptive_avg_pool2d": "adaptive_avgpool", "_adaptive_avg_pool2d": "adaptive_avgpool",
    "adaptive_avg_pool1d": "adaptive_avgpool", "mean": "mean",
    "cat": "cat", "concat": "cat", "stack": "stack",
    "view": "view", "_unsafe_view": "view", "reshape": "reshape", "flatten": "flatten",
    "permute": "permute", "transpose": "transpose", "t": "transpose", "contiguous": "contiguous",
    "getitem": "getitem", "size": "size", "sym_size": "size", "expand": "expand",
    "squeeze": "squeeze", "unsqueeze": "unsqueeze", "split": "split", "chunk": "chunk",
    "split_with_sizes": "split", "unbind": "split", "dropout": "dropout", "slice": "slice",
    "select": "select", "to": "to", "_to_copy": "to", "type_as": "type_as", "clone": "clone",
    "alias": "alias", "detach": "detach", "embedding": "embedding", "arange": "arange",
    "full": "full", "zeros": "zeros", "ones": "ones", "masked_fill": "masked_fill",
    "masked_fill_": "masked_fill", "tril": "tril", "triu": "triu", "pad": "pad",
    "constant_pad_nd": "pad", "replication_pad2d": "pad", "upsample_nearest2d": "upsample",
    "interpolate": "upsample", "_assert_tensor_metadata": "assert", "sym_constrain_range": "assert",
    "_assert_async": "assert", "lift_fresh_copy": "alias", "scalar_tensor": "scalar",
    "eq": "where", "ne": "where", "lt": "where", "gt": "where", "ge": "where", "le": "where", "pow": "pow", "rsqrt": "rsqrt",
}  # fmt: skip


def module_kind(module: nn.Module) -> str:
    """The kind of a leaf module (``conv2d``, ``linear``, ...); its class name when unknown."""
    for cls, kind in _MODULE_KINDS:
        if isinstance(module, cls):
            return kind
    return type(module).__name__.lower()


def function_kind(target: Any) -> str:
    """The kind of a ``call_function`` / ``call_method`` target (Python function, aten op, str)."""
    if isinstance(target, str):
        name = target
    elif isinstance(target, torch._ops.OpOverload):
        name = target._schema.name.split("::")[-1]
    elif isinstance(target, torch._ops.OpOverloadPacket):
        name = target._qualified_op_name.split("::")[-1]
    else:
        name = getattr(target, "__name__", type(target).__name__)
    name = name.split(".")[-1]
    if target is F.scaled_dot_product_attention:
        return "attention"
    if target in (operator.add, torch.add):
        return "add"
    if target in (operator.matmul, torch.matmul):
        return "matmul"
    kind = _NAME_KINDS.get(name)
    if kind is None and name.endswith("_") and not name.startswith("_"):
        kind = _NAME_KINDS.get(name[:-1], name[:-1])
    if kind is None and name.startswith("sym_"):
        kind = "sym"
    return kind or name


def _numel(shape: Sequence[int] | None) -> int:
    return math.prod(shape) if shape is not None else 0


def node_flops(
    kind: str,
    module: nn.Module | None,
    in_shapes: Sequence[tuple[int, ...] | None],
    out_shape: tuple[int, ...] | None,
) -> int:
    """FLOPs of one node from its kind, its module (if any) and the tensor shapes it sees.

    ``in_shapes`` lists the shapes of the node's tensor arguments in order (parameters that
    are graph attributes included, ``None`` for non-tensors); ``out_shape`` is the shape of its
    (first) tensor output.
    """
    out = _numel(out_shape)
    shapes = [s for s in in_shapes if s is not None]
    if kind.startswith("conv"):
        weight = (
            module.weight.shape if module is not None else (shapes[1] if len(shapes) > 1 else None)
        )
        if weight is None:
            return 0
        if kind.startswith("conv_transpose"):
            # Each input element scatters into C_out/groups × kernel outputs.
            return 2 * _numel(shapes[0]) * _numel(weight[1:])
        return 2 * out * _numel(weight[1:])
    if kind == "linear":
        if module is not None:
            in_features = module.in_features
        else:
            # F.linear(x, w, b) and aten.addmm(b, x, wT): the activation is the first argument
            # with two or more dimensions (the bias is 1-D); its last dimension is contracted.
            acts = [s for s in shapes if len(s) >= 2]
            if not acts:
                return 0
            in_features = acts[0][-1]
        return 2 * out * in_features
    if kind == "matmul":
        if len(shapes) < 2 or not shapes[0]:
            return 0
        return 2 * out * shapes[0][-1]
    if kind == "attention":
        if module is not None and isinstance(module, nn.MultiheadAttention):
            return _mha_flops(module, shapes)
        if len(shapes) < 3:
            return 0
        q, k, v = shapes[0], shapes[1], shapes[2]
        batch_heads = _numel(q[:-2])
        # Q·Kᵀ (L × S × E) and P·V (L × S × Ev), each a multiply-add.
        return 2 * batch_heads * q[-2] * k[-2] * (q[-1] + v[-1]) + 3 * batch_heads * q[-2] * k[-2]
    if kind == "maxpool" or kind == "avgpool":
        window = _window(module)
        return out * window
    if kind in ("adaptive_avgpool", "adaptive_maxpool", "mean", "sum"):
        return _numel(shapes[0]) if shapes else out
    if kind in VIEW_KINDS:
        return 0
    return out * ELEMENTWISE_FLOPS.get(kind, 1)


def _window(module: nn.Module | None) -> int:
    if module is None:
        return 1
    k = module.kernel_size  # type: ignore[union-attr]
    if isinstance(k, tuple):
        return math.prod(k)
    dims = {"1d": 1, "2d": 2, "3d": 3}.get(type(module).__name__[-2:].lower(), 2)
    return int(k) ** dims


def _mha_flops(module: nn.MultiheadAttention, shapes: Sequence[tuple[int, ...]]) -> int:
    """Q/K/V projections, both attention matmuls and the output projection."""
    if len(shapes) < 3:
        return 0
    q, k = shapes[0], shapes[1]
    e = module.embed_dim
    lq = _numel(q[:-1])
    lk = _numel(k[:-1])
    proj = 2 * e * e * (lq + 2 * lk) + 2 * e * e * lq
    tokens_q = q[-2] if module.batch_first else q[0]
    tokens_k = k[-2] if module.batch_first else k[0]
    batch = lq // max(tokens_q, 1)
    attn = 2 * batch * tokens_q * tokens_k * e * 2
    return proj + attn
