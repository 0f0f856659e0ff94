"""Whole-batch im2col / col2im: the array math behind Convolution (and Deconvolution).

A convolution becomes one matrix product once every receptive field is copied out
as a column ("im2col"). Caffe does this one image at a time; here the whole batch
is unfolded at once (in chunks only when the column buffer would be huge), with a
strided *view* of the zero-padded input, so the copy is a single array assignment
and the product is one BLAS call per group.

Two memory layouts are supported, because the cost of the copy is dominated by the
length of its innermost contiguous run:

* ``BATCH_FIRST``: columns ``(n, C, kh, kw, oh, ow)``. The product writes the top
  directly in its own ``(n, O, oh*ow)`` layout; the copy's runs are ``ow`` long.
  Best when the output plane is large compared to the kernel (LeNet's conv1).
* ``BATCH_LAST``: the padded input is kept as ``(C, H, W, n)`` and the columns as
  ``(C, kh, kw, oh, ow, n)``, so copies and the col2im sums run over ``ow * n``
  contiguous values; the price is transposing the input and the top. Best when
  the output plane is small and the kernel large (LeNet's conv2: 3x faster col2im).

Everything here is pure array math on the arrays it is given (numpy or CuPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from caffelite import backend

BATCH_FIRST = "batch_first"
BATCH_LAST = "batch_last"

#: Largest column buffer (in elements) built at once; bigger batches are unfolded in
#: chunks of images, so memory stays bounded for big images (Caffe: one image at a time).
MAX_COL_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, pad and dilation of a 2-D sliding window, as (h, w) pairs."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def extent(self) -> tuple[int, int]:
        """Span of one dilated window in input pixels."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def is_pointwise(self) -> bool:
        """1x1 kernel, stride 1, no pad: the columns are the input itself."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """Convolution output size (floor), ``(in + 2*pad - extent) // stride + 1``."""
        return (
            conv_output_size(height, self.kernel[0], self.stride[0], self.pad[0], self.dilation[0]),
            conv_output_size(width, self.kernel[1], self.stride[1], self.pad[1], self.dilation[1]),
        )


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Caffe's convolution output length along one axis (may be <= 0 if too small)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def deconv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """The inverse: the input length a convolution would need to produce ``size``."""
    extent = dilation * (kernel - 1) + 1
    return stride * (size - 1) + extent - 2 * pad


def choose_layout(geometry: Geometry, kernel_dim: int, out_spatial: int) -> str:
    """Pick the faster layout (measured on LeNet and CIFAR-10 shapes, see module doc).

    Batch-last wins when a group's kernel volume exceeds the output plane: the
    batch-first copies then run over short rows and its weight gradient needs a
    large per-image intermediate. Pointwise kernels need no copy in batch-first.
    """
    if geometry.is_pointwise:
        return BATCH_FIRST
    return BATCH_LAST if kernel_dim > out_spatial else BATCH_FIRST


def batch_chunks(num: int, per_image: int, limit: int | None = None) -> list[tuple[int, int]]:
    """Split ``range(num)`` into near-equal chunks whose columns hold <= ``limit`` values
    (default :data:`MAX_COL_ELEMENTS`); a single image is never split."""
    if limit is None:
        limit = MAX_COL_ELEMENTS
    if num == 0:
        return [(0, 0)]
    per_chunk = max(1, limit // max(per_image, 1))
    count = math.ceil(num / per_chunk)
    size = math.ceil(num / count)
    return [(start, min(start + size, num)) for start in range(0, num, size)]


# ---- layouts -------------------------------------------------------------------------
def padded_shape(
    layout: str, num: int, channels: int, height: int, width: int, geometry: Geometry
) -> tuple[int, ...]:
    """Shape of the zero-padded copy of a ``(num, C, H, W)`` batch in ``layout``."""
    ph, pw = geometry.pad
    if layout == BATCH_FIRST:
        return (num, channels, height + 2 * ph, width + 2 * pw)
    return (channels, height + 2 * ph, width + 2 * pw, num)


def col_shape(
    layout: str, num: int, channels: int, out_hw: tuple[int, int], geometry: Geometry
) -> tuple[int, ...]:
    kh, kw = geometry.kernel
    oh, ow = out_hw
    if layout == BATCH_FIRST:
        return (num, channels, kh, kw, oh, ow)
    return (channels, kh, kw, oh, ow, num)


def interior(padded, layout: str, geometry: Geometry, height: int, width: int):
    """The view of a padded buffer that holds the image itself."""
    ph, pw = geometry.pad
    if layout == BATCH_FIRST:
        return padded[:, :, ph : ph + height, pw : pw + width]
    return padded[:, ph : ph + height, pw : pw + width, :]


def to_layout(x, layout: str):
    """A ``(n, C, H, W)`` array viewed in ``layout``'s axis order (no copy)."""
    return x if layout == BATCH_FIRST else x.transpose(1, 2, 3, 0)


def window_view(padded, layout: str, geometry: Geometry, out_hw: tuple[int, int]):
    """A strided view (never written) of every window of ``padded``, shaped like the columns."""
    xp = backend.get_array_module(padded)
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    oh, ow = out_hw
    if layout == BATCH_FIRST:
        n, c = padded.shape[:2]
        s_n, s_c, s_h, s_w = padded.strides
        shape = (n, c, kh, kw, oh, ow)
        strides = (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw)
    else:
        c, n = padded.shape[0], padded.shape[3]
        s_c, s_h, s_w, s_n = padded.strides
        shape = (c, kh, kw, oh, ow, n)
        strides = (s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw, s_n)
    return xp.lib.stride_tricks.as_strided(padded, shape=shape, strides=strides)


def im2col(x, layout: str, geometry: Geometry, out_hw: tuple[int, int], col, padded=None):
    """Unfold a ``(n, C, H, W)`` batch into ``col`` (shape from :func:`col_shape`).

    ``padded`` is a scratch buffer of :func:`padded_shape` whose border is zero and
    stays zero (only its interior is written); it may be None for batch-first with
    no padding, where the windows are taken from ``x`` directly.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    if padded is None:
        if layout != BATCH_FIRST or geometry.pad != (0, 0):
            raise ValueError("im2col needs a padded buffer for this layout/padding")
        source = x
    else:
        xp.copyto(interior(padded, layout, geometry, h, w), to_layout(x, layout))
        source = padded
    xp.copyto(col, window_view(source, layout, geometry, out_hw))
    return col


def col2im(col, layout: str, geometry: Geometry, out_hw: tuple[int, int], dx, padded=None):
    """Sum the columns back onto the ``(n, C, H, W)`` array ``dx`` (overwritten).

    The adjoint of :func:`im2col`: one strided add per kernel offset (kh*kw adds,
    each over the whole batch). ``padded`` is a scratch accumulator of
    :func:`padded_shape` (fully overwritten); it may be None for batch-first with
    no padding, where the sums go straight into ``dx``.
    """
    xp = backend.get_array_module(col)
    n, c, h, w = dx.shape
    kh, kw = geometry.kernel
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    oh, ow = out_hw
    if padded is None:
        if layout != BATCH_FIRST or geometry.pad != (0, 0):
            raise ValueError("col2im needs a padded buffer for this layout/padding")
        target = dx
    else:
        target = padded
    target[...] = 0
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            if layout == BATCH_FIRST:
                view = target[:, :, rows, cols]
                view += col[:, :, i, j]
            else:
                view = target[:, rows, cols, :]
                view += col[:, i, j]
    if padded is not None:
        xp.copyto(dx, _from_layout(interior(padded, layout, geometry, h, w), layout))
    return dx


def _from_layout(array, layout: str):
    return array if layout == BATCH_FIRST else array.transpose(3, 0, 1, 2)


# ---- scratch memory ------------------------------------------------------------------
#: Scratch buffers shared by every layer of every net in the process, by (name, dtype).
_SHARED_SCRATCH: dict[tuple[str, str], object] = {}


class Workspace:
    """Named work arrays kept between iterations so steady-state passes allocate nothing.

    ``array`` hands out views of a flat buffer that only grows (contents undefined);
    ``constant`` hands out one buffer per exact shape, filled with ``value`` when
    created; callers keep the parts they rely on (a padding border) untouched.
    ``scratch`` is like ``array`` but the buffer is shared by all layers (layers run
    one at a time): only for values used within a single forward or backward call.
    A train and a test net then share their largest buffers instead of each keeping
    its own. ``clear`` drops the layer's own buffers, for when the geometry changes.
    """

    def __init__(self):
        self._flat: dict[str, object] = {}
        self._constant: dict[tuple, object] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype):
        return _grow(self._flat, name, shape, dtype)

    def scratch(self, name: str, shape: tuple[int, ...], dtype):
        return _grow(_SHARED_SCRATCH, (name, numpy.dtype(dtype).str), shape, dtype)

    def constant(self, name: str, shape: tuple[int, ...], dtype, value: float = 0.0):
        key = (name, tuple(shape), str(dtype), value)
        buf = self._constant.get(key)
        if buf is None:
            buf = backend.xp().full(shape, value, dtype=dtype)
            self._constant[key] = buf
        return buf

    def clear(self) -> None:
        self._flat.clear()
        self._constant.clear()


def _grow(buffers: dict, key, shape: tuple[int, ...], dtype):
    """A view of ``shape`` on the flat buffer ``buffers[key]``, enlarged when too small."""
    size = math.prod(shape)
    buf = buffers.get(key)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = backend.xp().empty(max(size, 1), dtype=dtype)
        buffers[key] = buf
    return buf[:size].reshape(shape)
