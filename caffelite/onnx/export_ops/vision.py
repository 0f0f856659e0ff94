"""Convolution, Deconvolution, Pooling, LRN and Crop, with Caffe's exact geometry.

Pooling is where Caffe and ONNX part: Caffe rounds the output size up (``ceil``), drops a
last window that would start in the padding, clips windows at the padded border and, for
AVE, divides by the window clipped to the padded image. The export pads explicitly to the
exact frame the Caffe windows cover (``Pad``, -inf for MAX, 0 for AVE), pools that frame
with ONNX's plain floor rule, and for AVE multiplies by ``kernel_area / caffe_divisor``.
"""

from __future__ import annotations

import numpy as np

from caffelite.onnx.export import register_exporter
from caffelite.onnx.pooling_geometry import caffe_average_divisors
from caffelite.proto import caffe_pb2

_P = caffe_pb2.PoolingParameter


def _check_channel_axis(ctx) -> None:
    if ctx.layer.channel_axis != 1:
        raise ctx.error(f"ONNX convolutions need channels on axis 1, not {ctx.layer.channel_axis}")


def _conv_attrs(layer) -> dict:
    geo = layer.geometry
    return {
        "kernel_shape": list(geo.kernel),
        "strides": list(geo.stride),
        "pads": [*geo.pad, *geo.pad],
        "dilations": list(geo.dilation),
        "group": layer.group,
    }


@register_exporter("Convolution", "Deconvolution")
def convolution(ctx) -> None:
    _check_channel_axis(ctx)
    layer = ctx.layer
    op = "ConvTranspose" if layer.reverse_dimensions else "Conv"
    weights = ctx.weight(0, "weight")
    bias = [ctx.weight(1, "bias")] if layer.bias_term else []
    for i, bottom in enumerate(ctx.bottoms):  # several bottoms share one filter bank
        ctx.node(op, [bottom, weights, *bias], i, **_conv_attrs(layer))


@register_exporter("Pooling")
def pooling(ctx) -> None:
    layer = ctx.layer
    if len(ctx.tops) > 1:
        raise ctx.error("the argmax mask top of MAX pooling has no ONNX equivalent")
    if layer.method == _P.STOCHASTIC:
        raise ctx.error(
            "STOCHASTIC pooling has no ONNX equivalent (ONNX has no sampling pooling op)"
        )
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.pad
    _, _, height, width = ctx.bottom_shapes[0]
    oh, ow = ctx.top_shapes[0][2:]
    is_max = layer.method == _P.MAX
    if layer.global_pooling:
        ctx.node("GlobalMaxPool" if is_max else "GlobalAveragePool", ctx.bottoms, 0)
        return
    # The frame Caffe's windows cover: pad in front, and at the far end whatever makes the
    # last window fit exactly (more than pad under ceil rounding, less when it drops cells).
    end_h = (oh - 1) * sh + kh - height - ph
    end_w = (ow - 1) * sw + kw - width - pw
    x = ctx.bottoms[0]
    if (ph, pw, end_h, end_w) != (0, 0, 0, 0):
        pads = ctx.g.int64s(ctx.tmp("pads"), [0, 0, ph, pw, 0, 0, end_h, end_w])
        fill = ctx.scalar("pad_value", -np.inf if is_max else 0.0)
        x = ctx.node("Pad", [x, pads, fill], "padded", mode="constant")
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
    if is_max:
        ctx.node("MaxPool", [x], 0, **attrs)
        return
    rows = caffe_average_divisors(height, kh, sh, ph, oh)
    cols = caffe_average_divisors(width, kw, sw, pw, ow)
    correction = (kh * kw) / np.outer(rows, cols)
    if np.all(correction == 1):
        ctx.node("AveragePool", [x], 0, **attrs)
        return
    mean = ctx.node("AveragePool", [x], "mean", **attrs)
    ctx.node("Mul", [mean, ctx.g.constant(ctx.tmp("divisor"), correction)], 0)


@register_exporter("LRN")
def lrn(ctx) -> None:
    layer = ctx.layer
    x = ctx.bottoms[0]
    if layer.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        ctx.node("LRN", [x], 0, size=layer.size, alpha=layer.alpha, beta=layer.beta, bias=layer.k)
        return
    # WITHIN_CHANNEL: x * (1 + alpha * mean_{size x size}(x^2))^-beta, the mean over the
    # zero-padded window (Caffe builds it from an AVE pooling whose windows never clip).
    pad = (layer.size - 1) // 2
    square = ctx.node("Mul", [x, x], "square")
    mean = ctx.node(
        "AveragePool",
        [square],
        "mean",
        kernel_shape=[layer.size] * 2,
        pads=[pad] * 4,
        count_include_pad=1,
    )
    scaled = ctx.node("Mul", [mean, ctx.scalar("alpha", layer.alpha)], "scaled")
    base = ctx.node("Add", [scaled, ctx.scalar("one", 1.0)], "base")
    factor = ctx.node("Pow", [base, ctx.scalar("minus_beta", -layer.beta)], "factor")
    ctx.node("Mul", [x, factor], 0)


@register_exporter("Crop")
def crop(ctx) -> None:
    window = ctx.layer.window
    axes = [i for i, s in enumerate(window) if s != slice(None)]
    if 0 in axes:
        raise ctx.error("cropping the batch axis (axis 0) is not exported")
    starts = [window[i].start for i in axes]
    ends = [window[i].stop for i in axes]
    g = ctx.g
    ctx.node(
        "Slice",
        [
            ctx.bottoms[0],
            g.int64s(ctx.tmp("starts"), starts),
            g.int64s(ctx.tmp("ends"), ends),
            g.int64s(ctx.tmp("axes"), axes),
        ],
        0,
    )
