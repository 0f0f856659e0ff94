"""Pooling (MAX, AVE and STOCHASTIC) with Caffe's output size, padding and tie rules.

The array work is in :mod:`caffelite.kernels` (one pass over the input per call):
MAX keeps, per output, the position of the first maximum of its window (row-major,
a later element replaces it only when strictly greater, as Caffe's loop does) and
backward routes the gradient there; AVE divides by the window clipped to the padded
image, as Caffe does. Windows that ceil rounding lets hang past the border are
clipped to the image.

STOCHASTIC follows Caffe's GPU kernels (Caffe has no CPU version): in TRAIN each
window outputs one of its elements drawn with probability proportional to its value,
and backward routes the gradient to the drawn element; in TEST it outputs the
expectation of that draw, ``sum(x^2) / sum(x)``. The uniforms are drawn from the
process-wide stream (:mod:`caffelite.rng`) on the host, so a resumed run draws the
same samples. As in Caffe's kernels the windows start at ``p * stride`` whatever
``pad`` is (pad only adds output cells at the far end) and the inputs are assumed
non-negative (after a ReLU); with negative inputs the draw is no longer a
probability (see :func:`caffelite.kernels.stochastic_pool_forward_train`).
"""

from __future__ import annotations

import numpy

from caffelite import kernels
from caffelite.im2col import Workspace
from caffelite.layer import TRAIN, Layer, register_layer
from caffelite.proto import caffe_pb2
from caffelite.rng import get_rng

_P = caffe_pb2.PoolingParameter


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool = True) -> int:
    """Caffe's pooled length: ceil (or floor) of ``(size + 2*pad - kernel) / stride``,
    plus one, minus the last window if it would start inside the padding."""
    span = size + 2 * pad - kernel
    steps = -(-span // stride) if ceil_mode else span // stride
    pooled = steps + 1
    if pad > 0 and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


@register_layer("Pooling")
class PoolingLayer(Layer):
    """Caffe's Pooling: MAX (with an optional argmax ``mask`` top), AVE or STOCHASTIC,
    4-d bottoms."""

    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 2

    # ---- setup -----------------------------------------------------------------------
    def setup(self, bottom, top):
        param = self.layer_param.pooling_param
        self.method = param.pool
        if self.method not in (_P.MAX, _P.AVE, _P.STOCHASTIC):
            raise self.error(f"unknown pooling method {self.method}")
        if len(top) > 1 and self.method != _P.MAX:
            raise self.error(
                f"only MAX pooling has a second (mask) top; got {len(top)} tops for "
                f"{_P.PoolMethod.Name(self.method)}"
            )
        self.global_pooling = param.global_pooling
        has_size = param.HasField("kernel_size")
        has_hw = param.HasField("kernel_h") and param.HasField("kernel_w")
        if self.global_pooling:
            if has_size or param.HasField("kernel_h") or param.HasField("kernel_w"):
                raise self.error("with global_pooling: true the kernel size cannot be specified")
            self.kernel = None
        else:
            if has_size and (param.HasField("kernel_h") or param.HasField("kernel_w")):
                raise self.error("kernel size is kernel_size OR kernel_h and kernel_w; not both")
            if not (has_size or has_hw):
                raise self.error(
                    "kernel_size (or both kernel_h and kernel_w) is required for pooling"
                )
            self.kernel = (param.kernel_size,) * 2 if has_size else (param.kernel_h, param.kernel_w)
            if min(self.kernel) <= 0:
                raise self.error(f"kernel dimensions must be positive, got {self.kernel}")
        self.pad = self._pair(param, "pad", 0)
        self.stride = self._pair(param, "stride", 1)
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got {self.stride}")
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error(
                f"with global_pooling: true only pad = 0 and stride = 1 are allowed, "
                f"got pad {self.pad} and stride {self.stride}"
            )
        if self.kernel is not None:
            self._check_pad_below_kernel()
        self.ceil_mode = param.round_mode == _P.CEIL
        self.drawn_shape = None  # STOCHASTIC: the top shape of the last TRAIN draw
        self.argmax_valid = False  # MAX: whether the last forward kept its argmax
        self.workspace = Workspace()

    def _pair(self, param, name: str, default: int) -> tuple[int, int]:
        has_h, has_w = param.HasField(name + "_h"), param.HasField(name + "_w")
        if has_h or has_w:
            if param.HasField(name) or not (has_h and has_w):
                raise self.error(f"{name} is {name} OR {name}_h and {name}_w are required")
            return (getattr(param, name + "_h"), getattr(param, name + "_w"))
        value = getattr(param, name) if param.HasField(name) else default
        return (value, value)

    def _check_pad_below_kernel(self):
        for axis, pad, kernel in zip("hw", self.pad, self.kernel, strict=True):
            if pad >= kernel:
                raise self.error(
                    f"pad_{axis} ({pad}) must be smaller than kernel_{axis} ({kernel})"
                )

    # ---- reshape ---------------------------------------------------------------------
    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(
                f"input must have 4 axes (num, channels, height, width), got shape {shape}"
            )
        num, channels, height, width = shape
        if self.global_pooling:
            self.kernel = (height, width)
        kh, kw = self.kernel
        (sh, sw), (ph, pw) = self.stride, self.pad
        oh = pooled_size(height, kh, sh, ph, self.ceil_mode)
        ow = pooled_size(width, kw, sw, pw, self.ceil_mode)
        if oh <= 0 or ow <= 0:
            raise self.error(
                f"pooled output would be empty: input {height}x{width}, kernel {kh}x{kw}, "
                f"stride {sh}x{sw}, pad {ph}x{pw} give {oh}x{ow}"
            )
        # STOCHASTIC windows are not shifted by the padding (Caffe's GPU kernels).
        shift_h, shift_w = (0, 0) if self.method == _P.STOCHASTIC else (ph, pw)
        if (oh - 1) * sh - shift_h >= height or (ow - 1) * sw - shift_w >= width:
            # Caffe's ceil rounding with pad 0 can add a window that starts past the input
            # (its output is -FLT_MAX); the kernels would read outside the image.
            raise self.error(
                f"the last pooling window starts outside the input: input {height}x{width}, "
                f"kernel {kh}x{kw}, stride {sh}x{sw}, pad {ph}x{pw} give {oh}x{ow} windows; "
                + (
                    "STOCHASTIC windows start at output * stride whatever the pad (Caffe's "
                    "GPU code, which leaves such an output unwritten): use less pad"
                    if self.method == _P.STOCHASTIC
                    else "use a smaller stride"
                )
            )
        self.out_hw = (oh, ow)
        top[0].reshape(num, channels, oh, ow)
        if len(top) > 1:
            top[1].reshape(num, channels, oh, ow)
        if self.method in (_P.MAX, _P.STOCHASTIC):
            # MAX's argmax, or the element each STOCHASTIC window drew (Caffe's rand_idx_)
            self.argmax = self.workspace.array("argmax", (num, channels, oh, ow), numpy.int32)

    # ---- forward -----------------------------------------------------------------------
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.method == _P.MAX:
            # The argmax serves only a backward or the mask top: without them, the maxima
            # alone (a backward called anyway finds it missing and computes it).
            self.argmax_valid = self.backward_follows or len(top) > 1
            argmax = self.argmax if self.argmax_valid else None
            kernels.max_pool_forward(x, y, argmax, self.kernel, self.stride, self.pad)
            if len(top) > 1:
                top[1].data[...] = self.argmax  # Caffe's mask: h * W + w, as float
        elif self.method == _P.AVE:
            kernels.ave_pool_forward(x, y, self.kernel, self.stride, self.pad)
        elif self.phase == TRAIN:
            # Caffe's curand uniforms lie in (0, 1]: a window never draws a zero element
            # unless the whole window is zero.
            uniforms = self.xp.asarray(1.0 - get_rng().random(size=y.shape), dtype=y.dtype)
            kernels.stochastic_pool_forward_train(
                x, y, uniforms, self.argmax, self.kernel, self.stride
            )
            self.drawn_shape = y.shape  # what backward may route through
        else:
            kernels.stochastic_pool_forward_test(x, y, self.kernel, self.stride)

    # ---- backward ----------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.method == _P.STOCHASTIC and self.drawn_shape != dy.shape:
            raise self.error(
                "STOCHASTIC pooling has a backward only after a TRAIN forward of this shape (it "
                "routes the gradient to the drawn elements); the TEST phase draws none"
            )
        if self.method == _P.MAX and not self.argmax_valid:
            maxima = self.workspace.scratch("maxima", dy.shape, dy.dtype)  # the top stays
            kernels.max_pool_forward(
                bottom[0].data, maxima, self.argmax, self.kernel, self.stride, self.pad
            )
            self.argmax_valid = True
        if self.method in (_P.MAX, _P.STOCHASTIC):
            pad = (0, 0) if self.method == _P.STOCHASTIC else self.pad  # windows at p * stride
            kernels.max_pool_backward(dy, self.argmax, dx, self.kernel, self.stride, pad)
        else:
            kernels.ave_pool_backward(dy, dx, self.kernel, self.stride, self.pad)
