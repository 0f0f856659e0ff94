"""Gemm/MatMul (InnerProduct), shape ops, Softmax, Concat/Split/Slice, Tile, TopK (ArgMax),
the reductions and Gather (Embed)."""

from __future__ import annotations

import numpy as np

from caffelite.onnx.importer import register_importer
from caffelite.proto import caffe_pb2

_R = caffe_pb2.ReductionParameter
_REDUCE = {
    "ReduceSum": _R.SUM,
    "ReduceL1": _R.ASUM,
    "ReduceSumSquare": _R.SUMSQ,
    "ReduceMean": _R.MEAN,
}
FLOAT, INT32, INT64 = 1, 6, 7


def _absorb_bias(ctx, value: str, size: int, blobs: list) -> tuple[str, bool]:
    """An Add of a ``(size,)`` vector along the last axis after ``value``: the bias."""
    return ctx.absorb_add(value, (len(ctx.shape(value)) - 1, (size,)), blobs)


def _scalar_factor_after(ctx, value: str):
    """A Mul by a constant scalar right after ``value``: (its index, node, factor) or None."""
    found = ctx.sole_consumer(value)
    if found is None or found[1].op_type != "Mul":
        return None
    other = [n for n in found[1].input if n != value]
    factor = ctx.const_of(other[0]) if len(other) == 1 else None
    if factor is None or factor.size != 1:
        return None
    return found[0], found[1], float(factor.reshape(-1)[0])


@register_importer("Gemm")
def gemm(ctx) -> None:
    """``alpha * A @ B' + beta * C`` as InnerProduct (weights and bias scaled in)."""
    if ctx.attr("transA", 0):
        raise ctx.error("transA is not supported")
    b = ctx.const(1)
    if b is None:
        raise ctx.error("B must be a constant (the weights)")
    transposed = not ctx.attr("transB", 0)  # B is (K, N): Caffe's transpose: true layout
    alpha = float(ctx.attr("alpha", 1.0))
    weights = b * alpha if alpha != 1 else b
    outputs = weights.shape[1] if transposed else weights.shape[0]
    c = ctx.const(2)
    if ctx.has_input(2) and c is None:
        raise ctx.error("C must be a constant (the bias)")
    blobs = [weights]
    if c is not None:
        beta = float(ctx.attr("beta", 1.0))
        blobs.append(np.broadcast_to(c * beta if beta != 1 else c, (outputs,)))
    layer = ctx.layer("InnerProduct", [ctx.blob(0)], ctx.outputs, blobs)
    layer.inner_product_param.num_output = outputs
    layer.inner_product_param.bias_term = c is not None
    layer.inner_product_param.transpose = transposed


@register_importer("MatMul")
def matmul(ctx) -> None:
    """``x @ W`` over the last axis: InnerProduct(axis -1, transpose), an Add after it the bias."""
    w = ctx.const(1)
    if w is None or w.ndim != 2:
        raise ctx.error("only a product with a constant matrix is supported")
    blobs = [w]
    top, has_bias = _absorb_bias(ctx, ctx.outputs[0], w.shape[1], blobs)
    layer = ctx.layer("InnerProduct", [ctx.blob(0)], [top], blobs)
    param = layer.inner_product_param
    param.num_output, param.transpose = w.shape[1], True
    param.axis = len(ctx.in_shape()) - 1
    param.bias_term = has_bias


def _reshape(ctx, bottom: str, out_shape, in_shape) -> None:
    """Caffe Reshape to ``out_shape``, keeping axis 0 symbolic (0: copy) when it is unchanged."""
    dims = [0 if out_shape and in_shape and out_shape[0] == in_shape[0] else -1]
    dims += list(out_shape[1:])
    if not out_shape:
        dims = []
    layer = ctx.layer("Reshape", [bottom], ctx.outputs[:1])
    layer.reshape_param.shape.dim.extend(dims)


@register_importer("Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx) -> None:
    _reshape(ctx, ctx.blob(0), ctx.out_shape(), ctx.in_shape())


@register_importer("Flatten")
def flatten(ctx) -> None:
    axis = int(ctx.attr("axis", 1))
    rank = len(ctx.in_shape())
    if axis < 0:
        axis += rank
    if axis == 1:
        ctx.layer("Flatten", [ctx.blob(0)], ctx.outputs)
    else:
        _reshape(ctx, ctx.blob(0), ctx.out_shape(), ctx.in_shape())


@register_importer("Softmax")
def softmax(ctx) -> None:
    rank = len(ctx.in_shape())
    axis = int(ctx.attr("axis", -1 if ctx.importer.opset >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if ctx.importer.opset < 13 and axis != rank - 1:
        raise ctx.error("before opset 13 Softmax flattens from its axis; only the last axis maps")
    ctx.layer("Softmax", [ctx.blob(0)], ctx.outputs).softmax_param.axis = axis


@register_importer("Concat")
def concat(ctx) -> None:
    bottoms = [ctx.blob(i) for i in range(len(ctx.inputs))]
    ctx.layer("Concat", bottoms, ctx.outputs).concat_param.axis = int(ctx.attr("axis"))


@register_importer("Split")
def split(ctx) -> None:
    axis = int(ctx.attr("axis", 0))
    shape = ctx.in_shape()
    axis = axis + len(shape) if axis < 0 else axis
    sizes = [ctx.out_shape(i)[axis] for i in range(len(ctx.outputs))]
    layer = ctx.layer("Slice", [ctx.blob(0)], ctx.outputs)
    layer.slice_param.axis = axis
    layer.slice_param.slice_point.extend(np.cumsum(sizes)[:-1].tolist())


@register_importer("Slice")
def slice_(ctx) -> None:
    """One Caffe Slice per cut axis; the unwanted pieces go to a Silence layer."""
    starts, ends = ctx.const(1), ctx.const(2)
    axes, steps = ctx.const(3), ctx.const(4)
    shape = ctx.in_shape()
    if starts is None or ends is None or (ctx.has_input(3) and axes is None):
        raise ctx.error("starts, ends and axes must be constants")
    if steps is not None and np.any(steps != 1):
        raise ctx.error("strided slices have no Caffe equivalent")
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    bottom = ctx.blob(0)
    cuts = []
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis = axis + len(shape) if axis < 0 else axis
        size = shape[axis]
        start, end = (int(np.clip(v + size if v < 0 else v, 0, size)) for v in (start, end))
        if (start, end) != (0, size):
            cuts.append((axis, start, end))
    if any(axis == 0 for axis, _, _ in cuts):
        raise ctx.error("slicing the batch axis is not supported")
    if not cuts:
        return ctx.alias(ctx.outputs[0], bottom)
    for n, (axis, start, end) in enumerate(cuts):
        top = ctx.outputs[0] if n == len(cuts) - 1 else f"{ctx.outputs[0]}/cut{n}"
        points = [p for p in (start, end) if 0 < p < shape[axis]]
        names = []
        if start > 0:
            names.append(f"{top}/before")
        names.append(top)
        if end < shape[axis]:
            names.append(f"{top}/after")
        layer = ctx.layer("Slice", [bottom], names, name=f"{ctx.node.name or top}/{n}")
        layer.slice_param.axis = axis
        layer.slice_param.slice_point.extend(points)
        rest = [name for name in names if name != top]
        ctx.layer("Silence", rest, [], name=f"{layer.name}/silence")
        bottom = top


@register_importer("Tile")
def tile(ctx) -> None:
    repeats = ctx.const(1)
    if repeats is None:
        raise ctx.error("repeats must be a constant")
    axes = [(a, int(r)) for a, r in enumerate(repeats) if r != 1]
    if not axes:
        return ctx.alias(ctx.outputs[0], ctx.blob(0))
    bottom = ctx.blob(0)
    for n, (axis, times) in enumerate(axes):
        top = ctx.outputs[0] if n == len(axes) - 1 else f"{ctx.outputs[0]}/tile{n}"
        layer = ctx.layer("Tile", [bottom], [top], name=f"{ctx.node.name or top}/{n}")
        layer.tile_param.axis, layer.tile_param.tiles = axis, times
        bottom = top


@register_importer("TopK")
def top_k(ctx) -> None:
    """Caffe's ArgMax along an axis: the values, and the indices once cast to float."""
    k = ctx.const(1)
    if k is None or not ctx.attr("largest", 1) or not ctx.attr("sorted", 1):
        raise ctx.error("only a constant k, largest and sorted, maps to ArgMax")
    axis = int(ctx.attr("axis", -1))
    axis = axis + len(ctx.in_shape()) if axis < 0 else axis
    values, indices = ctx.outputs

    def argmax(top: str, out_max_val: bool, suffix: str) -> None:
        layer = ctx.layer("ArgMax", [ctx.blob(0)], [top], name=f"{ctx.node.name}/{suffix}")
        param = layer.argmax_param
        param.axis, param.top_k, param.out_max_val = axis, int(k.reshape(-1)[0]), out_max_val

    if values in ctx.importer.consumers or values in ctx.importer.graph_outputs:
        argmax(values, True, "values")
    for index in ctx.importer.consumers.get(indices, []):
        reader = ctx.importer.nodes[index]
        to = next((a.i for a in reader.attribute if a.name == "to"), None)
        if reader.op_type != "Cast" or to != FLOAT:
            raise ctx.error("its indices are used as integers; Caffe only gives them as floats")
        ctx.take(index)
        argmax(reader.output[0], False, f"indices{index}")


@register_importer("Cast")
def cast(ctx) -> None:
    to = ctx.attr("to")
    if to == FLOAT:
        return ctx.alias(ctx.outputs[0], ctx.blob(0))
    found = ctx.sole_consumer(ctx.outputs[0])
    if to in (INT32, INT64) and found is not None and found[1].op_type == "Gather":
        return _embed(ctx, *found)
    raise ctx.error(f"a Cast to type {to} has no Caffe equivalent (Caffe blobs are float)")


def _embed(ctx, index: int, gather) -> None:
    """``Gather(W, Cast(x, int))`` along axis 0: Caffe's Embed (an Add after it: the bias)."""
    weights = ctx.const_of(gather.input[0])
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    if weights is None or weights.ndim != 2 or axis != 0 or gather.input[1] != ctx.outputs[0]:
        raise ctx.error("only Gather(constant table, Cast(indices)) along axis 0 maps to Embed")
    ctx.take(index)
    blobs = [weights]
    top, has_bias = _absorb_bias(ctx, gather.output[0], weights.shape[1], blobs)
    layer = ctx.layer("Embed", [ctx.blob(0)], [top], blobs)
    param = layer.embed_param
    param.input_dim, param.num_output = weights.shape
    param.bias_term = has_bias


@register_importer(*_REDUCE)
def reduce(ctx) -> None:
    """Caffe's Reduction over every axis from ``axis`` on (then a Reshape for keepdims)."""
    shape = ctx.in_shape()
    rank = len(shape)
    axes = ctx.const(1) if ctx.has_input(1) else ctx.attr("axes")
    axes = list(range(rank)) if axes is None or len(axes) == 0 else [int(a) for a in axes]
    axes = sorted(a + rank if a < 0 else a for a in axes)
    if axes != list(range(axes[0], rank)):
        raise ctx.error(f"Caffe reduces every axis from one on; axes {axes} of rank {rank} differ")
    keep = bool(ctx.attr("keepdims", 1))
    reduced = f"{ctx.outputs[0]}/reduced" if keep else ctx.outputs[0]
    coeff = None if keep else _scalar_factor_after(ctx, ctx.outputs[0])
    if coeff is not None:
        ctx.take(coeff[0])
        reduced = coeff[1].output[0]
    layer = ctx.layer("Reduction", [ctx.blob(0)], [reduced])
    layer.reduction_param.operation = _REDUCE[ctx.node.op_type]
    layer.reduction_param.axis = axes[0]
    if coeff is not None:
        layer.reduction_param.coeff = coeff[2]
    if keep:
        dims = [0 if axes[0] > 0 else 1] + list(ctx.out_shape()[1:])
        reshape = ctx.layer("Reshape", [reduced], ctx.outputs, name=f"{layer.name}/keepdims")
        reshape.reshape_param.shape.dim.extend(dims)
