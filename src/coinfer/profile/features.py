"""Feature design for the task–device affinity predictor (AP²'s first module).

A row describes one node on one device. Why these features:

* **op family one-hot** — a conv, a matmul and a ReLU with the same FLOPs take very different
  times (compute-bound vs memory-bound kernels, different library paths);
* **log FLOPs, log bytes in/out, log parameter bytes** — time spans five orders of magnitude
  and is roughly a power law in work and traffic, so logs make the trees' job piecewise-linear;
* **shape features** — output channels, spatial size, and ``FLOPs per output element`` (for a
  conv this is ``2·k²·C_in/groups``: the kernel and depthwise-ness without needing the module),
  and the arithmetic intensity FLOPs/byte (which side of the roofline the op sits on);
* **context** — the *previous* node's log FLOPs, log output bytes and whether it computes at all.
  A node's time is process CPU time; with two threads the OpenMP worker keeps spinning after a
  parallel kernel, and that spin lands in the *next* node's timing window — a view after a conv
  costs more than a view after a view. (Leave-one-model-out on the training models: piece WAPE
  47% -> 45%, nodes within ±20% at one thread 23% -> 28%.) Records must therefore be given in
  execution order, as :func:`graph_node_records` and stored profiles list them;
* **device features** — effective cores ``min(quota, threads)``, quota, threads, clock, memory
  bandwidth and peak GFLOP/s (unknown values are a -1 sentinel).

The target is normalised by the device's effective cores (``log t + log c_eff``), because a CPU
quota scales long-running kernels by ``1 / quota`` almost exactly: the trees then learn the
*residual* (threading efficiency, throttling granularity, per-op overhead) and generalise to
quotas they never saw instead of snapping to the nearest training quota.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..cluster.types import DeviceFeatures

# Op families the one-hot distinguishes; every graph op kind maps to one (unknown -> "other").
OP_FAMILIES: tuple[str, ...] = (
    "conv",
    "depthwise_conv",
    "linear",
    "matmul",
    "attention",
    "norm",
    "activation",
    "elementwise",
    "pool",
    "concat",
    "embedding",
    "softmax",
    "upsample",
    "view",
    "other",
)

_FAMILY_OF: dict[str, str] = {
    "linear": "linear",
    "bilinear": "linear",
    "matmul": "matmul",
    "attention": "attention",
    "batchnorm": "norm",
    "layernorm": "norm",
    "groupnorm": "norm",
    "softmax": "softmax",
    "log_softmax": "softmax",
    "cat": "concat",
    "stack": "concat",
    "embedding": "embedding",
    "upsample": "upsample",
    "pad": "elementwise",
}
for _k in (
    "relu",
    "relu6",
    "leaky_relu",
    "hardtanh",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
):
    _FAMILY_OF[_k] = "activation"
for _k in (
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "sqrt",
    "rsqrt",
    "exp",
    "log",
    "abs",
    "clamp",
    "where",
):
    _FAMILY_OF[_k] = "elementwise"
for _k in ("maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "mean", "sum"):
    _FAMILY_OF[_k] = "pool"
for _k in (
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous", "getitem",
    "getattr", "size", "expand", "squeeze", "unsqueeze", "split", "chunk", "dropout", "identity",
    "slice", "select", "to", "type_as", "clone", "alias", "detach", "assert", "sym", "arange",
    "full", "zeros", "ones", "tensor", "scalar", "masked_fill", "tril", "triu",
):  # fmt: skip
    _FAMILY_OF[_k] = "view"

# Numeric feature columns, in order (the one-hot columns follow, then device columns).
NODE_NUMERIC: tuple[str, ...] = (
    "log_flops",
    "log_param_bytes",
    "log_in_bytes",
    "log_out_bytes",
    "log_out_numel",
    "log_channels",
    "log_spatial",
    "log_flops_per_out",
    "log_intensity",
    "n_inputs",
)
# Columns describing the previous node in execution order (see the module docstring).
CONTEXT_NUMERIC: tuple[str, ...] = ("prev_log_flops", "prev_log_out_bytes", "prev_computes")
DEVICE_NUMERIC: tuple[str, ...] = (
    "log_eff_cores",
    "quota",
    "threads",
    "cores",
    "freq_ghz",
    "log_mem_bw",
    "log_peak_gflops",
)
FEATURE_NAMES: tuple[str, ...] = (
    NODE_NUMERIC + tuple(f"op_{f}" for f in OP_FAMILIES) + CONTEXT_NUMERIC + DEVICE_NUMERIC
)

# float32 is 4 bytes; used to turn byte counts into element counts when only bytes are known.
_BYTES_PER_ELEMENT = 4


def op_family(op: str, flops: float = 0.0, out_numel: float = 0.0, in_channels: float = 0.0) -> str:
    """The family of an op kind; convs whose FLOPs per output are ~2·k² (one input channel per
    group) are ``depthwise_conv``, a separate kernel path in every CPU library."""
    if op.startswith("conv"):
        if out_numel > 0 and in_channels > 1:
            per_out = flops / (2.0 * out_numel)
            # depthwise: 2*k*k*1 per output (k <= 7 -> <= 49 MACs) while a dense conv has k*k*C_in
            if per_out <= 49 and per_out < in_channels:
                return "depthwise_conv"
        return "conv"
    return _FAMILY_OF.get(op, "other")


def _log(x: float) -> float:
    return math.log1p(max(float(x), 0.0))


def node_record(
    node: Any, tensor_bytes: Mapping[str, int], tensor_shapes: Mapping[str, Sequence[int] | None]
) -> dict[str, Any]:
    """The predictor-relevant description of a graph node as a plain dict (stored in profiles).

    ``tensor_bytes`` / ``tensor_shapes`` map producer names (nodes and model inputs) to the size
    and shape of what they produce, to derive bytes in and input channels.
    """
    in_bytes = sum(int(tensor_bytes.get(i, 0)) for i in node.inputs)
    in_shape = next((tensor_shapes.get(i) for i in node.inputs if tensor_shapes.get(i)), None)
    return {
        "name": node.name,
        "op": node.op,
        "flops": int(node.flops),
        "param_bytes": int(node.param_bytes),
        "out_bytes": int(node.out_bytes),
        "in_bytes": int(in_bytes),
        "shape": list(node.shape) if node.shape is not None else None,
        "in_shape": list(in_shape) if in_shape is not None else None,
        "n_inputs": len(node.inputs),
    }


def graph_node_records(graph: Any) -> list[dict[str, Any]]:
    """:func:`node_record` for every node of a captured graph, in order."""
    sizes: dict[str, int] = {t.name: t.nbytes for t in graph.inputs}
    shapes: dict[str, Sequence[int] | None] = {t.name: t.shape for t in graph.inputs}
    for n in graph.nodes:
        sizes[n.name] = n.out_bytes
        shapes[n.name] = n.shape
    return [node_record(n, sizes, shapes) for n in graph.nodes]


def node_vector(rec: Mapping[str, Any]) -> list[float]:
    """Node part of the feature row (numeric columns + one-hot)."""
    shape = rec.get("shape") or []
    in_shape = rec.get("in_shape") or []
    out_numel = float(math.prod(shape)) if shape else rec["out_bytes"] / _BYTES_PER_ELEMENT
    channels = float(shape[1]) if len(shape) >= 2 else (float(shape[-1]) if shape else 0.0)
    spatial = float(math.prod(shape[2:])) if len(shape) >= 3 else 1.0
    in_channels = float(in_shape[1]) if len(in_shape) >= 2 else 0.0
    flops = float(rec["flops"])
    traffic = float(rec["in_bytes"] + rec["out_bytes"] + rec["param_bytes"])
    row = [
        _log(flops),
        _log(rec["param_bytes"]),
        _log(rec["in_bytes"]),
        _log(rec["out_bytes"]),
        _log(out_numel),
        _log(channels),
        _log(spatial),
        _log(flops / out_numel) if out_numel > 0 else 0.0,
        _log(flops / traffic) if traffic > 0 else 0.0,
        float(rec.get("n_inputs", 1)),
    ]
    fam = op_family(str(rec["op"]), flops, out_numel, in_channels)
    row.extend(1.0 if fam == f else 0.0 for f in OP_FAMILIES)
    return row


def context_vector(prev: Mapping[str, Any] | None) -> list[float]:
    """Context part of the feature row: the previous node (``None`` for the first node)."""
    if prev is None:
        return [0.0, 0.0, 0.0]
    return [_log(prev["flops"]), _log(prev["out_bytes"]), 1.0 if prev["flops"] > 0 else 0.0]


def touched_param_bytes(rec: Mapping[str, Any]) -> float:
    """Parameter bytes a node actually reads: an embedding gathers only the rows it outputs.

    GPT-2's token table is 154 MB but a 16-token lookup reads 48 KB; pricing lookups by the table
    size predicted them ~50x too slow whenever BERT (the only training model with an embedding)
    was left out of training.
    """
    pb = float(rec["param_bytes"])
    if str(rec["op"]) == "embedding":
        return min(pb, float(rec["out_bytes"]))
    return pb


def effective_cores(dev: DeviceFeatures) -> float:
    """Cores a single model instance can use: intra-op threads capped by the CPU quota."""
    return max(min(float(dev.quota), float(dev.threads)), 1e-3)


# "Unknown" device figures are encoded as -1 rather than NaN: a column that is NaN in every
# training row breaks scikit-learn's histogram binning, and -1 is outside every real value.
MISSING = -1.0


def device_vector(dev: DeviceFeatures) -> list[float]:
    """Device part of the feature row (:data:`MISSING` where the cluster file did not say)."""
    nan = MISSING
    return [
        math.log(effective_cores(dev)),
        float(dev.quota),
        float(dev.threads),
        float(dev.cores),
        nan if dev.freq_ghz is None else float(dev.freq_ghz),
        nan if dev.mem_bandwidth_Bps is None else math.log(dev.mem_bandwidth_Bps),
        nan if dev.peak_gflops is None else math.log(dev.peak_gflops),
    ]


def feature_matrix(
    records: Sequence[Mapping[str, Any]], devices: Sequence[DeviceFeatures]
) -> np.ndarray:
    """Rows for ``(records[i], devices[i])`` pairs, columns as :data:`FEATURE_NAMES`.

    ``records`` are one graph's nodes in execution order: row ``i``'s context is record ``i - 1``.
    """
    prevs: list[Mapping[str, Any] | None] = [None, *records][: len(records)]
    rows = [
        node_vector(r) + context_vector(p) + device_vector(d)
        for r, p, d in zip(records, prevs, devices, strict=True)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


__all__ = [
    "CONTEXT_NUMERIC",
    "DEVICE_NUMERIC",
    "FEATURE_NAMES",
    "NODE_NUMERIC",
    "OP_FAMILIES",
    "context_vector",
    "device_vector",
    "effective_cores",
    "feature_matrix",
    "graph_node_records",
    "node_record",
    "node_vector",
    "op_family",
    "touched_param_bytes",
]
