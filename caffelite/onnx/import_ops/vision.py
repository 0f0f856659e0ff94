"""Conv, ConvTranspose, the pools (with a Pad before and a divisor correction after), LRN
and BatchNormalization."""

from __future__ import annotations

import numpy as np

from caffelite.layers.pooling import pooled_size
from caffelite.onnx.importer import register_importer
from caffelite.onnx.pooling_geometry import caffe_average_divisors
from caffelite.proto import caffe_pb2

_P = caffe_pb2.PoolingParameter
_POOLS = ("MaxPool", "AveragePool")


def _pair(values, what: str, ctx) -> tuple[int, int]:
    values = list(values)
    if len(values) != 2:
        raise ctx.error(f"only 2-D {what} is supported, got {values}")
    return int(values[0]), int(values[1])


def _per_axis(values, axes: int, what: str, ctx) -> list[int]:
    values = [int(v) for v in values]
    if len(values) != axes:
        raise ctx.error(f"{what} {values} needs one value per spatial axis ({axes})")
    return values


def _symmetric_pads(ctx, axes: int) -> list[int]:
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.error(f"auto_pad {ctx.attr('auto_pad')} is not supported; give explicit pads")
    pads = list(ctx.attr("pads", [0] * (2 * axes)))
    if pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
        raise ctx.error(f"Caffe pads both sides alike; pads {pads} differ")
    return _per_axis(pads[: len(pads) // 2], axes, "pads", ctx)


def _repeated(values: list[int]) -> list[int]:
    """Caffe's repeated geometry field: one value when all axes agree."""
    return values[:1] if len(set(values)) == 1 else values


def _conv_geometry(param, ctx) -> None:
    """Any number of spatial axes; 2-D in Caffe's kernel_h/kernel_w form."""
    kernel = [int(k) for k in ctx.attr("kernel_shape", ctx.const(1).shape[2:])]
    axes = len(kernel)
    stride = _per_axis(ctx.attr("strides", [1] * axes), axes, "strides", ctx)
    pad = _symmetric_pads(ctx, axes)
    dilation = _per_axis(ctx.attr("dilations", [1] * axes), axes, "dilations", ctx)
    if axes == 2:
        param.kernel_h, param.kernel_w = kernel
        param.stride_h, param.stride_w = stride
        param.pad_h, param.pad_w = pad
    else:
        param.kernel_size.extend(_repeated(kernel))
        if any(s != 1 for s in stride):
            param.stride.extend(_repeated(stride))
        if any(pad):
            param.pad.extend(_repeated(pad))
    if any(d != 1 for d in dilation):
        param.dilation.extend(_repeated(dilation))
    param.group = int(ctx.attr("group", 1))


@register_importer("Conv", "ConvTranspose")
def convolution(ctx) -> None:
    weights = ctx.const(1)
    if weights is None:
        raise ctx.error("the weights must be a constant")
    transposed = ctx.node.op_type == "ConvTranspose"
    if transposed and (any(ctx.attr("output_padding", [])) or ctx.attr("output_shape")):
        raise ctx.error("output_padding / output_shape have no Caffe equivalent")
    bias = ctx.const(2)
    blobs = [weights] + ([bias] if bias is not None else [])
    layer = ctx.layer(
        "Deconvolution" if transposed else "Convolution", [ctx.blob(0)], ctx.outputs[:1], blobs
    )
    param = layer.convolution_param
    group = int(ctx.attr("group", 1))
    param.num_output = weights.shape[1] * group if transposed else weights.shape[0]
    param.bias_term = bias is not None
    _conv_geometry(param, ctx)


@register_importer("Pad")
def pad(ctx) -> None:
    """Kept aside for the pool that reads it: Caffe pads only inside its layers."""
    if ctx.attr("mode", "constant") != "constant":
        raise ctx.error(f"Pad mode {ctx.attr('mode')} has no Caffe equivalent")
    pads = ctx.const(1)
    if pads is None:
        raise ctx.error("the pads must be a constant")
    rank = len(ctx.in_shape())
    if ctx.has_input(3):
        raise ctx.error("Pad with axes is not supported")
    pads = [int(p) for p in pads]
    if rank != 4 or pads[0:2] != [0, 0] or pads[4:6] != [0, 0]:
        raise ctx.error(
            f"only spatial padding of a 4-D tensor (before a pool) is supported; pads {pads}"
        )
    value = ctx.const(2)
    fill = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
    readers = ctx.importer.consumers.get(ctx.outputs[0], [])
    if not readers or any(ctx.importer.nodes[i].op_type not in _POOLS for i in readers):
        raise ctx.error("Caffe has no Pad layer: a Pad is only expressible before a pooling")
    ctx.importer.padded[ctx.outputs[0]] = (ctx.blob(0), pads[2:4], pads[6:8], fill)


def _onnx_divisors(size, k, s, begin, end, out, include_pad):
    """Per-window divisors of ONNX AveragePool along one axis."""
    result = []
    for j in range(out):
        start = j * s - begin
        if include_pad:
            result.append(min(start + k, size + end) - start)
        else:
            result.append(min(start + k, size) - max(start, 0))
    return np.array(result, dtype=np.float64)


def _take_correction(ctx, out_hw):
    """A Mul by a constant of the pooled plane's shape right after the pool: (index, factor)."""
    found = ctx.sole_consumer(ctx.outputs[0])
    if found is None or found[1].op_type != "Mul":
        return None
    index, node = found
    operands = [name for name in node.input if name != ctx.outputs[0]]
    if len(operands) != 1:
        return None
    factor = ctx.const_of(operands[0])
    if factor is None:
        return None
    try:
        factor = np.broadcast_to(np.asarray(factor, np.float64), (1, 1, *out_hw))[0, 0]
    except ValueError:
        return None
    if np.asarray(ctx.const_of(operands[0])).ndim > 2 and np.asarray(
        ctx.const_of(operands[0])
    ).shape[:-2] not in ((), (1,), (1, 1)):
        return None
    return index, node, factor


@register_importer(*_POOLS)
def pool(ctx) -> None:
    is_max = ctx.node.op_type == "MaxPool"
    if len([o for o in ctx.outputs if o]) > 1:
        raise ctx.error("MaxPool's indices output has no Caffe equivalent")
    if any(d != 1 for d in ctx.attr("dilations", [1, 1])):
        raise ctx.error("dilated pooling has no Caffe equivalent")
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.error(f"auto_pad {ctx.attr('auto_pad')} is not supported; give explicit pads")
    kh, kw = _pair(ctx.attr("kernel_shape"), "pooling", ctx)
    sh, sw = _pair(ctx.attr("strides", [1, 1]), "stride", ctx)
    pads = list(ctx.attr("pads", [0, 0, 0, 0]))
    begin, end = pads[:2], pads[2:]
    include_pad = bool(ctx.attr("count_include_pad", 0))
    source = ctx.inputs[0]
    padded = ctx.importer.padded.get(source)
    if padded is not None:
        if any(pads):
            raise ctx.error("a Pad before a pool that pads again is not supported")
        source, begin, end, fill = padded
        if is_max and fill > -3e38:
            raise ctx.error(
                f"a MAX pool over a Pad filled with {fill} (not -inf) differs from Caffe's"
            )
        if not is_max and fill != 0:
            raise ctx.error(
                f"an average over a Pad filled with {fill} (not 0) differs from Caffe's"
            )
        include_pad = True  # the padded zeros are counted, having been real cells
        source_shape = ctx.shape(ctx.producer(ctx.inputs[0]).input[0])
    else:
        source = ctx.blob(0)
        source_shape = ctx.in_shape()
    height, width = source_shape[2:]
    oh, ow = ctx.out_shape()[2:]
    round_mode = _round_mode(ctx, (height, width), (kh, kw), (sh, sw), begin, (oh, ow))
    top = ctx.outputs[0]
    if not is_max:
        caffe = np.outer(
            caffe_average_divisors(height, kh, sh, begin[0], oh),
            caffe_average_divisors(width, kw, sw, begin[1], ow),
        )
        ours = np.outer(
            _onnx_divisors(height, kh, sh, begin[0], end[0], oh, include_pad),
            _onnx_divisors(width, kw, sw, begin[1], end[1], ow, include_pad),
        )
        correction = _take_correction(ctx, (oh, ow))
        if correction is not None and not np.allclose(ours, caffe, rtol=1e-6):
            index, node, factor = correction
            ours = ours / factor
            if np.allclose(ours, caffe, rtol=1e-5):
                ctx.take(index)
                top = node.output[0]
        if not np.allclose(ours, caffe, rtol=1e-5):
            raise ctx.error(
                "its averaging divisors at the borders differ from Caffe's (Caffe divides by "
                "the window clipped to the padded image)"
            )
    layer = ctx.layer("Pooling", [source], [top])
    param = layer.pooling_param
    param.pool = _P.MAX if is_max else _P.AVE
    param.kernel_h, param.kernel_w = kh, kw
    param.stride_h, param.stride_w = sh, sw
    param.pad_h, param.pad_w = int(begin[0]), int(begin[1])
    if round_mode != _P.CEIL:
        param.round_mode = round_mode


def _round_mode(ctx, size, kernel, stride, begin, out) -> int:
    """The Caffe rounding that gives ONNX's output size with Caffe's symmetric pad."""
    for axis in (0, 1):
        if begin[axis] >= kernel[axis]:
            raise ctx.error(f"a pad of {begin[axis]} is not smaller than the kernel {kernel[axis]}")
    for mode in (_P.CEIL, _P.FLOOR):
        if all(
            pooled_size(size[a], kernel[a], stride[a], begin[a], mode == _P.CEIL) == out[a]
            for a in (0, 1)
        ):
            return mode
    raise ctx.error(f"no Caffe rounding gives its output size {out} for input {size}")


@register_importer("GlobalMaxPool", "GlobalAveragePool")
def global_pool(ctx) -> None:
    layer = ctx.layer("Pooling", [ctx.blob(0)], ctx.outputs)
    layer.pooling_param.pool = _P.MAX if ctx.node.op_type == "GlobalMaxPool" else _P.AVE
    layer.pooling_param.global_pooling = True


@register_importer("LRN")
def lrn(ctx) -> None:
    size = int(ctx.attr("size"))
    if size % 2 == 0:
        raise ctx.error(f"Caffe's LRN needs an odd size, got {size}")
    param = ctx.layer("LRN", [ctx.blob(0)], ctx.outputs).lrn_param
    param.local_size = size
    param.alpha = float(ctx.attr("alpha", 1e-4))
    param.beta = float(ctx.attr("beta", 0.75))
    param.k = float(ctx.attr("bias", 1.0))


@register_importer("BatchNormalization")
def batch_norm(ctx) -> None:
    """Caffe's BatchNorm (global statistics, stored scale factor 1), then a Scale layer for
    gamma and beta unless they are 1 and 0."""
    if ctx.attr("training_mode", 0):
        raise ctx.error("training_mode BatchNormalization is not supported")
    if len([o for o in ctx.outputs if o]) > 1:
        raise ctx.error("running statistics outputs are not supported")
    scale, bias, mean, var = (ctx.const(i) for i in (1, 2, 3, 4))
    if any(v is None for v in (scale, bias, mean, var)):
        raise ctx.error("scale, bias, mean and var must be constants")
    affine = not (np.all(scale == 1) and np.all(bias == 0))
    normalized = f"{ctx.outputs[0]}/normalized" if affine else ctx.outputs[0]
    layer = ctx.layer("BatchNorm", [ctx.blob(0)], [normalized], [mean, var, np.ones(1)])
    layer.batch_norm_param.use_global_stats = True
    layer.batch_norm_param.eps = float(ctx.attr("epsilon", 1e-5))
    if affine:
        layer = ctx.layer(
            "Scale", [normalized], ctx.outputs[:1], [scale, bias], name=f"{layer.name}/scale"
        )
        layer.scale_param.bias_term = True
