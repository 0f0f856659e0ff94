"""Eltwise: elementwise PROD, SUM (with per-bottom coefficients) or MAX of equal-shaped bottoms.

MAX remembers which bottom won each element (Caffe's ``max_idx_``) so the gradient
goes to that bottom only. Ties follow Caffe's loop exactly: between bottoms 0 and 1
bottom 1 wins (0 must be strictly greater); from bottom 2 on, a later bottom wins only
if it is strictly greater, so the earlier one keeps a tie.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer
from caffelite.proto import caffe_pb2

PROD = caffe_pb2.EltwiseParameter.PROD
SUM = caffe_pb2.EltwiseParameter.SUM
MAX = caffe_pb2.EltwiseParameter.MAX


def eltwise_max(xp, arrays, out, mask) -> None:
    """``out`` = elementwise max of ``arrays``; ``mask`` = the index of the winner."""
    first = arrays[0] > arrays[1]
    xp.copyto(out, arrays[1])
    xp.copyto(out, arrays[0], where=first)
    mask[...] = 1
    xp.copyto(mask, 0, where=first)
    for k, x in enumerate(arrays[2:], start=2):
        better = x > out
        xp.copyto(out, x, where=better)
        xp.copyto(mask, k, where=better)


def prod_grad(xp, arrays, i, out, stable: bool, top) -> None:
    """d(prod)/d(arrays[i]): the product of the others, or ``top / arrays[i]`` (unstable)."""
    if not stable:
        xp.divide(top, arrays[i], out=out)
        return
    others = [x for j, x in enumerate(arrays) if j != i]
    out[...] = others[0]
    for x in others[1:]:
        out *= x


@register_layer("Eltwise")
class EltwiseLayer(Layer):
    min_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.eltwise_param
        self.op = param.operation
        if self.op not in (PROD, SUM, MAX):
            raise self.error(f"unknown eltwise operation {self.op}")
        coeffs = list(param.coeff)
        if coeffs and len(coeffs) != len(bottom):
            raise self.error(
                f"takes one coeff per bottom: got {len(coeffs)} coeff values for "
                f"{len(bottom)} bottoms"
            )
        if coeffs and self.op != SUM:
            name = caffe_pb2.EltwiseParameter.EltwiseOp.Name(self.op)
            raise self.error(f"coeff is only for operation SUM, not {name}")
        self.coeffs = coeffs or [1.0] * len(bottom)
        self.stable_prod_grad = param.stable_prod_grad
        self._mask = None

    def reshape(self, bottom, top) -> None:
        shape = bottom[0].shape
        for i, blob in enumerate(bottom[1:], start=1):
            if blob.shape != shape:
                raise self.error(
                    f"all bottoms must have the same shape; bottom[0] has shape {shape}, "
                    f"bottom[{i}] has shape {blob.shape}"
                )
        top[0].reshape(shape)
        if self.op == MAX and (self._mask is None or self._mask.shape != shape):
            self._mask = self.xp.empty(shape, dtype=self.xp.int32)

    def forward(self, bottom, top) -> None:
        xp = self.xp
        out = top[0].data
        arrays = [b.data for b in bottom]
        if self.op == PROD:
            xp.multiply(arrays[0], arrays[1], out=out)
            for x in arrays[2:]:
                out *= x
        elif self.op == SUM:
            # Caffe's sum of coeff * bottom, in its order; a coefficient of 1 multiplies
            # nothing, so ResNet's shortcut sums take one pass
            terms = [x if c == 1 else c * x for c, x in zip(self.coeffs, arrays, strict=True)]
            xp.add(terms[0], terms[1], out=out)
            for x in terms[2:]:
                out += x
        else:
            eltwise_max(xp, arrays, out, self._mask)

    def backward(self, top, propagate_down, bottom) -> None:
        xp = self.xp
        dtop = top[0].diff
        arrays = [b.data for b in bottom]
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            diff = blob.diff
            if self.op == PROD:
                prod_grad(xp, arrays, i, diff, self.stable_prod_grad, top[0].data)
                diff *= dtop
            elif self.op == SUM:
                xp.multiply(dtop, self.coeffs[i], out=diff)
            else:
                xp.multiply(dtop, self._mask == i, out=diff)
