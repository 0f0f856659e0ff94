"""PReLU: ReLU with a learned negative slope, one per channel (axis 1) or one shared.

``y = max(x, 0) + a_c * min(x, 0)``. The slope blob has shape ``(C,)``, or ``()``
with ``channel_shared``; Caffe's default filler is the constant 0.25. In place the
input is kept aside for backward (Caffe's ``bottom_memory_``).
"""

from __future__ import annotations

from caffelite.fillers import fill
from caffelite.layer import register_layer
from caffelite.layers.neuron import NeuronLayer
from caffelite.proto import caffe_pb2


def prelu_forward(xp, x, y, slope, tmp) -> None:
    """``y = max(x, 0) + slope * min(x, 0)``; ``slope`` broadcasts; ``y`` may be ``x``."""
    xp.minimum(x, 0, out=tmp)
    tmp *= slope
    xp.maximum(x, 0, out=y)
    y += tmp


def prelu_slope_grad(xp, x, dy, tmp, reduce_axes):
    """``sum(dy * x)`` over ``x <= 0``, reduced to the slope's shape (before ``dx`` is written)."""
    xp.minimum(x, 0, out=tmp)
    tmp *= dy
    return tmp.sum(axis=reduce_axes)


def prelu_backward(xp, x, dy, dx, slope, tmp) -> None:
    """``dx = dy`` where ``x > 0``, else ``dy * slope``; ``dx`` may be ``dy``."""
    tmp[...] = slope
    tmp[x > 0] = 1
    xp.multiply(dy, tmp, out=dx)


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    keeps_input = True

    def setup(self, bottom, top):
        super().setup(bottom, top)
        if bottom[0].num_axes < 2:
            raise self.error(
                f"needs a bottom with at least 2 axes (N, C, ...), got shape {bottom[0].shape}"
            )
        param = self.layer_param.prelu_param
        self.channel_shared = bool(param.channel_shared)
        channels = bottom[0].shape[1]
        if self.blobs_need_setup():
            blob = self.blobs.add_blob(*(() if self.channel_shared else (channels,)))
            if param.HasField("filler"):
                filler = param.filler
            else:
                filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            fill(blob, filler)
        want = 1 if self.channel_shared else channels
        if len(self.blobs) != 1 or self.blobs[0].count != want:
            found = [b.shape for b in self.blobs]
            raise self.error(
                f"expects one slope blob of {want} value(s) "
                f"({'channel_shared' if self.channel_shared else f'{channels} channels'}), "
                f"found blobs of shapes {found}"
            )

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(
                f"needs a bottom with at least 2 axes (N, C, ...), got shape {bottom[0].shape}"
            )
        channels = bottom[0].shape[1]
        if not self.channel_shared and channels != self.blobs[0].count:
            raise self.error(
                f"bottom has {channels} channels (shape {bottom[0].shape}) but the slope "
                f"blob has {self.blobs[0].count}"
            )
        super().reshape(bottom, top)

    def _slope(self, ndim):
        """The slope shaped to broadcast over an ``ndim``-axis bottom (channels on axis 1)."""
        slope = self.blobs[0].data
        if self.channel_shared:
            return slope.reshape(())
        return slope.reshape((1, -1) + (1,) * (ndim - 2))

    def compute(self, x, y):
        tmp = self.buffer("tmp", x.shape, x.dtype)
        prelu_forward(self.xp, x, y, self._slope(x.ndim), tmp)

    def backward(self, top, propagate_down, bottom):
        x = self.input_data(bottom, top)
        dy = top[0].diff
        tmp = self.buffer("tmp", x.shape, x.dtype)
        # the slope gradient reads dy, which in place is dx: take it first
        if self.param_propagate_down[0]:
            axes = tuple(range(x.ndim)) if self.channel_shared else (0,) + tuple(range(2, x.ndim))
            grad = prelu_slope_grad(self.xp, x, dy, tmp, axes)
            self.blobs[0].diff[...] += grad.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            prelu_backward(self.xp, x, dy, bottom[0].diff, self._slope(x.ndim), tmp)
