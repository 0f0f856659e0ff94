"""Element-wise ops: activations, and arithmetic with constants (Power, Scale, Bias) or
between tensors (Eltwise)."""

from __future__ import annotations

import numpy as np

from caffelite.onnx.importer import operand_geometry, register_importer
from caffelite.proto import caffe_pb2

_E = caffe_pb2.EltwiseParameter
_SIMPLE = {
    "Relu": "ReLU",
    "Sigmoid": "Sigmoid",
    "Tanh": "TanH",
    "Abs": "AbsVal",
    "Softplus": "BNLL",
    "Exp": "Exp",
    "Log": "Log",
}


@register_importer(*_SIMPLE)
def simple(ctx) -> None:
    ctx.layer(_SIMPLE[ctx.node.op_type], [ctx.blob(0)], ctx.outputs[:1])


@register_importer("Identity", "Dropout")
def identity(ctx) -> None:
    """The same values (Dropout at inference); no layer."""
    if len([o for o in ctx.outputs if o]) > 1 and ctx.outputs[1] in ctx.importer.consumers:
        raise ctx.error("Dropout's mask output has no Caffe equivalent")
    ctx.alias(ctx.outputs[0], ctx.blob(0))


@register_importer("LeakyRelu")
def leaky_relu(ctx) -> None:
    layer = ctx.layer("ReLU", [ctx.blob(0)], ctx.outputs)
    layer.relu_param.negative_slope = float(ctx.attr("alpha", 0.01))


@register_importer("Elu")
def elu(ctx) -> None:
    ctx.layer("ELU", [ctx.blob(0)], ctx.outputs).elu_param.alpha = float(ctx.attr("alpha", 1.0))


@register_importer("PRelu")
def prelu(ctx) -> None:
    slope = ctx.const(1)
    if slope is None:
        raise ctx.error("the slope must be a constant")
    shape = ctx.in_shape()
    if slope.size == 1:
        layer = ctx.layer("PReLU", [ctx.blob(0)], ctx.outputs, [slope.reshape(())])
        layer.prelu_param.channel_shared = True
        return
    operand = operand_geometry(slope.shape, shape)
    if operand is None or operand[0] != 1 or len(operand[1]) != 1:
        raise ctx.error(f"a slope of shape {slope.shape} is not per channel")
    ctx.layer("PReLU", [ctx.blob(0)], ctx.outputs, [slope.reshape(-1)])


def _power(ctx, bottom: str, power=1.0, scale=1.0, shift=0.0) -> None:
    param = ctx.layer("Power", [bottom], ctx.outputs[:1]).power_param
    param.power, param.scale, param.shift = power, scale, shift


@register_importer("Sqrt")
def sqrt(ctx) -> None:
    _power(ctx, ctx.blob(0), power=0.5)


@register_importer("Neg")
def neg(ctx) -> None:
    _power(ctx, ctx.blob(0), scale=-1.0)


@register_importer("Reciprocal")
def reciprocal(ctx) -> None:
    _power(ctx, ctx.blob(0), power=-1.0)


@register_importer("Pow")
def pow_(ctx) -> None:
    exponent = ctx.const(1)
    if exponent is None or exponent.size != 1:
        raise ctx.error("only a constant scalar exponent is supported")
    _power(ctx, ctx.blob(0), power=float(exponent.reshape(-1)[0]))


@register_importer("Clip")
def clip(ctx) -> None:
    low, high = ctx.const(1), ctx.const(2)
    if (ctx.has_input(1) and low is None) or (ctx.has_input(2) and high is None):
        raise ctx.error("min and max must be constants")
    param = ctx.layer("Clip", [ctx.blob(0)], ctx.outputs).clip_param
    finfo = np.finfo(np.float32)
    param.min = float(low) if low is not None else float(ctx.attr("min", finfo.min))
    param.max = float(high) if high is not None else float(ctx.attr("max", finfo.max))


def _with_constant(ctx, op: str, x: str, const) -> None:
    """``x op c``: Power for a scalar, Scale or Bias for a constant along some axes."""
    if const.size == 1:
        c = float(const.reshape(-1)[0])
        if op == "Mul":
            return _power(ctx, x, scale=c)
        if op == "Div":
            return _power(ctx, x, scale=1.0 / c)
        return _power(ctx, x, shift=c if op == "Add" else -c)
    geometry = operand_geometry(
        const.shape, ctx.shape(x) if x in ctx.importer.shapes else ctx.in_shape()
    )
    if geometry is None or geometry[0] == 0:
        raise ctx.error(
            f"a constant of shape {const.shape} does not broadcast along whole "
            f"Caffe axes of {ctx.in_shape()}"
        )
    axis, shape = geometry
    values = np.asarray(const, np.float64).reshape(shape)
    if op in ("Mul", "Div"):
        blobs = [values if op == "Mul" else 1.0 / values]
        top, has_bias = ctx.absorb_add(ctx.outputs[0], geometry, blobs)  # Scale's bias_term
        layer = ctx.layer("Scale", [x], [top], blobs)
        layer.scale_param.axis, layer.scale_param.num_axes = axis, len(shape)
        layer.scale_param.bias_term = has_bias
    else:
        layer = ctx.layer("Bias", [x], ctx.outputs, [values if op == "Add" else -values])
        layer.bias_param.axis, layer.bias_param.num_axes = axis, len(shape)


@register_importer("Mul", "Add", "Sub", "Div")
def arithmetic(ctx) -> None:
    op = ctx.node.op_type
    a, b = ctx.const(0), ctx.const(1)
    if b is not None:
        return _with_constant(ctx, op, ctx.blob(0), b)
    if a is not None:
        if op in ("Sub", "Div"):
            raise ctx.error(f"a constant minus or over a tensor ({op}) is not supported")
        return _with_constant(ctx, op, ctx.blob(1), a)
    sa, sb = ctx.in_shape(0), ctx.in_shape(1)
    if _mvn(ctx) or _lrn_within_channel(ctx):
        return
    if sa == sb:
        if op == "Div":
            raise ctx.error("dividing two tensors has no Caffe layer")
        param = ctx.layer("Eltwise", [ctx.blob(0), ctx.blob(1)], ctx.outputs).eltwise_param
        param.operation = _E.PROD if op == "Mul" else _E.SUM
        if op == "Sub":
            param.coeff.extend([1.0, -1.0])
        return
    _broadcast_tensors(ctx, op, sa, sb)


def _broadcast_tensors(ctx, op: str, sa, sb) -> None:
    """``x * s`` / ``x + s`` with ``s`` spanning whole axes of ``x``: Scale / Bias with a
    second bottom (reshaped to drop the unit axes Caffe does not broadcast)."""
    if op not in ("Mul", "Add") or len(sb) > len(sa):
        raise ctx.error(f"broadcasting {sb} against {sa} in {op} is not supported")
    geometry = operand_geometry(sb, sa)
    if geometry is None:
        raise ctx.error(f"broadcasting {sb} against {sa} does not span whole Caffe axes")
    axis, shape = geometry
    if len(sb) == len(sa) and axis > 0 and all(d == sa[i] for i, d in enumerate(sb[:axis])):
        axis, shape = 0, tuple(sb[: axis + len(shape)])  # a tensor's leading axes are its own
    operand = ctx.blob(1)
    if tuple(sb) != shape:
        reshaped = f"{ctx.outputs[0]}/operand"
        layer = ctx.layer("Reshape", [operand], [reshaped], name=f"{ctx.node.name}/reshape")
        dims = [0 if axis == 0 else shape[0], *shape[1:]]
        layer.reshape_param.shape.dim.extend(dims)
        operand = reshaped
    kind = "Scale" if op == "Mul" else "Bias"
    layer = ctx.layer(kind, [ctx.blob(0), operand], ctx.outputs)
    getattr(layer, f"{kind.lower()}_param").axis = axis


@register_importer("Sum", "Max")
def eltwise(ctx) -> None:
    bottoms = [ctx.blob(i) for i in range(len(ctx.inputs))]
    if len(bottoms) == 1:
        return ctx.alias(ctx.outputs[0], bottoms[0])
    if len({ctx.in_shape(i) for i in range(len(bottoms))}) > 1:
        raise ctx.error("Caffe's Eltwise needs equal shapes")
    param = ctx.layer("Eltwise", bottoms, ctx.outputs).eltwise_param
    param.operation = _E.SUM if ctx.node.op_type == "Sum" else _E.MAX


@register_importer("Greater")
def greater(ctx) -> None:
    """``Cast(x > t, float)``: Caffe's Threshold."""
    threshold = ctx.const(1)
    found = ctx.sole_consumer(ctx.outputs[0])
    if threshold is None or threshold.size != 1 or found is None or found[1].op_type != "Cast":
        raise ctx.error("only Cast(x > constant, float) (Caffe's Threshold) is supported")
    index, cast = found
    ctx.take(index)
    layer = ctx.layer("Threshold", [ctx.blob(0)], [cast.output[0]])
    layer.threshold_param.threshold = float(threshold.reshape(-1)[0])


# ---- patterns that rebuild one Caffe layer from its decomposition ------------------
def _made_by(ctx, value: str, op: str):
    """The node producing ``value`` if it is an ``op``, else None."""
    node = ctx.producer(value)
    return node if node is not None and node.op_type == op else None


def _with_const(ctx, node):
    """(tensor input, constant scalar) of a binary node with one constant scalar, or None."""
    if node is None:
        return None
    consts = [ctx.const_of(n) for n in node.input]
    if len(node.input) != 2 or sum(c is not None for c in consts) != 1:
        return None
    i = 0 if consts[1] is not None else 1
    value = consts[1 - i]
    return (node.input[i], float(value.reshape(-1)[0])) if value.size == 1 else None


def _mean_axes(ctx, node, source: str):
    """``across_channels`` if ``node`` is ReduceMean(source, keepdims) over (C,)H,W, else None."""
    if node is None or node.op_type != "ReduceMean" or node.input[0] != source:
        return None
    attrs = {a.name: a for a in node.attribute}
    if "keepdims" in attrs and attrs["keepdims"].i == 0:
        return None
    axes = ctx.const_of(node.input[1]) if len(node.input) > 1 else list(attrs["axes"].ints)
    rank = len(ctx.shape(source))
    axes = sorted(int(a) + rank if a < 0 else int(a) for a in axes)
    if rank != 4 or axes not in ([1, 2, 3], [2, 3]):
        return None
    return axes[0] == 1


def _mvn(ctx) -> bool:
    """``x - mean(x)`` and ``(x - mean(x)) / (sqrt(mean((x - mean)^2)) + eps)``: Caffe's MVN."""
    node = ctx.node
    if node.op_type == "Sub":
        across = _mean_axes(ctx, ctx.producer(node.input[1]), node.input[0])
        if across is None:
            return False
        _add_mvn(ctx, node.input[0], across, False, None)
        return True
    if node.op_type != "Div":
        return False
    centred = _made_by(ctx, node.input[0], "Sub")
    denominator = _with_const(ctx, _made_by(ctx, node.input[1], "Add"))
    if centred is None or denominator is None:
        return False
    x = centred.input[0]
    across = _mean_axes(ctx, ctx.producer(centred.input[1]), x)
    std = _made_by(ctx, denominator[0], "Sqrt")
    var = ctx.producer(std.input[0]) if std is not None else None
    square = _made_by(ctx, var.input[0], "Mul") if var is not None else None
    if across is None or square is None or list(square.input) != [node.input[0]] * 2:
        return False
    if _mean_axes(ctx, var, square.output[0]) != across:
        return False
    _add_mvn(ctx, x, across, True, denominator[1])
    return True


def _add_mvn(ctx, x: str, across: bool, normalize_variance: bool, eps) -> None:
    param = ctx.layer("MVN", [ctx.importer.alias.get(x, x)], ctx.outputs[:1]).mvn_param
    param.across_channels = across
    param.normalize_variance = normalize_variance
    if eps is not None:
        param.eps = eps


def _lrn_within_channel(ctx) -> bool:
    """``x * (1 + alpha * avgpool(x^2))^-beta``: Caffe's LRN WITHIN_CHANNEL."""
    if ctx.node.op_type != "Mul" or ctx.const(0) is not None or ctx.const(1) is not None:
        return False
    x, factor = ctx.inputs
    power = _with_const(ctx, _made_by(ctx, factor, "Pow"))
    base = _with_const(ctx, _made_by(ctx, power[0], "Add")) if power else None
    scaled = _with_const(ctx, _made_by(ctx, base[0], "Mul")) if base else None
    pool = _made_by(ctx, scaled[0], "AveragePool") if scaled else None
    square = _made_by(ctx, pool.input[0], "Mul") if pool is not None else None
    if square is None or list(square.input) != [x, x] or base[1] != 1.0:
        return False
    attrs = {a.name: a for a in pool.attribute}
    size = list(attrs["kernel_shape"].ints)
    pad = (size[0] - 1) // 2
    expected = {"pads": [pad] * 4, "strides": [1, 1]}
    if size[0] != size[1] or size[0] % 2 == 0 or "count_include_pad" not in attrs:
        return False
    if any(list(attrs[k].ints) != v for k, v in expected.items() if k in attrs):
        return False
    param = ctx.layer("LRN", [ctx.blob(0)], ctx.outputs[:1]).lrn_param
    param.norm_region = caffe_pb2.LRNParameter.WITHIN_CHANNEL
    param.local_size, param.alpha, param.beta = size[0], scaled[1], -power[1]
    return True
