"""Reduction: SUM, ASUM (sum of |x|), SUMSQ or MEAN over all axes from ``axis`` on.

The top keeps the axes before ``axis`` (so ``axis: 0``, the default, gives a
scalar) and is multiplied by ``coeff``. MEAN is SUM with ``coeff / count``.
"""

from __future__ import annotations

import math

from caffelite.layer import Layer, register_layer
from caffelite.proto import caffe_pb2
from caffelite.shapes import canonical_axis

_OP = caffe_pb2.ReductionParameter
SUM, ASUM, SUMSQ, MEAN = _OP.SUM, _OP.ASUM, _OP.SUMSQ, _OP.MEAN


@register_layer("Reduction")
class ReductionLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        self.op = self.layer_param.reduction_param.operation
        if self.op not in (SUM, ASUM, SUMSQ, MEAN):
            raise self.error(f"unknown reduction operation {self.op}")

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.reduction_param
        shape = bottom[0].shape
        axis = canonical_axis(self, bottom[0], param.axis)
        self.num = math.prod(shape[:axis])
        self.dim = math.prod(shape[axis:])
        top[0].reshape(shape[:axis])
        self.coeff = float(param.coeff)
        if self.op == MEAN:
            self.coeff /= self.dim

    def forward(self, bottom, top) -> None:
        xp = self.xp
        x = bottom[0].data.reshape(self.num, self.dim)
        out = top[0].data.reshape(self.num)
        if self.op in (SUM, MEAN):
            xp.sum(x, axis=1, out=out)
        elif self.op == ASUM:
            xp.sum(xp.abs(x), axis=1, out=out)
        else:
            xp.einsum("ij,ij->i", x, x, out=out)
        if self.coeff != 1:
            out *= self.coeff

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        xp = self.xp
        scale = top[0].diff.reshape(self.num, 1) * self.coeff
        diff = bottom[0].diff.reshape(self.num, self.dim)
        if self.op in (SUM, MEAN):
            diff[...] = scale
        elif self.op == ASUM:
            xp.sign(bottom[0].data.reshape(self.num, self.dim), out=diff)
            diff *= scale
        else:
            xp.multiply(bottom[0].data.reshape(self.num, self.dim), 2 * scale, out=diff)
