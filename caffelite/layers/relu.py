"""ReLU: ``max(x, 0) + negative_slope * min(x, 0)`` (leaky when the slope is non-zero).

Nets usually run it in place (bottom and top are the same Blob). Backward then
only sees the output, so the mask is taken from ``bottom.data`` *after* forward:
in place that is ``top.data``, which is positive exactly where ``x`` was
(for a non-negative slope), as in Caffe. Both passes are kernels
(:func:`caffelite.kernels.relu_forward`): one pass over memory each, where numpy
took two for the gradient.
"""

from __future__ import annotations

from caffelite import kernels
from caffelite.layer import Layer, register_layer


@register_layer("ReLU")
class ReLULayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def reshape(self, bottom, top) -> None:
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top) -> None:
        kernels.relu_forward(bottom[0].data, top[0].data, self.negative_slope)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            kernels.relu_backward(bottom[0].data, top[0].diff, bottom[0].diff, self.negative_slope)
