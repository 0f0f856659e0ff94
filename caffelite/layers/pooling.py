"""Pooling (MAX and AVE) with Caffe's output size, padding and tie rules.

The windows are visited one kernel offset at a time: for offset ``(i, j)`` the
strided view ``x[..., i::stride, j::stride]`` holds that element of every window in
the batch, so a k x k pooling is k*k whole-batch array operations, never a loop
over pixels. Windows that reach into padding, or past the border because of Caffe's
ceil rounding, read from a padded copy whose extra cells can never win a max
(-inf) or add to a sum (0).

MAX keeps, per output, the kernel offset of the first maximum (row-major, later
elements replace only when strictly greater, as Caffe's loop does); backward
scatters the gradient with one masked pass per offset. The argmax is kept branch-
free (``max(idx, greater * offset)``), since masked copies on random masks are
several times slower.
"""

from __future__ import annotations

import math

import numpy

from caffelite.im2col import Workspace
from caffelite.layer import TEST, Layer, register_layer
from caffelite.proto import caffe_pb2

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


def average_divisors(size: int, kernel: int, stride: int, pad: int, pooled: int) -> list[int]:
    """Per-window divisor for AVE: the window clipped to the padded image (not the image)."""
    divisors = []
    for p in range(pooled):
        start = p * stride - pad
        end = min(start + kernel, size + pad)
        divisors.append(end - start)
    return divisors


@register_layer("Pooling")
class PoolingLayer(Layer):
    """Caffe's Pooling: MAX (with an optional argmax ``mask`` top) or AVE, 4-d bottoms."""

    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 2

    # ---- setup -----------------------------------------------------------------------
    def setup(self, bottom, top):
        param = self.layer_param.pooling_param
        self.method = param.pool
        if self.method == _P.STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported (use MAX or AVE)")
        if self.method not in (_P.MAX, _P.AVE):
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
        self.workspace = Workspace()
        self._input_key = None

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
        self.out_hw = (oh, ow)
        top[0].reshape(num, channels, oh, ow)
        if len(top) > 1:
            top[1].reshape(num, channels, oh, ow)
        # The padded frame must hold every window, including the ones ceil rounding
        # lets hang over the far border.
        self.frame_hw = (
            max(height + 2 * ph, (oh - 1) * sh + kh),
            max(width + 2 * pw, (ow - 1) * sw + kw),
        )
        direct = self.pad == (0, 0) and self.frame_hw == (height, width)
        self.direct = direct
        self.whole = direct and (oh, ow) == (1, 1)
        self.tiles = direct and self.stride == self.kernel and (oh * kh, ow * kw) == (height, width)
        key = (shape, bottom[0].dtype)
        if key != self._input_key:
            self.workspace.clear()
            self._input_key = key
            self._setup_constants(bottom[0].dtype, height, width)

    def _setup_constants(self, dtype, height, width):
        """Host-side tables that depend only on the geometry, moved to the array module."""
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.kernel, self.stride, self.pad, self.out_hw
        offsets = kh * kw
        self.index_dtype = numpy.dtype(
            numpy.int8 if offsets <= 127 else numpy.int16 if offsets <= 32767 else numpy.int32
        )
        if self.method == _P.AVE:
            rows = average_divisors(height, kh, sh, ph, oh)
            cols = average_divisors(width, kw, sw, pw, ow)
            self.divisor = xp.asarray(numpy.outer(rows, cols), dtype=dtype)
        # Caffe's mask value: the flat index h * W + w of the max inside its plane.
        starts = numpy.outer(numpy.arange(oh) * sh - ph, numpy.ones(ow, int)) * width
        starts = starts + numpy.arange(ow) * sw - pw
        self.mask_base = xp.asarray(starts, dtype=dtype)
        offset_table = [(o // kw) * width + o % kw for o in range(offsets)]
        self.mask_offsets = xp.asarray(offset_table, dtype=dtype)

    # ---- windows ---------------------------------------------------------------------
    def _offset_views(self, frame):
        """One strided view per kernel offset, each shaped like the top."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        views = []
        for i in range(kh):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            for j in range(kw):
                views.append(frame[:, :, rows, slice(j, j + sw * (ow - 1) + 1, sw)])
        return views

    def _frame(self, x, fill: float):
        """The input itself, or a padded copy whose border holds ``fill``."""
        if self.direct:
            return x
        n, c, h, w = x.shape
        ph, pw = self.pad
        frame = self.workspace.constant("frame", (n, c) + self.frame_hw, x.dtype, fill)
        frame[:, :, ph : ph + h, pw : pw + w] = x
        return frame

    def _accumulator(self, dx):
        """Where backward sums window gradients: ``dx`` itself or a padded frame."""
        if self.direct:
            return dx
        return self.workspace.array("frame_diff", dx.shape[:2] + self.frame_hw, dx.dtype)

    def _crop(self, frame, dx):
        if frame is not dx:
            h, w = dx.shape[2:]
            ph, pw = self.pad
            dx[...] = frame[:, :, ph : ph + h, pw : pw + w]

    # ---- forward -----------------------------------------------------------------------
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.method != _P.MAX:
            self._forward_ave(x, y)
        elif self.phase == TEST and len(top) == 1 and not self.whole:
            # Only backward needs the argmax, and a TEST net seldom runs one: skip it
            # here (about half the work) and find it in backward if it is ever asked for.
            self._forward_max_values(x, y)
            self.argmax = None
        else:
            self._forward_max(x, y)
            if len(top) > 1:
                self._write_mask(top[1].data)

    def _forward_max_values(self, x, y):
        xp = self.xp
        views = self._offset_views(self._frame(x, -numpy.inf))
        xp.copyto(y, views[0])
        for view in views[1:]:
            xp.maximum(y, view, out=y)

    def _forward_max(self, x, y):
        xp = self.xp
        if self.whole:
            n, c = x.shape[:2]
            flat = x.reshape(n * c, -1)
            self.argmax = xp.argmax(flat, axis=1)  # numpy and CuPy pick the first maximum
            self.whole_index = self.argmax + xp.arange(n * c) * flat.shape[1]
            xp.take(x.reshape(-1), self.whole_index, out=y.reshape(-1))
            return
        views = self._offset_views(self._frame(x, -numpy.inf))
        work = self.workspace
        index = work.array("argmax", y.shape, self.index_dtype)
        greater = work.array("greater", y.shape, numpy.bool_)
        candidate = work.array("candidate", y.shape, self.index_dtype)
        xp.copyto(y, views[0])
        index[...] = 0
        for offset, view in enumerate(views[1:], 1):
            xp.greater(view, y, out=greater)
            xp.maximum(y, view, out=y)
            # offsets only grow, so "take the new offset where greater" is a max
            xp.multiply(greater, self.index_dtype.type(offset), out=candidate)
            xp.maximum(index, candidate, out=index)
        self.argmax = index

    def _write_mask(self, mask):
        """Caffe's top[1]: the argmax as a flat ``h * W + w`` index, stored as float."""
        if self.whole:
            mask[...] = self.argmax.reshape(mask.shape)
            return
        xp = self.xp
        xp.take(self.mask_offsets, self.argmax, out=mask)
        mask += self.mask_base

    def _forward_ave(self, x, y):
        xp = self.xp
        if self.whole:
            n, c = x.shape[:2]
            xp.sum(x.reshape(n, c, -1), axis=2, out=y.reshape(n, c))
            y /= math.prod(x.shape[2:])
            return
        views = self._offset_views(self._frame(x, 0.0))
        xp.copyto(y, views[0])
        for view in views[1:]:
            y += view
        y /= self.divisor

    # ---- backward ----------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.method == _P.MAX:
            if self.argmax is None:  # the TEST-phase forward kept none
                self._forward_max(
                    bottom[0].data, self.workspace.array("values", dy.shape, dy.dtype)
                )
            self._backward_max(dy, dx)
        else:
            self._backward_ave(dy, dx)

    def _backward_max(self, dy, dx):
        xp = self.xp
        if self.whole:
            dx[...] = 0
            dx.reshape(-1)[self.whole_index] = dy.reshape(-1)
            return
        work = self.workspace
        hit = work.array("hit", dy.shape, numpy.bool_)
        if self.tiles:
            # every bottom cell is in exactly one window: assign, no clearing needed
            for offset, view in enumerate(self._offset_views(dx)):
                xp.equal(self.argmax, offset, out=hit)
                xp.multiply(dy, hit, out=view)
            return
        frame = self._accumulator(dx)
        frame[...] = 0
        routed = work.array("routed", dy.shape, dy.dtype)
        for offset, view in enumerate(self._offset_views(frame)):
            xp.equal(self.argmax, offset, out=hit)
            xp.multiply(dy, hit, out=routed)
            view += routed
        self._crop(frame, dx)

    def _backward_ave(self, dy, dx):
        xp = self.xp
        if self.whole:
            n, c = dx.shape[:2]
            flat = dx.reshape(n, c, -1)
            flat[...] = dy.reshape(n, c, 1) / flat.shape[2]
            return
        share = self.workspace.array("share", dy.shape, dy.dtype)
        xp.divide(dy, self.divisor, out=share)
        if self.tiles:
            for view in self._offset_views(dx):
                view[...] = share
            return
        frame = self._accumulator(dx)
        frame[...] = 0
        for view in self._offset_views(frame):
            view += share
        self._crop(frame, dx)
