"""The performance kernels: one function, one signature per kernel, for every device.

Layers and solvers call these functions and never a device's code by name. Each one
hands its arrays to the implementation for the device that holds them:
:mod:`caffelite.kernels.cpu` (numba, compiled on first use and cached on disk) for
numpy arrays, and its CUDA twin with the same function names in ``kernels/cuda.py``
for CuPy arrays, chosen in :func:`implementation`, so no layer names a device
(Caffe's ``im2col.cpp`` beside ``im2col.cu``).

Conventions shared by all kernels:

* arrays are C-contiguous; outputs are passed in and fully overwritten unless the
  docstring says "accumulates";
* any float dtype the arrays share works (float32 for nets, float64 for the
  gradient checks, which therefore run through these same kernels);
* geometry is given as ``(h, w)`` pairs; images are ``(num, channels, height, width)``;
* a MAX pooling ``argmax`` is int32, Caffe's mask value ``h * width + w`` inside the
  image plane.

The CPU module (and numba) is imported on the first kernel call, not with
``caffelite``, so ``import caffelite`` stays fast.
"""

from __future__ import annotations

Pair = tuple[int, int]


def implementation(array):
    """The kernel module for the device that holds ``array``: the CPU kernels for numpy
    arrays, the CUDA twins for CuPy's, or what a test device's arrays name."""
    import numpy  # here: this package is imported before numpy (see kernels.threads)

    if isinstance(array, numpy.ndarray):
        from caffelite.kernels import cpu

        return cpu
    if type(array).__module__.startswith("cupy"):
        from caffelite.kernels import cuda

        return cuda
    kernels = getattr(array, "__caffelite_kernels__", None)
    if kernels is None:
        raise TypeError(f"no kernels for arrays of type {type(array).__qualname__}")
    return kernels


# ---- im2col / col2im ----------------------------------------------------------------
def im2col(x, col, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair, batch_last: bool):
    """Copy every receptive field of ``x`` ``(n, C, H, W)`` into ``col``, zeros in the padding.

    ``col`` is ``(n, C, kh, kw, oh, ow)``, or ``(C, kh, kw, oh, ow, n)`` when
    ``batch_last`` (see :mod:`caffelite.im2col` for why both layouts exist).
    """
    implementation(x).im2col(x, col, kernel, stride, pad, dilation, batch_last)


def col2im(col, dx, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair, batch_last: bool):
    """The adjoint of :func:`im2col`: ``dx`` ``(n, C, H, W)`` = the sum of each pixel's
    column entries (padding entries dropped)."""
    implementation(col).col2im(col, dx, kernel, stride, pad, dilation, batch_last)


# ---- pooling --------------------------------------------------------------------------
def max_pool_forward(x, y, argmax, kernel: Pair, stride: Pair, pad: Pair):
    """``y`` = the maximum of each window of ``x`` (windows clipped to the image);
    ``argmax`` its first position in row-major order (Caffe's tie rule), or None where
    no backward needs it (the maxima alone are cheaper)."""
    implementation(x).max_pool_forward(x, y, argmax, kernel, stride, pad)


def max_pool_backward(dy, argmax, dx, kernel: Pair, stride: Pair, pad: Pair):
    """``dx`` = ``dy`` routed to each window's ``argmax`` (summed where windows share it).

    The window geometry lets a device give each input pixel one thread that gathers from
    the windows that can hold it (deterministic, no atomics); the CPU scatters and needs
    none. STOCHASTIC pooling's windows are not shifted by the pad: it passes ``(0, 0)``.
    """
    implementation(dy).max_pool_backward(dy, argmax, dx, kernel, stride, pad)


def ave_pool_forward(x, y, kernel: Pair, stride: Pair, pad: Pair):
    """``y`` = each window's sum over the image, divided by the window's size clipped
    to the padded image (Caffe's AVE divisor)."""
    implementation(x).ave_pool_forward(x, y, kernel, stride, pad)


def ave_pool_backward(dy, dx, kernel: Pair, stride: Pair, pad: Pair):
    """The adjoint of :func:`ave_pool_forward`, written into ``dx``."""
    implementation(dy).ave_pool_backward(dy, dx, kernel, stride, pad)


# ---- local response normalisation ------------------------------------------------------
def lrn_across_forward(x, y, scale, size: int, alpha: float, beta: float, k: float):
    """Caffe's ACROSS_CHANNELS LRN: ``scale = k + alpha / size * sum(x^2)`` over the
    ``size`` channels centred on each one (zeros past the ends), ``y = x * scale^-beta``;
    ``scale`` is kept for backward."""
    implementation(x).lrn_across_forward(x, y, scale, size, alpha, beta, k)


def lrn_across_backward(x, y, dy, dx, scale, size: int, alpha: float, beta: float):
    """``dx = dy * scale^-beta - 2 alpha beta / size * x * window_sum(dy * y / scale)``."""
    implementation(x).lrn_across_backward(x, y, dy, dx, scale, size, alpha, beta)


# ---- GEMM ---------------------------------------------------------------------------------
def matmul_accumulate(a, b, out):
    """``out += a @ b`` with ``beta = 1``, as Caffe accumulates parameter gradients.

    Accumulates. ``a`` (m, k) and ``b`` (k, n) may be transposed views of C-contiguous
    arrays; ``out`` (m, n) is C-contiguous and overlaps neither. One GEMM reads and
    writes ``out`` once, where matmul and add would go through a temporary of its size.
    """
    implementation(out).matmul_accumulate(a, b, out)


# ---- layout --------------------------------------------------------------------------------
def batch_last_to_first(src, dst, bias=None):
    """``dst`` ``(n, C, P)`` = ``src`` ``(C, P, n)`` transposed, plus ``bias[c]`` where
    given: a batch-last convolution's GEMM product (channels, pixels, images) written
    to the top with its bias in one pass."""
    implementation(src).batch_last_to_first(src, dst, bias)


# ---- Winograd convolution F(4x4, 3x3) ----------------------------------------------------
# A 3x3 stride-1 convolution computed on 6x6 input tiles that overlap by 2: each tile's
# 4x4 outputs take 36 multiplications per channel pair instead of 144 (see
# caffelite.winograd, which also transforms the filters and runs the 36 GEMMs between
# these two kernels). Tile t of image b is ``t = (b * tiles_h + i) * tiles_w + j``, its
# input window starts at ``(4 i - pad_h, 4 j - pad_w)``.
def winograd_input(x, v, pad: Pair, tiles: Pair):
    """``v`` ``(36, C, n * tiles_h * tiles_w)`` = ``B^T d B`` of each 6x6 input tile
    ``d`` of ``x`` ``(n, C, H, W)``, zeros outside the image; entry ``6 r + c`` of the
    transformed tile at ``v[6 r + c]``."""
    implementation(x).winograd_input(x, v, pad, tiles)


def winograd_output(m, y, scale=None, shift=None, relu: bool = False, negative_slope: float = 0.0):
    """``y`` ``(n, K, OH, OW)`` = ``A^T M A`` of each tile's 6x6 product ``M`` in ``m``
    ``(36, K, n * tiles)``, cropped to the image where the last tiles overhang it, then
    ``* scale[k] + shift[k]`` (each where given: a bias is a shift) and, if ``relu``,
    Caffe's (leaky) ReLU: a folded epilogue (see :func:`channel_affine`) in the same pass."""
    implementation(m).winograd_output(m, y, scale, shift, relu, negative_slope)


# ---- elementwise -------------------------------------------------------------------------
def channel_affine(y, scale, shift, relu: bool, negative_slope: float):
    """In place on ``y`` ``(n, C, ...)``: ``y = y * scale[c] + shift[c]``, then, if
    ``relu``, Caffe's (leaky) ReLU: one pass for a folded Convolution's epilogue."""
    implementation(y).channel_affine(y, scale, shift, relu, negative_slope)


def channel_normalize(x, y, mean, std):
    """``y = (x - mean[c]) / std[c]`` over ``x`` ``(n, C, ...)``, in Caffe's order (no
    reciprocal, so BatchNorm rounds as Caffe's does); ``y`` may be ``x``. ``mean`` None
    divides alone (BatchNorm's backward with global statistics)."""
    implementation(x).channel_normalize(x, y, mean, std)


def channel_affine_backward(x, dy, dx, scale, scale_diff, shift_diff):
    """The gradients of ``y = x * scale[c] + shift[c]`` over ``(n, C, ...)`` in one pass.

    ``dx = dy * scale[c]`` unless ``dx`` is None; ``dx`` may be ``dy`` (a Scale layer run in
    place). Overwrites ``scale_diff[c] = sum(dy * x)`` and ``shift_diff[c] = sum(dy)``
    (float64 arrays of ``C``: summed in float64 over the batch and the positions).
    """
    implementation(x).channel_affine_backward(x, dy, dx, scale, scale_diff, shift_diff)


def relu_forward(x, y, negative_slope: float):
    """Caffe's ReLU, ``y = max(x, 0) + negative_slope * min(x, 0)``; ``y`` may be ``x``.
    With a zero slope the maximum alone (so ``-inf`` gives 0, not ``0 * -inf``)."""
    implementation(x).relu_forward(x, y, negative_slope)


def relu_backward(x, dy, dx, negative_slope: float):
    """``dx = dy * ((x > 0) + negative_slope * (x <= 0))``, Caffe's factor (0 where ``x``
    is NaN); ``dx`` may be ``dy``."""
    implementation(x).relu_backward(x, dy, dx, negative_slope)


# ---- BatchNorm -> Scale -> ReLU, in place (caffelite.chains) ------------------------------
def normalize_scale_forward(y, saved, mean, std, scale, shift, relu: bool, negative_slope: float):
    """In place on ``y`` ``(n, C, ...)``, the three layers' forwards in one pass:
    ``saved = (y - mean[c]) / std[c]`` (what Scale keeps for its gradient), then ``y =
    saved * scale[c] + shift[c]`` (``shift`` None: no add), then, if ``relu``, Caffe's
    (leaky) ReLU; each rounded as :func:`channel_normalize`, :func:`channel_affine` and
    :func:`relu_forward` round it."""
    implementation(y).normalize_scale_forward(
        y, saved, mean, std, scale, shift, relu, negative_slope
    )


def normalize_scale_backward(
    y, saved, d, std, scale, relu: bool, negative_slope: float, scale_diff, shift_diff
):
    """In place on ``d`` ``(n, C, ...)``, the gradient back through the three layers:
    ``g = d * relu'(y)`` (``y`` the chain's output; ``d`` alone without ``relu``), then
    ``d = g * scale[c] / std[c]``; overwrites ``scale_diff[c] = sum(g * saved)`` and
    ``shift_diff[c] = sum(g)`` (float64, as :func:`channel_affine_backward`)."""
    implementation(y).normalize_scale_backward(
        y, saved, d, std, scale, relu, negative_slope, scale_diff, shift_diff
    )


# ---- N-d im2col / col2im ------------------------------------------------------------------
# Convolution with 1, 3 or more spatial axes (and 2-D under Caffe's force_nd_im2col). The
# geometry tuples have one entry per spatial axis; the column layouts are im2col's with the
# one kernel-cell axis and output axis per spatial axis.
Shape = tuple[int, ...]


def im2col_nd(x, col, kernel: Shape, stride: Shape, pad: Shape, dilation: Shape, batch_last: bool):
    """:func:`im2col` over any number of spatial axes (Caffe's ``im2col_nd_cpu``).

    ``x`` is ``(n, C, *spatial)``; ``col`` is ``(n, C, *kernel, *out)``, or
    ``(C, *kernel, *out, n)`` when ``batch_last``.
    """
    implementation(x).im2col_nd(x, col, kernel, stride, pad, dilation, batch_last)


def col2im_nd(col, dx, kernel: Shape, stride: Shape, pad: Shape, dilation: Shape, batch_last: bool):
    """The adjoint of :func:`im2col_nd`: ``dx`` ``(n, C, *spatial)`` = the sum of each
    pixel's column entries (padding entries dropped)."""
    implementation(col).col2im_nd(col, dx, kernel, stride, pad, dilation, batch_last)


# ---- stochastic pooling (Caffe's StoPoolForwardTrain / StoPoolForwardTest) --------------
FLT_MIN = 1.1754943508222875e-38  # float32's smallest normal: Caffe's TEST denominator start


# As in Caffe's GPU kernels, a window starts at ``p * stride`` and is clipped to the image:
# padding does not shift it. The inputs are meant to be non-negative (after a ReLU).
def stochastic_pool_forward_train(x, y, uniforms, sampled, kernel: Pair, stride: Pair):
    """``y`` = one element of each window, drawn with probability ``x / window_sum``: the
    first (row-major) whose running sum reaches ``uniforms * window_sum``; ``sampled`` (int32)
    its position ``h * width + w``, as MAX's ``argmax``, so :func:`max_pool_backward`
    routes the gradient. ``uniforms`` (shaped like ``y``, values in (0, 1]) are drawn by
    the caller from :mod:`caffelite.rng`, which keeps the kernel deterministic. Where
    the threshold is never reached (only with negative inputs) the window's last element
    is taken."""
    implementation(x).stochastic_pool_forward_train(x, y, uniforms, sampled, kernel, stride)


def stochastic_pool_forward_test(x, y, kernel: Pair, stride: Pair):
    """``y`` = ``sum(x^2) / (FLT_MIN + sum(x))`` over each window: the expectation of the
    TRAIN draw (0 for an all-zero window; Caffe's FLT_MIN start avoids dividing by 0)."""
    implementation(x).stochastic_pool_forward_test(x, y, kernel, stride)
