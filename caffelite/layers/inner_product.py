"""InnerProduct (fully connected): three GEMMs on the bottom flattened to (M, K).

The weight gradient accumulates inside its GEMM (``beta = 1``, as Caffe's), not through
a temporary of the weights' size: for fc6-sized layers that was most of backward.

Everything before ``axis`` is the batch (M rows), everything from ``axis`` on is one
input vector (K values). Weights are (N, K), or (K, N) with ``transpose: true``, as
Caffe stores them, so trained models load unchanged.
"""

from __future__ import annotations

import math

from caffelite import kernels
from caffelite.layer import Layer, register_layer
from caffelite.shapes import canonical_axis


@register_layer("InnerProduct")
class InnerProductLayer(Layer):
    """Caffe's InnerProduct: ``top = bottom . W^T + b`` over the flattened trailing axes."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        param = self.layer_param.inner_product_param
        self.num_output = param.num_output
        if self.num_output <= 0:
            raise self.error(f"num_output must be positive, got {self.num_output}")
        self.bias_term = param.bias_term
        self.transpose = param.transpose
        self.axis = canonical_axis(self, bottom[0], param.axis)
        self.k = bottom[0].count(self.axis)
        n, k = self.num_output, self.k
        weight_shape = (k, n) if self.transpose else (n, k)
        specs = [("weights", weight_shape, param.weight_filler)]
        if self.bias_term:
            specs.append(("bias", (n,), param.bias_filler))
        hint = " (transpose: true stores K x N)" if self.transpose else ""
        self.make_param_blobs(specs, hint)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, bottom[0], self.layer_param.inner_product_param.axis)
        k = math.prod(shape[axis:])
        if k != self.k:
            raise self.error(
                f"input size incompatible with inner product parameters: bottom shape "
                f"{shape} flattens to {k} values from axis {axis}, expected {self.k}"
            )
        self.m = math.prod(shape[:axis])
        top[0].reshape(shape[:axis] + (self.num_output,))

    def _weights_nk(self):
        """The weights as an (N, K) operand (a transposed view when stored K x N)."""
        weights = self.blobs[0].data
        return weights.T if self.transpose else weights

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        xp.matmul(x, self._weights_nk().T, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        dy = top[0].diff.reshape(self.m, self.num_output)
        if self.param_propagate_down[0]:
            x = bottom[0].data.reshape(self.m, self.k)
            diff = self.blobs[0].diff
            if self.transpose:
                kernels.matmul_accumulate(x.T, dy, diff)
            else:
                kernels.matmul_accumulate(dy.T, x, diff)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.m, self.k)
            xp.matmul(dy, self._weights_nk(), out=dx)
