"""Inputs, InnerProduct, Softmax and the layers that move, join or reduce values."""

from __future__ import annotations

import numpy as np

from caffelite.onnx.export import register_exporter
from caffelite.proto import caffe_pb2
from caffelite.shapes import canonical_axis

_E = caffe_pb2.EltwiseParameter
_R = caffe_pb2.ReductionParameter
_REDUCE = {
    _R.SUM: "ReduceSum",
    _R.ASUM: "ReduceL1",
    _R.SUMSQ: "ReduceSumSquare",
    _R.MEAN: "ReduceMean",
}
FLOAT = 1  # onnx.TensorProto.FLOAT


@register_exporter("Input")
def input_layer(ctx) -> None:
    import onnx

    for name, shape in zip(ctx.tops, ctx.top_shapes, strict=True):
        ctx.inputs.append(onnx.helper.make_tensor_value_info(name, FLOAT, list(shape)))


@register_exporter("Split")
def split(ctx) -> None:
    """Caffe's inserted Split copies one blob to several consumers: Identity each."""
    for i in range(len(ctx.tops)):
        ctx.node("Identity", ctx.bottoms, i)


@register_exporter("InnerProduct")
def inner_product(ctx) -> None:
    """``flatten(x, axis) @ W^T + b``; Gemm after Flatten for the usual axis 1."""
    layer = ctx.layer
    bias = [ctx.weight(1, "bias")] if layer.bias_term else []
    if layer.axis == 1:
        flat = ctx.node("Flatten", ctx.bottoms, "flat", axis=1)
        ctx.node("Gemm", [flat, ctx.weight(0, "weight"), *bias], 0, transB=int(not layer.transpose))
        return
    shape = [0] * layer.axis + [layer.k] if layer.axis else [-1, layer.k]
    flat = ctx.node("Reshape", [ctx.bottoms[0], ctx.g.int64s(ctx.tmp("shape"), shape)], "flat")
    weights = np.asarray(layer.blobs[0].data, np.float32)
    matrix = ctx.g.constant(ctx.tmp("weight_t"), weights if layer.transpose else weights.T)
    if not bias:
        ctx.node("MatMul", [flat, matrix], 0)
        return
    product = ctx.node("MatMul", [flat, matrix], "product")
    ctx.node("Add", [product, bias[0]], 0)


@register_exporter("Softmax")
def softmax(ctx) -> None:
    ctx.node("Softmax", ctx.bottoms, 0, axis=ctx.layer.axis)


@register_exporter("Concat")
def concat(ctx) -> None:
    ctx.node("Concat", ctx.bottoms, 0, axis=ctx.layer.axis)


@register_exporter("Slice")
def slice_layer(ctx) -> None:
    if len(ctx.tops) == 1:
        ctx.node("Identity", ctx.bottoms, 0)
        return
    sizes = ctx.g.int64s(ctx.tmp("sizes"), ctx.layer.sizes)
    ctx.g.node(
        "Split", [ctx.bottoms[0], sizes], list(ctx.tops), name=ctx.tmp("Split"), axis=ctx.layer.axis
    )


@register_exporter("Eltwise")
def eltwise(ctx) -> None:
    layer, bottoms = ctx.layer, ctx.bottoms
    if layer.op == _E.MAX:
        ctx.node("Max", bottoms, 0)
    elif layer.op == _E.PROD:  # ONNX Mul is binary: a chain
        running = bottoms[0]
        for i, b in enumerate(bottoms[1:], start=1):
            running = ctx.node("Mul", [running, b], 0 if i == len(bottoms) - 1 else f"prod{i}")
    else:
        terms = [
            b if c == 1 else ctx.node("Mul", [b, ctx.scalar(f"coeff{i}", c)], f"term{i}")
            for i, (b, c) in enumerate(zip(bottoms, layer.coeffs, strict=True))
        ]
        ctx.node("Sum", terms, 0)


def _reshape_to_top(ctx, keeps_batch: bool) -> None:
    """Reshape to the top's Caffe shape; axis 0 copied (0) or inferred (-1)."""
    top = ctx.top_shapes[0]
    shape = ctx.shape_keeping_batch(top) if keeps_batch else [-1, *top[1:]]
    ctx.node("Reshape", [ctx.bottoms[0], ctx.g.int64s(ctx.tmp("shape"), shape)], 0)


@register_exporter("Flatten")
def flatten(ctx) -> None:
    start = canonical_axis(ctx.layer, _Shaped(ctx.bottom_shapes[0]), ctx.param.flatten_param.axis)
    _reshape_to_top(ctx, keeps_batch=start > 0)


@register_exporter("Reshape")
def reshape(ctx) -> None:
    param = ctx.param.reshape_param
    rank = len(ctx.bottom_shapes[0])
    start = param.axis if param.axis >= 0 else rank + param.axis + 1
    copies_batch = bool(param.shape.dim) and param.shape.dim[0] == 0
    _reshape_to_top(ctx, keeps_batch=start > 0 or copies_batch)


class _Shaped:
    """A stand-in blob for ``canonical_axis`` (which reads ``shape`` and ``num_axes``)."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.num_axes = len(shape)


@register_exporter("Tile")
def tile(ctx) -> None:
    shape = ctx.bottom_shapes[0]
    axis = canonical_axis(ctx.layer, _Shaped(shape), ctx.param.tile_param.axis)
    repeats = [1] * len(shape)
    repeats[axis] = ctx.layer.tiles
    ctx.node("Tile", [ctx.bottoms[0], ctx.g.int64s(ctx.tmp("repeats"), repeats)], 0)


@register_exporter("ArgMax")
def argmax(ctx) -> None:
    """TopK along the axis (or over each item), indices cast to float as Caffe gives them."""
    layer, g = ctx.layer, ctx.g
    k = g.int64s(ctx.tmp("k"), [layer.top_k])
    if layer.has_axis:
        axis = canonical_axis(layer, _Shaped(ctx.bottom_shapes[0]), ctx.param.argmax_param.axis)
        values, indices = g.node(
            "TopK",
            [ctx.bottoms[0], k],
            [g.fresh(ctx.tmp("values")), g.fresh(ctx.tmp("indices"))],
            name=ctx.tmp("TopK"),
            axis=axis,
        )
        if layer.out_max_val:
            ctx.node("Identity", [values], 0)
        else:
            ctx.node("Cast", [indices], 0, to=FLOAT)
        return
    flat = ctx.node("Flatten", ctx.bottoms, "flat", axis=1)
    values, indices = g.node(
        "TopK",
        [flat, k],
        [g.fresh(ctx.tmp("values")), g.fresh(ctx.tmp("indices"))],
        name=ctx.tmp("TopK"),
        axis=1,
    )
    result = ctx.node("Cast", [indices], "indices_float", to=FLOAT)
    if layer.out_max_val:
        result = ctx.node("Concat", [result, values], "pairs", axis=1)
    _reshape_named(ctx, result)


def _reshape_named(ctx, value: str) -> None:
    shape = ctx.g.int64s(ctx.tmp("shape"), ctx.shape_keeping_batch(ctx.top_shapes[0]))
    ctx.node("Reshape", [value, shape], 0)


@register_exporter("Reduction")
def reduction(ctx) -> None:
    """Over every axis from ``axis`` on, times ``coeff`` (MEAN: ReduceMean, not coeff / n)."""
    layer = ctx.layer
    rank = len(ctx.bottom_shapes[0])
    axis = canonical_axis(layer, _Shaped(ctx.bottom_shapes[0]), ctx.param.reduction_param.axis)
    coeff = float(ctx.param.reduction_param.coeff)
    op, axes = _REDUCE[layer.op], range(axis, rank)
    if coeff == 1:
        ctx.reduce(op, ctx.bottoms[0], axes, 0, keepdims=0)
        return
    reduced = ctx.reduce(op, ctx.bottoms[0], axes, "reduced", keepdims=0)
    ctx.node("Mul", [reduced, ctx.scalar("coeff", coeff)], 0)


@register_exporter("Embed")
def embed(ctx) -> None:
    layer = ctx.layer
    index = ctx.node("Cast", ctx.bottoms, "index", to=7)  # INT64
    if not layer.bias_term:
        ctx.node("Gather", [ctx.weight(0, "weight"), index], 0, axis=0)
        return
    rows = ctx.node("Gather", [ctx.weight(0, "weight"), index], "rows", axis=0)
    ctx.node("Add", [rows, ctx.weight(1, "bias")], 0)
