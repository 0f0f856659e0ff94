"""Whole-batch im2col / col2im: the array math behind Convolution (and Deconvolution).

A convolution becomes one matrix product once every receptive field is copied out
as a column ("im2col"). Caffe does this one image at a time; here the whole batch
is unfolded at once (in chunks only when the column buffer would be huge) by one
kernel of :mod:`caffelite.kernels`, so the product is one BLAS call per group.

Two column layouts are supported, because they give the GEMMs different shapes:

* ``BATCH_FIRST``: columns ``(n, C, *kernel, *out)`` (``(n, C, kh, kw, oh, ow)`` in
  2-D). The product writes the top directly in its own ``(n, O, prod(out))`` layout,
  as one small GEMM per image. Best when the output is large compared to the kernel
  (LeNet's conv1).
* ``BATCH_LAST``: columns ``(C, *kernel, *out, n)``: one large GEMM for the whole
  batch, and the weight gradient needs no per-image intermediate; the price is
  transposing the top. Best when the output is small and the kernel large
  (LeNet's conv2).

Any number of spatial axes works: 2-D runs the specialised 2-D kernels, every other
count (or 2-D with Caffe's ``force_nd_im2col``) the N-d ones, as Caffe's
``im2col_cpu`` / ``im2col_nd_cpu``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from caffelite import backend, kernels, limits

BATCH_FIRST = "batch_first"
BATCH_LAST = "batch_last"

#: Largest column buffer (in elements) built at once; bigger batches are unfolded in
#: chunks of images, so memory stays bounded for big images (Caffe: one image at a time).
MAX_COL_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, pad and dilation of an N-d sliding window, one value per spatial
    axis; stride, pad and dilation default to 1, 0 and 1 on every axis."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...] | None = None
    pad: tuple[int, ...] | None = None
    dilation: tuple[int, ...] | None = None

    def __post_init__(self):
        axes = len(self.kernel)
        object.__setattr__(self, "kernel", tuple(self.kernel))
        for name, default in (("stride", 1), ("pad", 0), ("dilation", 1)):
            value = getattr(self, name)
            value = (default,) * axes if value is None else tuple(value)
            if len(value) != axes:
                raise ValueError(f"{name} {value} needs one value per kernel axis {self.kernel}")
            object.__setattr__(self, name, value)

    @property
    def num_axes(self) -> int:
        return len(self.kernel)

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of one dilated window in input pixels."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def is_pointwise(self) -> bool:
        """1x1 kernel, stride 1, no pad: the columns are the input itself."""
        return all(k == 1 for k in self.kernel + self.stride) and not any(self.pad)

    def output_shape(self, *sizes: int) -> tuple[int, ...]:
        """Convolution output size (floor), ``(in + 2*pad - extent) // stride + 1``."""
        return tuple(
            conv_output_size(*axis)
            for axis in zip(sizes, self.kernel, self.stride, self.pad, self.dilation, strict=True)
        )


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Caffe's convolution output length along one axis (may be <= 0 if too small)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def deconv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """The inverse: the input length a convolution would need to produce ``size``."""
    extent = dilation * (kernel - 1) + 1
    return stride * (size - 1) + extent - 2 * pad


def choose_layout(geometry: Geometry, kernel_dim: int, out_spatial: int, num: int) -> str:
    """Pick the faster layout (measured on LeNet and CIFAR-10 shapes, see module doc).

    Batch-last wins when a group's kernel volume exceeds the output plane: the
    batch-first copies then run over short rows and its weight gradient needs a
    large per-image intermediate. Pointwise kernels need no copy in batch-first. For
    one image (``num``) the two layouts are the same array, and batch-first skips
    batch-last's transposes (a 3x3 layer of ResNet-50 or GoogLeNet: 1.2-2x faster).
    """
    if geometry.is_pointwise or num == 1:
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
def col_shape(
    layout: str, num: int, channels: int, out_shape: tuple[int, ...], geometry: Geometry
) -> tuple[int, ...]:
    if layout == BATCH_FIRST:
        return (num, channels, *geometry.kernel, *out_shape)
    return (channels, *geometry.kernel, *out_shape, num)


def _kernel_pair(geometry: Geometry, force_nd: bool):
    """The 2-D kernels for 2-D windows, the N-d ones otherwise (or when forced)."""
    if geometry.num_axes == 2 and not force_nd:
        return kernels.im2col, kernels.col2im
    return kernels.im2col_nd, kernels.col2im_nd


def im2col(x, layout: str, geometry: Geometry, col, force_nd: bool = False):
    """Unfold a ``(n, C, *spatial)`` batch into ``col`` (shape from :func:`col_shape`);
    window cells in the padding are zero. ``force_nd``: Caffe's ``force_nd_im2col``."""
    g = geometry
    unfold, _ = _kernel_pair(g, force_nd)
    unfold(x, col, g.kernel, g.stride, g.pad, g.dilation, layout == BATCH_LAST)
    return col


def col2im(col, layout: str, geometry: Geometry, dx, force_nd: bool = False):
    """Sum the columns back onto the ``(n, C, *spatial)`` array ``dx`` (overwritten):
    the adjoint of :func:`im2col`."""
    g = geometry
    _, fold = _kernel_pair(g, force_nd)
    fold(col, dx, g.kernel, g.stride, g.pad, g.dilation, layout == BATCH_LAST)
    return dx


# ---- scratch memory ------------------------------------------------------------------
#: Scratch buffers shared by every layer of every net in the process, by (name, dtype,
#: array module).
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
        key = (name, numpy.dtype(dtype).str, backend.xp().__name__)  # one per device
        return _grow(_SHARED_SCRATCH, key, shape, dtype)

    def constant(self, name: str, shape: tuple[int, ...], dtype, value: float = 0.0):
        key = (name, tuple(shape), str(dtype), value)
        buf = self._constant.get(key)
        if buf is None:
            limits.check_allocation(shape, numpy.dtype(dtype).itemsize, f"work array {name!r}")
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
        label = key[0] if isinstance(key, tuple) else key
        limits.check_allocation(shape, numpy.dtype(dtype).itemsize, f"work array {label!r}")
        buf = backend.xp().empty(max(size, 1), dtype=dtype)
        buffers[key] = buf
    return buf[:size].reshape(shape)
