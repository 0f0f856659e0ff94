"""LRN: local response normalisation, ``y = x * scale ^ -beta``, on (N, C, H, W) blobs.

ACROSS_CHANNELS (the default): ``scale = k + alpha / n * sum(x^2)`` over the ``n``
channels centred on each one (zero padded at the ends).

WITHIN_CHANNEL: Caffe builds it from Split, Power(2), AVE Pooling (kernel ``n``,
pad ``(n-1)/2``, stride 1), Power(shift 1, scale alpha, power -beta) and Eltwise
PROD, so ``scale = 1 + alpha / n^2 * sum(x^2)`` over the ``n x n`` window centred on
each pixel, zero padded; with that padding AVE pooling always divides by ``n^2``.
Note that Caffe's WITHIN_CHANNEL uses 1, not ``k`` (``k`` applies across channels
only). This module computes the same math directly.

ACROSS_CHANNELS runs as one kernel of :mod:`caffelite.kernels` each way; the numpy
code below is WITHIN_CHANNEL's. Its window is centred and odd-sized, so the window
sum is a symmetric linear map: the backward pass reuses it.
"""

from __future__ import annotations

from caffelite import kernels
from caffelite.layer import Layer, register_layer
from caffelite.proto import caffe_pb2


def window_sum(xp, a, size: int, axis: int, out) -> None:
    """``out[i] = sum(a[i - pad .. i + pad])`` along ``axis``, zeros outside; ``pad = (size-1)/2``.

    One vectorised add per window offset (``size`` is small): no loop over positions,
    and no running-sum cancellation in float32.
    """
    pad = (size - 1) // 2
    n = a.shape[axis]
    out[...] = a
    for offset in range(1, min(pad, n - 1) + 1):
        dst_lo = [slice(None)] * a.ndim
        src_hi = [slice(None)] * a.ndim
        dst_lo[axis] = slice(0, n - offset)
        src_hi[axis] = slice(offset, n)
        out[tuple(dst_lo)] += a[tuple(src_hi)]  # the neighbour at i + offset
        out[tuple(src_hi)] += a[tuple(dst_lo)]  # the neighbour at i - offset


def within_scale(xp, x, size: int, alpha: float, scale, tmp) -> None:
    """WITHIN_CHANNEL's ``scale = 1 + alpha / size^2 * window_sum(x^2)`` over the square."""
    xp.multiply(x, x, out=tmp)
    window_sum(xp, tmp, size, 2, scale)
    window_sum(xp, scale, size, 3, tmp)
    xp.multiply(tmp, alpha / (size * size), out=scale)
    scale += 1.0


def within_forward(xp, x, y, scale, beta: float) -> None:
    """``y = x * scale ^ -beta``."""
    xp.power(scale, -beta, out=y)
    y *= x


def within_backward(xp, x, y, dy, dx, scale, size, alpha, beta, tmp, tmp2) -> None:
    """``dx = dy * scale^-beta - 2 alpha beta / size^2 * x * window_sum(dy * y / scale)``."""
    xp.multiply(dy, y, out=tmp)
    tmp /= scale
    window_sum(xp, tmp, size, 2, tmp2)
    window_sum(xp, tmp2, size, 3, tmp)
    xp.multiply(tmp, x, out=tmp2)
    coefficient = 2.0 * alpha * beta / (size * size)
    tmp2 *= coefficient
    xp.power(scale, -beta, out=tmp)
    xp.multiply(dy, tmp, out=dx)
    dx -= tmp2


@register_layer("LRN")
class LRNLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise self.error(f"lrn_param.local_size must be odd, got {self.size}")
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.region = p.norm_region
        if self.region not in (
            caffe_pb2.LRNParameter.ACROSS_CHANNELS,
            caffe_pb2.LRNParameter.WITHIN_CHANNEL,
        ):
            raise self.error(f"unknown norm_region {self.region}")

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(
                f"needs a 4-axis bottom (num, channels, height, width), got shape {bottom[0].shape}"
            )
        if top[0] is bottom[0]:
            raise self.error("does not support in-place computation (top is the same blob)")
        top[0].reshape(bottom[0].shape)
        xp, shape, dtype = self.xp, bottom[0].shape, bottom[0].dtype
        if (
            getattr(self, "scale", None) is None
            or self.scale.shape != shape
            or (self.scale.dtype != dtype)
        ):
            self.scale = xp.empty(shape, dtype=dtype)
            self._tmp = xp.empty(shape, dtype=dtype)
            self._tmp2 = xp.empty(shape, dtype=dtype)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            kernels.lrn_across_forward(x, y, self.scale, self.size, self.alpha, self.beta, self.k)
            return
        within_scale(self.xp, x, self.size, self.alpha, self.scale, self._tmp)
        within_forward(self.xp, x, y, self.scale, self.beta)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy, dx = bottom[0].data, top[0].data, top[0].diff, bottom[0].diff
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            kernels.lrn_across_backward(x, y, dy, dx, self.scale, self.size, self.alpha, self.beta)
            return
        within_backward(
            self.xp,
            x,
            y,
            dy,
            dx,
            self.scale,
            self.size,
            self.alpha,
            self.beta,
            self._tmp,
            self._tmp2,
        )
