"""BatchNorm (with Caffe's stored scale factor), Scale, Bias and MVN."""

from __future__ import annotations

import numpy as np

from caffelite.onnx.export import register_exporter


@register_exporter("BatchNorm")
def batch_norm(ctx) -> None:
    """Caffe stores running sums and their weight: mean = blob0 / blob2, var = blob1 / blob2."""
    layer = ctx.layer
    if not layer.use_global_stats:
        raise ctx.error("normalizes with the batch's own statistics (use_global_stats: false)")
    stored = float(np.asarray(layer.blobs[2].data).reshape(-1)[0])
    factor = 0.0 if stored == 0 else 1.0 / stored
    channels = layer.channels
    mean = np.asarray(layer.blobs[0].data, np.float64).reshape(-1) * factor
    var = np.asarray(layer.blobs[1].data, np.float64).reshape(-1) * factor
    g = ctx.g
    inputs = [
        ctx.bottoms[0],
        g.constant(ctx.tmp("scale"), np.ones(channels)),
        g.constant(ctx.tmp("bias"), np.zeros(channels)),
        g.constant(ctx.tmp("mean"), mean),
        g.constant(ctx.tmp("var"), var),
    ]
    rank = len(ctx.bottom_shapes[0])
    if rank == 1:  # a vector is one channel: ONNX wants (N, C, ...)
        raise ctx.error("a 1-axis bottom (one channel) is not exported")
    ctx.node("BatchNormalization", inputs, 0, epsilon=layer.eps)


def _broadcast_operand(ctx, value_or_index, operand_shape, suffix: str) -> str:
    """The operand laid out for numpy broadcasting against the bottom: a parameter blob
    (an int) reshaped, or a second bottom (a value name) with unit axes appended."""
    rank = len(ctx.bottom_shapes[0])
    axis = ctx.layer.axis % rank if rank else 0
    trailing = rank - axis - len(operand_shape)
    if isinstance(value_or_index, int):
        return ctx.weight(value_or_index, suffix, shape=tuple(operand_shape) + (1,) * trailing)
    return ctx.g.unsqueeze_trailing(value_or_index, len(operand_shape), trailing, ctx.tmp(suffix))


@register_exporter("Scale")
def scale(ctx) -> None:
    layer = ctx.layer
    if len(ctx.bottoms) > 1:
        factor = _broadcast_operand(ctx, ctx.bottoms[1], ctx.bottom_shapes[1], "scale")
    else:
        factor = _broadcast_operand(ctx, 0, layer.blobs[0].shape, "scale")
    if not layer.bias_term:
        ctx.node("Mul", [ctx.bottoms[0], factor], 0)
        return
    scaled = ctx.node("Mul", [ctx.bottoms[0], factor], "scaled")
    bias = layer.blobs[layer.bias_index]
    ctx.node("Add", [scaled, _broadcast_operand(ctx, layer.bias_index, bias.shape, "bias")], 0)


@register_exporter("Bias")
def bias(ctx) -> None:
    if len(ctx.bottoms) > 1:
        operand = _broadcast_operand(ctx, ctx.bottoms[1], ctx.bottom_shapes[1], "bias")
    else:
        operand = _broadcast_operand(ctx, 0, ctx.layer.blobs[0].shape, "bias")
    ctx.node("Add", [ctx.bottoms[0], operand], 0)


@register_exporter("MVN")
def mvn(ctx) -> None:
    """``x - mean`` (then ``/ (std + eps)``) over each (C,)H,W block, as Caffe's MVN."""
    layer = ctx.layer
    rank = len(ctx.bottom_shapes[0])
    axes = list(range(1 if layer.across_channels else 2, rank))
    x = ctx.bottoms[0]
    if len(axes) == 0:
        raise ctx.error(f"a bottom of shape {ctx.bottom_shapes[0]} has no axes to normalize")
    mean = ctx.reduce("ReduceMean", x, axes, "mean")
    if not layer.normalize_variance:
        ctx.node("Sub", [x, mean], 0)
        return
    centred = ctx.node("Sub", [x, mean], "centred")
    square = ctx.node("Mul", [centred, centred], "square")
    var = ctx.reduce("ReduceMean", square, axes, "var")
    std = ctx.node("Sqrt", [var], "std")
    denominator = ctx.node("Add", [std, ctx.scalar("eps", layer.eps)], "denominator")
    ctx.node("Div", [centred, denominator], 0)
