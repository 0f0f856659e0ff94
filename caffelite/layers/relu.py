"""ReLU: ``max(x, 0) + negative_slope * min(x, 0)`` (leaky when the slope is non-zero).

Nets usually run it in place (bottom and top are the same Blob). Backward then
only sees the output, so the mask is taken from ``bottom.data`` *after* forward:
in place that is ``top.data``, which is positive exactly where ``x`` was
(for a non-negative slope), as in Caffe.
"""

from __future__ import annotations

from caffelite.layer import Layer, register_layer


def relu_forward(xp, x, y, slope: float, scratch) -> None:
    """``y = max(x, 0) + slope * min(x, 0)``; ``y`` may be ``x``."""
    if slope == 0:
        xp.maximum(x, 0, out=y)
        return
    xp.minimum(x, 0, out=scratch)
    scratch *= slope
    xp.maximum(x, 0, out=y)
    y += scratch


def relu_backward(xp, x, dy, dx, slope: float, scratch) -> None:
    """``dx = dy * (1 where x > 0 else slope)``; ``dx`` may be ``dy``."""
    if slope == 0:
        xp.multiply(dy, x > 0, out=dx)
        return
    xp.greater(x, 0, out=scratch)  # 1.0 where x > 0, else 0.0
    if 0 <= slope <= 1:
        xp.maximum(scratch, slope, out=scratch)  # exactly 1 or slope, no branchy select
    else:
        scratch[...] = xp.where(scratch > 0, 1, slope)
    xp.multiply(dy, scratch, out=dx)


@register_layer("ReLU")
class ReLULayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top) -> None:
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def reshape(self, bottom, top) -> None:
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        scratch = getattr(self, "_scratch", None)
        if self.negative_slope != 0 and (
            scratch is None or scratch.shape != bottom[0].shape or scratch.dtype != bottom[0].dtype
        ):
            self._scratch = self.xp.empty(bottom[0].shape, dtype=bottom[0].dtype)
        elif self.negative_slope == 0:
            self._scratch = None

    def forward(self, bottom, top) -> None:
        relu_forward(self.xp, bottom[0].data, top[0].data, self.negative_slope, self._scratch)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            relu_backward(
                self.xp,
                bottom[0].data,
                top[0].diff,
                bottom[0].diff,
                self.negative_slope,
                self._scratch,
            )
