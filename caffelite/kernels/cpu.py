"""The CPU kernels: numba-compiled loops, one pass over memory each, parallel over planes.

Each public function has the signature documented in :mod:`caffelite.kernels`; the
``_``-prefixed functions are the compiled loops. They are compiled for each dtype on
first use and cached on disk (``cache=True``: later processes load the machine code
instead of compiling). Work is split over image planes (or channels) with ``prange``,
on as many threads as BLAS uses, or on the calling thread alone for small arrays, where
waking the others costs more than they save (:mod:`caffelite.kernels.threads`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from caffelite.kernels import FLT_MIN, blas
from caffelite.kernels.threads import configure_threads, parallel_when_large

configure_threads()

_compile = njit(cache=True, parallel=True, nogil=True, error_model="numpy")


def _jit(function):
    """A compiled parallel loop, launched by :func:`parallel_when_large`."""
    return parallel_when_large(_compile(function))


_inline = njit(inline="always")


# ---- im2col / col2im ----------------------------------------------------------------
def im2col(x, col, kernel, stride, pad, dilation, batch_last):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    loop = _im2col_batch_last if batch_last else _im2col_batch_first
    loop(x, col, kh, kw, sh, sw, ph, pw, dh, dw)


def col2im(col, dx, kernel, stride, pad, dilation, batch_last):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    loop = _col2im_batch_last if batch_last else _col2im_batch_first
    loop(col, dx, kh, kw, sh, sw, ph, pw, dh, dw)


@_jit
def _im2col_batch_first(x, col, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = x.shape
    oh, ow = col.shape[4], col.shape[5]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for i in range(kh):
            for j in range(kw):
                for y in range(oh):
                    r = y * sh - ph + i * dh
                    row_inside = 0 <= r < h
                    for z in range(ow):
                        q = z * sw - pw + j * dw
                        if row_inside and 0 <= q < w:
                            col[b, ch, i, j, y, z] = x[b, ch, r, q]
                        else:
                            col[b, ch, i, j, y, z] = 0


@_jit
def _im2col_batch_last(x, col, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = x.shape
    oh, ow = col.shape[3], col.shape[4]
    for task in prange(c * kh):
        ch, i = task // kh, task % kh
        plane = _batch_innermost(x, ch)
        for j in range(kw):
            for y in range(oh):
                r = y * sh - ph + i * dh
                for z in range(ow):
                    q = z * sw - pw + j * dw
                    if 0 <= r < h and 0 <= q < w:
                        for b in range(n):
                            col[ch, i, j, y, z, b] = plane[r, q, b]
                    else:
                        for b in range(n):
                            col[ch, i, j, y, z, b] = 0


@_inline
def _batch_innermost(x, ch):
    """Channel ``ch`` of every image as ``(h, w, n)``: the batch-last loops then read and
    write runs of ``n`` contiguous values instead of gathering one value per image. On
    CaffeNet's conv2 at batch 8 (2 threads) that took im2col from 13.1 to 7.2 ms, and the
    same local plane took col2im from 13.7 to 7.4 ms."""
    n, _, h, w = x.shape
    plane = np.empty((h, w, n), x.dtype)
    for b in range(n):
        for r in range(h):
            for q in range(w):
                plane[r, q, b] = x[b, ch, r, q]
    return plane


@_jit
def _col2im_batch_first(col, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = dx.shape
    oh, ow = col.shape[4], col.shape[5]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        dx[b, ch] = 0
        for i in range(kh):
            for j in range(kw):
                for y in range(oh):
                    r = y * sh - ph + i * dh
                    if 0 <= r < h:
                        for z in range(ow):
                            q = z * sw - pw + j * dw
                            if 0 <= q < w:
                                dx[b, ch, r, q] += col[b, ch, i, j, y, z]


@_jit
def _col2im_batch_last(col, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = dx.shape
    oh, ow = col.shape[3], col.shape[4]
    for ch in prange(c):
        plane = np.zeros((h, w, n), dx.dtype)  # the sums, batch innermost as in col
        for i in range(kh):
            for j in range(kw):
                for y in range(oh):
                    r = y * sh - ph + i * dh
                    if 0 <= r < h:
                        for z in range(ow):
                            q = z * sw - pw + j * dw
                            if 0 <= q < w:
                                for b in range(n):
                                    plane[r, q, b] += col[ch, i, j, y, z, b]
        for b in range(n):
            for r in range(h):
                for q in range(w):
                    dx[b, ch, r, q] = plane[r, q, b]


# ---- pooling --------------------------------------------------------------------------
def max_pool_forward(x, y, argmax, kernel, stride, pad):
    keep = argmax is not None
    if not keep:  # the loop is compiled once: it gets a stand-in that it never writes
        argmax = np.empty(y.shape[:2] + (0, 0), np.int32)
    _max_pool_forward(x, y, argmax, keep, *kernel, *stride, *pad)


def max_pool_backward(dy, argmax, dx, kernel, stride, pad):
    _max_pool_backward(dy, argmax, dx)  # scatters through argmax: no geometry needed


def ave_pool_forward(x, y, kernel, stride, pad):
    _ave_pool_forward(x, y, *kernel, *stride, *pad)


def ave_pool_backward(dy, dx, kernel, stride, pad):
    _ave_pool_backward(dy, dx, *kernel, *stride, *pad)


@_jit
def _max_pool_forward(x, y, argmax, keep, kh, kw, sh, sw, ph, pw):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    x_planes, y_planes = x.reshape(n * c, h * w), y.reshape(n * c, oh * ow)
    argmax_planes = argmax.reshape(n * c, argmax.size // max(n * c, 1))
    y0, y1 = _inside(h, kh, sh, ph, oh)
    x0, x1 = _inside(w, kw, sw, pw, ow)
    for plane in prange(n * c):
        xs, ys, am = x_planes[plane], y_planes[plane], argmax_planes[plane]
        # Windows inside the image, in tight loops for the common sizes (straight-line
        # code with no clipping is several times faster than the general loop), each
        # common stride a constant of its own loop ...
        square = kh == kw and sh == sw and (kh == 2 or kh == 3)
        # ... and, without an argmax, the clipped ones by index clamping (with one,
        # clamping took 1.4x the general loop's time on GoogLeNet's 512x14x14 pools at
        # batch 8) ...
        clamped = square and not keep
        if square:
            xp, yp = x[plane // c, plane % c], y[plane // c, plane % c]
            ap = argmax[plane // c, plane % c]
            if kh == 2 and sh == 2:
                _square_windows(xp, yp, ap, keep, y0, y1, x0, x1, ph, pw, 2, 2)
                if clamped:
                    _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, 2, 2)
            elif kh == 3 and sh == 1:
                _square_windows(xp, yp, ap, keep, y0, y1, x0, x1, ph, pw, 3, 1)
                if clamped:
                    _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, 3, 1)
            elif kh == 3 and sh == 2:
                _square_windows(xp, yp, ap, keep, y0, y1, x0, x1, ph, pw, 3, 2)
                if clamped:
                    _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, 3, 2)
            elif kh == 2:
                _square_windows(xp, yp, ap, keep, y0, y1, x0, x1, ph, pw, 2, sh)
                if clamped:
                    _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, 2, sh)
            else:
                _square_windows(xp, yp, ap, keep, y0, y1, x0, x1, ph, pw, 3, sh)
                if clamped:
                    _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, 3, sh)
        else:
            for py in range(y0, y1):
                for px in range(x0, x1):
                    _max_window(xs, ys, am, keep, py, px, h, w, ow, kh, kw, sh, sw, ph, pw)
        if not clamped:
            # ... then the windows that padding or ceil rounding clip, one by one: whole
            # rows above and below, the ends of the rows between.
            for py in range(oh):
                inside_row = y0 <= py < y1
                for px in range(x0 if inside_row else ow):
                    _max_window(xs, ys, am, keep, py, px, h, w, ow, kh, kw, sh, sw, ph, pw)
                for px in range(x1 if inside_row else ow, ow):
                    _max_window(xs, ys, am, keep, py, px, h, w, ow, kh, kw, sh, sw, ph, pw)


@_inline
def _inside(size, kernel, stride, pad, pooled):
    """The outputs ``[lo, hi)`` along one axis whose windows lie wholly in the image."""
    lo = min((pad + stride - 1) // stride, pooled)
    hi = max(min((size - kernel + pad) // stride + 1, pooled), lo)
    return lo, hi


@_inline
def _take(value, k, best, where):
    """Caffe's tie rule: a later element replaces the maximum only when strictly greater.

    Written as two selects, not a branch, which compiles to faster window loops (with
    the border walk below: LeNet's pool1 on real data 1.3x faster)."""
    greater = value > best
    return (value if greater else best), (k if greater else where)


@_inline
def _put(ys, am, keep, o, best, where):
    """Store one window's maximum, and its position where an argmax is kept."""
    ys[o] = best
    if keep:
        am[o] = where


@_inline
def _clamped_border(xs, ys, y0, y1, x0, x1, h, w, oh, ow, ph, pw, k, stride):
    """The maxima of one plane's clipped windows (the general loop's walk), each by
    :func:`_clamped_maximum`."""
    for py in range(oh):
        inside_row = y0 <= py < y1
        for px in range(x0 if inside_row else ow):
            ys[py * ow + px] = _clamped_maximum(xs, py, px, h, w, k, stride, ph, pw)
        for px in range(x1 if inside_row else ow, ow):
            ys[py * ow + px] = _clamped_maximum(xs, py, px, h, w, k, stride, ph, pw)


@_inline
def _clamped_maximum(xs, py, px, h, w, k, stride, ph, pw):
    """The maximum of one ``k`` x ``k`` window (``k`` 2 or 3) that padding or ceil rounding
    clips, as the ``k * k`` selects of an unclipped window with each row and column index
    clamped into the image. A clamped index repeats the element just before or after it
    in the scan, or a row already scanned; under the strict ``>`` of the tie rule a
    repeat never wins, so the result is the clipped window's, NaN included. Straight-line
    code: GoogLeNet's 3x3 pad-1 pools (a quarter to a half of their windows clipped) took
    0.70-0.80x the time of the general loop (512x14x14, 832x7x7; batch 1 and 8)."""
    r, q = stride * py - ph, stride * px - pw
    a, b, c = _clamp(r, h) * w, _clamp(r + 1, h) * w, _clamp(r + k - 1, h) * w  # row starts
    q0, q1, q2 = _clamp(q, w), _clamp(q + 1, w), _clamp(q + k - 1, w)
    best = xs[a + q0]
    best = _larger(xs[a + q1], best)
    if k == 3:
        best = _larger(xs[a + q2], best)
    best = _larger(xs[b + q0], best)
    best = _larger(xs[b + q1], best)
    if k == 3:
        best = _larger(xs[b + q2], best)
        best = _larger(xs[c + q0], best)
        best = _larger(xs[c + q1], best)
        best = _larger(xs[c + q2], best)
    return best


@_inline
def _clamp(index, size):
    return min(max(index, 0), size - 1)


@_inline
def _larger(value, best):
    """:func:`_take` without the position."""
    return value if value > best else best


@_inline
def _max_window(xs, ys, am, keep, py, px, h, w, ow, kh, kw, sh, sw, ph, pw):
    """One window of any size, clipped to the image."""
    r0, r1 = max(py * sh - ph, 0), min(py * sh - ph + kh, h)
    q0, q1 = max(px * sw - pw, 0), min(px * sw - pw + kw, w)
    where = r0 * w + q0
    best = xs[where]
    for r in range(r0, r1):
        for q in range(q0, q1):
            best, where = _take(xs[r * w + q], r * w + q, best, where)
    _put(ys, am, keep, py * ow + px, best, where)


@_inline
def _square_windows(x, y, argmax, keep, y0, y1, x0, x1, ph, pw, k, stride):
    """One plane's ``k`` x ``k`` windows (``k`` 2 or 3) inside the image, each row taken
    as an array of its own and the indices known to be >= 0 (no wraparound test). Called
    with ``k`` and the stride as constants (LeNet's and VGG-16's 2x2 stride 2, GoogLeNet's
    3x3 at strides 1 and 2), the loops compile to vector code: VGG-16's pool1 at batch 8,
    17.2 -> 6.1 ms (maxima alone) and 20.4 -> 9.1 ms (with the argmax); GoogLeNet's
    inception pools (480x14x14) at batch 8, 3.0 -> 1.6 and 3.6 -> 2.2 ms."""
    w = x.shape[1]
    first = stride * x0 - pw
    last_row = k - 1
    if keep:
        for py in range(y0, y1):
            r = stride * py - ph
            a, b, c = x[r, first:], x[r + 1, first:], x[r + last_row, first:]
            out, at = y[py, x0:], argmax[py, x0:]
            for j in range(x1 - x0):
                q = stride * j
                start = r * w + first + q
                best, where = _take(a[q + 1], start + 1, a[q], start)
                if k == 3:
                    best, where = _take(a[q + 2], start + 2, best, where)
                start += w
                best, where = _take(b[q], start, best, where)
                best, where = _take(b[q + 1], start + 1, best, where)
                if k == 3:
                    best, where = _take(b[q + 2], start + 2, best, where)
                    start += w
                    best, where = _take(c[q], start, best, where)
                    best, where = _take(c[q + 1], start + 1, best, where)
                    best, where = _take(c[q + 2], start + 2, best, where)
                out[j], at[j] = best, where
        return
    for py in range(y0, y1):  # the same selects, in the same order, without the positions
        r = stride * py - ph
        a, b, c = x[r, first:], x[r + 1, first:], x[r + last_row, first:]
        out = y[py, x0:]
        for j in range(x1 - x0):
            q = stride * j
            best = a[q]
            best = a[q + 1] if a[q + 1] > best else best
            if k == 3:
                best = a[q + 2] if a[q + 2] > best else best
            best = b[q] if b[q] > best else best
            best = b[q + 1] if b[q + 1] > best else best
            if k == 3:
                best = b[q + 2] if b[q + 2] > best else best
                best = c[q] if c[q] > best else best
                best = c[q + 1] if c[q + 1] > best else best
                best = c[q + 2] if c[q + 2] > best else best
            out[j] = best


@_jit
def _max_pool_backward(dy, argmax, dx):
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dx_planes, dy_planes = dx.reshape(n * c, h * w), dy.reshape(n * c, oh * ow)
    argmax_planes = argmax.reshape(n * c, oh * ow)
    for plane in prange(n * c):
        ds, dys, am = dx_planes[plane], dy_planes[plane], argmax_planes[plane]
        ds[:] = 0
        for o in range(oh * ow):
            ds[am[o]] += dys[o]


@_jit
def _ave_pool_forward(x, y, kh, kw, sh, sw, ph, pw):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for py in range(oh):
            start_r = py * sh - ph
            end_r = min(start_r + kh, h + ph)
            r0, r1 = max(start_r, 0), min(end_r, h)
            for px in range(ow):
                start_q = px * sw - pw
                end_q = min(start_q + kw, w + pw)
                q0, q1 = max(start_q, 0), min(end_q, w)
                total = x[b, ch, r0, q0] * 0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        total += x[b, ch, r, q]
                y[b, ch, py, px] = total / ((end_r - start_r) * (end_q - start_q))


@_jit
def _ave_pool_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        dx[b, ch] = 0
        for py in range(oh):
            start_r = py * sh - ph
            end_r = min(start_r + kh, h + ph)
            r0, r1 = max(start_r, 0), min(end_r, h)
            for px in range(ow):
                start_q = px * sw - pw
                end_q = min(start_q + kw, w + pw)
                q0, q1 = max(start_q, 0), min(end_q, w)
                share = dy[b, ch, py, px] / ((end_r - start_r) * (end_q - start_q))
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        dx[b, ch, r, q] += share


# ---- local response normalisation ------------------------------------------------------
def lrn_across_forward(x, y, scale, size, alpha, beta, k):
    # constants in the arrays' dtype, so float32 runs float32 pow, not float64's
    real = x.dtype.type
    _lrn_across_forward(x, y, scale, size, real(alpha / size), real(beta), real(k))


def lrn_across_backward(x, y, dy, dx, scale, size, alpha, beta):
    real = x.dtype.type
    _lrn_across_backward(x, y, dy, dx, scale, size, real(2.0 * alpha * beta / size), real(beta))


@_inline
def _inverse_power(scale, beta):
    """``scale ** -beta``; for Caffe's default beta 0.75 as two square roots, which
    vectorize where a pow does not (the LRN kernels 3-7x faster)."""
    if beta == 0.75:
        root = np.sqrt(scale)
        return 1 / (root * np.sqrt(root))
    return scale**-beta


@_jit
def _lrn_across_forward(x, y, scale, size, coefficient, beta, k):
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    pad = (size - 1) // 2
    xs, ys, ss = x.reshape(n, c, pixels), y.reshape(n, c, pixels), scale.reshape(n, c, pixels)
    for plane in prange(n * c):  # planes, not images: one image uses every thread
        b, ch = plane // c, plane % c
        row = ss[b, ch]
        row[:] = 0
        for other in range(max(ch - pad, 0), min(ch + pad + 1, c)):
            source = xs[b, other]
            for p in range(pixels):
                row[p] += source[p] * source[p]
        # beta's test outside the loop, so that the 0.75 loop vectorizes
        if beta == 0.75:
            _normalise_plane(row, ys[b, ch], xs[b, ch], coefficient, 0.75, k)
        else:
            _normalise_plane(row, ys[b, ch], xs[b, ch], coefficient, beta, k)


@_inline
def _normalise_plane(scale, out, inputs, coefficient, beta, k):
    """``scale = k + coefficient * scale`` (the window sums), ``out = inputs * scale^-beta``."""
    for p in range(scale.size):
        value = k + coefficient * scale[p]
        scale[p] = value
        out[p] = inputs[p] * _inverse_power(value, beta)


@_jit
def _lrn_across_backward(x, y, dy, dx, scale, size, coefficient, beta):
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    pad = (size - 1) // 2
    xs, ys, ss = x.reshape(n, c, pixels), y.reshape(n, c, pixels), scale.reshape(n, c, pixels)
    dys, dxs = dy.reshape(n, c, pixels), dx.reshape(n, c, pixels)
    for b in prange(n):
        ratio = np.empty((c, pixels), dx.dtype)  # dy * y / scale, summed over windows below
        for ch in range(c):
            for p in range(pixels):
                ratio[ch, p] = dys[b, ch, p] * ys[b, ch, p] / ss[b, ch, p]
        for ch in range(c):
            out = dxs[b, ch]
            for p in range(pixels):
                out[p] = dys[b, ch, p] * _inverse_power(ss[b, ch, p], beta)
            for other in range(max(ch - pad, 0), min(ch + pad + 1, c)):
                for p in range(pixels):
                    out[p] -= coefficient * xs[b, ch, p] * ratio[other, p]


# ---- GEMM ---------------------------------------------------------------------------------
def matmul_accumulate(a, b, out):
    if not blas.gemm_accumulate(a, b, out):  # no CBLAS found beside numpy, or another dtype
        out += a @ b


# ---- layout --------------------------------------------------------------------------------
#: Images per task of the transpose: each task keeps one channel's rows of this many
#: images in cache while it walks the pixels (2-2.5x numpy's strided add on 2 cores).
_IMAGE_BLOCK = 16


def batch_last_to_first(src, dst, bias):
    add = bias is not None
    if not add:  # compiled once: a stand-in bias that is never read
        bias = np.zeros(1, src.dtype)
    _batch_last_to_first(src, dst, bias, add)


@_jit
def _batch_last_to_first(src, dst, bias, add):
    c, p, n = src.shape
    blocks = (n + _IMAGE_BLOCK - 1) // _IMAGE_BLOCK
    for task in prange(c * blocks):
        ch, first = task // blocks, task % blocks * _IMAGE_BLOCK
        channel, shift = src[ch], bias[ch] if add else bias[0]
        for i in range(first, min(n, first + _IMAGE_BLOCK)):
            row = dst[i, ch]
            if add:  # a copy without it keeps the sign of -0.0 as a copy does
                for q in range(p):
                    row[q] = channel[q, i] + shift
            else:
                for q in range(p):
                    row[q] = channel[q, i]


# ---- Winograd convolution F(4x4, 3x3) ----------------------------------------------------
# The transforms multiply by 2, 4 and 8 as sums (a + a): an integer or float literal would
# promote float32 arithmetic to float64 in numba.
def winograd_input(x, v, pad, tiles):
    _winograd_input(x, v, *pad, *tiles)


def winograd_output(m, y, scale, shift, relu, negative_slope):
    scaled, shifted = scale is not None, shift is not None
    stand_in = np.zeros(1, m.dtype)  # compiled once: stand-ins that are never read
    scale = scale if scaled else stand_in
    shift = shift if shifted else stand_in
    slope = y.dtype.type(negative_slope)
    _winograd_output(m, y, scale, shift, scaled, shifted, relu, slope)


@_inline
def _twice(a):
    return a + a


@_inline
def _four_times(a):
    b = a + a
    return b + b


# The six rows of B^T, one function each: the input transform runs one loop per row, so
# that each loop reads at most four arrays and writes one, which LLVM vectorises (six
# outputs per loop left it scalar: 50 ms instead of 35 on VGG-16's conv1_2 at batch 8).
@_inline
def _bt0(d0, d2, d4):
    return _four_times(d0 - d2) + (d4 - d2)


@_inline
def _bt1(d1, d2, d3, d4):
    return d3 + d4 - _four_times(d1 + d2)


@_inline
def _bt2(d1, d2, d3, d4):
    return _four_times(d1 - d2) + d4 - d3


@_inline
def _bt3(d1, d2, d3, d4):
    return (d4 - d2) - _twice(d1 - d3)


@_inline
def _bt4(d1, d2, d3, d4):
    return (d4 - d2) + _twice(d1 - d3)


@_inline
def _bt5(d1, d3, d5):
    return _four_times(d1 - d3) - d3 + d5


# The four rows of A^T, likewise: the output transform runs one loop per row over a
# plane's tile columns (_product_columns), and all four at once along a tile row.
@_inline
def _at0(m0, m1, m2, m3, m4):
    return m0 + (m1 + m2) + (m3 + m4)


@_inline
def _at1(m1, m2, m3, m4):
    return (m1 - m2) + _twice(m3 - m4)


@_inline
def _at2(m1, m2, m3, m4):
    return (m1 + m2) + _four_times(m3 + m4)


@_inline
def _at3(m1, m2, m3, m4, m5):
    return (m1 - m2) + _four_times(_twice(m3 - m4)) + m5


@_inline
def _output_transform(m0, m1, m2, m3, m4, m5):
    """``A^T m`` for one column ``m`` of a tile's product."""
    return (
        _at0(m0, m1, m2, m3, m4),
        _at1(m1, m2, m3, m4),
        _at2(m1, m2, m3, m4),
        _at3(m1, m2, m3, m4, m5),
    )


@_jit
def _winograd_input(x, v, ph, pw, th, tw):
    n, c, h, w = x.shape
    tiles = th * tw
    width = tw * 4 + 2
    zero_row = np.zeros(w, x.dtype)
    count = min(w, width - pw)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        # B^T down the six input rows of one tile row, across the padded width: the
        # columns in the padding are never written and stay zero.
        t = np.zeros((6, width), x.dtype)
        for i in range(th):
            r = i * 4 - ph
            x0 = x[b, ch, r] if 0 <= r < h else zero_row
            x1 = x[b, ch, r + 1] if 0 <= r + 1 < h else zero_row
            x2 = x[b, ch, r + 2] if 0 <= r + 2 < h else zero_row
            x3 = x[b, ch, r + 3] if 0 <= r + 3 < h else zero_row
            x4 = x[b, ch, r + 4] if 0 <= r + 4 < h else zero_row
            x5 = x[b, ch, r + 5] if 0 <= r + 5 < h else zero_row
            _input_columns(t, pw, count, x0, x1, x2, x3, x4, x5)
            first = b * tiles + i * tw
            for row in range(6):
                _input_rows(t[row], v, row * 6, ch, first, tw)


@_inline
def _input_columns(t, start, count, x0, x1, x2, x3, x4, x5):
    """``t[:, start + s]`` = B^T of the column ``x0..x5[s]``, for ``s < count``."""
    out = t[0, start : start + count]
    for s in range(count):
        out[s] = _bt0(x0[s], x2[s], x4[s])
    out = t[1, start : start + count]
    for s in range(count):
        out[s] = _bt1(x1[s], x2[s], x3[s], x4[s])
    out = t[2, start : start + count]
    for s in range(count):
        out[s] = _bt2(x1[s], x2[s], x3[s], x4[s])
    out = t[3, start : start + count]
    for s in range(count):
        out[s] = _bt3(x1[s], x2[s], x3[s], x4[s])
    out = t[4, start : start + count]
    for s in range(count):
        out[s] = _bt4(x1[s], x2[s], x3[s], x4[s])
    out = t[5, start : start + count]
    for s in range(count):
        out[s] = _bt5(x1[s], x3[s], x5[s])


@_inline
def _input_rows(row, v, entry, ch, first, tw):
    """``v[entry + l, ch, first + j]`` = B^T of ``row[4 j : 4 j + 6]`` at ``l``: one row
    of each of ``tw`` tiles, transformed, each output a contiguous run."""
    out = v[entry, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt0(row[q], row[q + 2], row[q + 4])
    out = v[entry + 1, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt1(row[q + 1], row[q + 2], row[q + 3], row[q + 4])
    out = v[entry + 2, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt2(row[q + 1], row[q + 2], row[q + 3], row[q + 4])
    out = v[entry + 3, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt3(row[q + 1], row[q + 2], row[q + 3], row[q + 4])
    out = v[entry + 4, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt4(row[q + 1], row[q + 2], row[q + 3], row[q + 4])
    out = v[entry + 5, ch, first : first + tw]
    for j in range(tw):
        q = 4 * j
        out[j] = _bt5(row[q + 1], row[q + 3], row[q + 5])


@_jit
def _winograd_output(m, y, scale, shift, scaled, shifted, relu, slope):
    n, k, oh, ow = y.shape
    th, tw = (oh + 3) // 4, (ow + 3) // 4
    tiles = th * tw
    for plane in prange(n * k):
        b, ch = plane // k, plane % k
        a, c = scale[ch] if scaled else scale[0], shift[ch] if shifted else shift[0]
        # A^T down each column of every tile of the plane, (column, row, tile): six runs
        # of m read at a time, one loop per output row, vectorised (reading all 36 at
        # once, tile row by tile row, took VGG-16's conv1_2 at batch 8 39 ms, not 27).
        s = np.empty((6, 4, tiles), y.dtype)
        first, last = b * tiles, b * tiles + tiles
        for col in range(6):
            _product_columns(
                s[col],
                m[col, ch, first:last],
                m[6 + col, ch, first:last],
                m[12 + col, ch, first:last],
                m[18 + col, ch, first:last],
                m[24 + col, ch, first:last],
                m[30 + col, ch, first:last],
            )
        for i in range(th):
            for row in range(min(4, oh - i * 4)):
                out = y[b, ch, i * 4 + row]
                s0, s1, s2 = s[0, row], s[1, row], s[2, row]
                s3, s4, s5 = s[3, row], s[4, row], s[5, row]
                for j in range(tw):
                    t = i * tw + j
                    a0, a1, a2, a3 = _output_transform(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t])
                    a0 = _epilogue(a0, a, c, scaled, shifted, relu, slope)
                    a1 = _epilogue(a1, a, c, scaled, shifted, relu, slope)
                    a2 = _epilogue(a2, a, c, scaled, shifted, relu, slope)
                    a3 = _epilogue(a3, a, c, scaled, shifted, relu, slope)
                    q = j * 4
                    if q + 3 < ow:
                        out[q], out[q + 1], out[q + 2], out[q + 3] = a0, a1, a2, a3
                    else:  # the last tile overhangs the image
                        out[q] = a0
                        if q + 1 < ow:
                            out[q + 1] = a1
                        if q + 2 < ow:
                            out[q + 2] = a2


@_inline
def _product_columns(out, m0, m1, m2, m3, m4, m5):
    """``out[r, t]`` = row ``r`` of ``A^T`` applied to ``m0..m5[t]``, one loop per row."""
    row = out[0]
    for t in range(row.size):
        row[t] = _at0(m0[t], m1[t], m2[t], m3[t], m4[t])
    row = out[1]
    for t in range(row.size):
        row[t] = _at1(m1[t], m2[t], m3[t], m4[t])
    row = out[2]
    for t in range(row.size):
        row[t] = _at2(m1[t], m2[t], m3[t], m4[t])
    row = out[3]
    for t in range(row.size):
        row[t] = _at3(m1[t], m2[t], m3[t], m4[t], m5[t])


@_inline
def _epilogue(value, scale, shift, scaled, shifted, relu, slope):
    """``value * scale + shift`` (each where given), then the (leaky) ReLU, in
    :func:`channel_affine`'s order."""
    if scaled:
        value = value * scale
    if shifted:
        value = value + shift
    if relu and value < 0:
        value *= slope
    return value


# ---- elementwise -------------------------------------------------------------------------
def channel_affine(y, scale, shift, relu, negative_slope):
    _channel_affine(y, scale, shift, relu, y.dtype.type(negative_slope))


@_jit
def _channel_affine(y, scale, shift, relu, negative_slope):
    n, c = y.shape[0], y.shape[1]
    pixels = y.size // max(n * c, 1)
    planes = y.reshape(n * c, pixels)
    for plane in prange(n * c):
        row = planes[plane]
        a, b = scale[plane % c], shift[plane % c]
        for p in range(pixels):
            value = row[p] * a + b
            if relu and value < 0:
                value *= negative_slope
            row[p] = value


def channel_normalize(x, y, mean, std):
    y = _holding(y, x)
    _channel_normalize(y, mean if mean is not None else np.zeros_like(std), std)


@_jit
def _channel_normalize(y, mean, std):
    n, c = y.shape[0], y.shape[1]
    pixels = y.size // max(n * c, 1)
    planes = y.reshape(n * c, pixels)
    for plane in prange(n * c):
        row = planes[plane]
        m, s = mean[plane % c], std[plane % c]
        for p in range(pixels):
            row[p] = (row[p] - m) / s


def channel_affine_backward(x, dy, dx, scale, scale_diff, shift_diff):
    # the chain's loop without its ReLU, and a std of ones (a division by 1 is exact)
    d = dy if dx is None else _holding(dx, dy)
    n, c = x.shape[0], x.shape[1]
    shape = (n, c, x.size // max(n * c, 1))
    x, dtype = x.reshape(shape), x.dtype.type
    ones, zero = np.ones(c, x.dtype), dtype(0)
    sums = (scale_diff, shift_diff)
    _normalize_scale_backward(
        x, x, d.reshape(shape), ones, scale, False, zero, dtype(1), zero, *sums, dx is not None
    )


@_inline
def _relu(value, slope, zero, leaky):
    """Caffe's ReLU, ``std::max(x, 0) + slope * std::min(x, 0)`` (the maximum alone
    when not ``leaky``, so ``-inf`` gives 0)."""
    positive = zero if value < zero else value
    if leaky:
        positive += slope * (zero if zero < value else value)
    return positive


@_inline
def _relu_factor(value, slope, one, zero):
    """Caffe's ReLU gradient factor, ``(x > 0) + slope * (x <= 0)``: 0 for a NaN."""
    return (one if value > zero else zero) + slope * (one if value <= zero else zero)


def normalize_scale_forward(y, saved, mean, std, scale, shift, relu, negative_slope):
    n, c = y.shape[0], y.shape[1]
    planes = (n * c, y.size // max(n * c, 1))
    shifted = shift is not None
    zero = y.dtype.type(0)
    _normalize_scale_forward(
        y.reshape(planes),
        saved.reshape(planes),
        mean,
        std,
        scale,
        shift if shifted else scale,  # unread when not shifted
        shifted,
        relu,
        y.dtype.type(negative_slope),
        zero,
    )


@_jit
def _normalize_scale_forward(y, saved, mean, std, scale, shift, shifted, relu, slope, zero):
    planes, pixels = y.shape
    c = mean.size
    for plane in prange(planes):
        row, saved_row = y[plane], saved[plane]
        ch = plane % c
        m, sd, a, b = mean[ch], std[ch], scale[ch], shift[ch]
        for p in range(pixels):
            normalized = (row[p] - m) / sd  # BatchNorm
            saved_row[p] = normalized
            value = normalized * a  # Scale
            if shifted:
                value = value + b
            if relu:
                value = _relu(value, slope, zero, slope != zero)
            row[p] = value


def normalize_scale_backward(y, saved, d, std, scale, relu, negative_slope, scale_diff, shift_diff):
    n, c = y.shape[0], y.shape[1]
    shape = (n, c, y.size // max(n * c, 1))
    dtype = y.dtype.type
    _normalize_scale_backward(
        y.reshape(shape),
        saved.reshape(shape),
        d.reshape(shape),
        std,
        scale,
        relu,
        dtype(negative_slope),
        dtype(1),
        dtype(0),
        scale_diff,
        shift_diff,
        True,
    )


@_jit
def _normalize_scale_backward(
    y, saved, d, std, scale, relu, slope, one, zero, dot_out, sum_out, write
):
    n, c, pixels = y.shape
    for ch in prange(c):
        a, sd = scale[ch], std[ch]
        dot = 0.0  # float64 sums: a ResNet channel adds up 25,088 values at batch 8
        total = 0.0
        for b in range(n):
            y_row, saved_row, d_row = y[b, ch], saved[b, ch], d[b, ch]
            for p in range(pixels):  # the sums: scalar (float64, in order)
                gradient = d_row[p]
                if relu:
                    gradient = gradient * _relu_factor(y_row[p], slope, one, zero)
                total += gradient  # Scale's parameter gradients
                dot += gradient * saved_row[p]
            if not write:
                continue
            for p in range(pixels):  # the row again, from cache: vectorised
                gradient = d_row[p]
                if relu:
                    gradient = gradient * _relu_factor(y_row[p], slope, one, zero)
                d_row[p] = gradient * a / sd  # Scale's, then BatchNorm's
        dot_out[ch] = dot
        sum_out[ch] = total


#: Elements per task of the flat elementwise loops: a few hundred KiB, so that even
#: LeNet's blobs split over both threads while each task outlasts its start-up.
_CHUNK = 16384


def relu_forward(x, y, negative_slope):
    y = _holding(y, x).reshape(-1)
    zero = y.dtype.type(0)
    _relu_forward(y, y.dtype.type(negative_slope), zero, negative_slope != 0)


@_jit
def _relu_forward(y, slope, zero, leaky):
    for task in prange((y.size + _CHUNK - 1) // _CHUNK):
        run = y[task * _CHUNK : (task + 1) * _CHUNK]  # indices from 0: no wraparound test
        for i in range(run.size):
            run[i] = _relu(run[i], slope, zero, leaky)


def relu_backward(x, dy, dx, negative_slope):
    dx = _holding(dx, dy).reshape(-1)
    one, zero = dx.dtype.type(1), dx.dtype.type(0)
    _relu_backward(x.reshape(-1), dx, dx.dtype.type(negative_slope), one, zero)


@_jit
def _relu_backward(x, d, slope, one, zero):
    for task in prange((x.size + _CHUNK - 1) // _CHUNK):
        x_run = x[task * _CHUNK : (task + 1) * _CHUNK]
        d_run = d[task * _CHUNK : (task + 1) * _CHUNK]
        for i in range(x_run.size):
            d_run[i] = d_run[i] * _relu_factor(x_run[i], slope, one, zero)


def _holding(target, source):
    """``target`` holding ``source``'s values, for a loop that then works in place.

    A loop over one array vectorises; over two that may be the same memory (a layer
    run in place), LLVM's runtime overlap test fails and it runs scalar: 2x slower.
    """
    if target.ctypes.data != source.ctypes.data:
        np.copyto(target, source)
    return target


# ---- N-d im2col / col2im ------------------------------------------------------------------
# One compiled loop serves every number of spatial axes. The axes before the last are
# reduced to a small table (which input row each output row reads, per kernel cell: see
# _row_table), so the loops only walk (kernel cell, output row, last axis), with the
# innermost loop along the contiguous last axis (batch-first) or batch (batch-last). The
# bounds test stays inside that loop, as in the 2-D kernels: it compiles to a vectorised
# select, measured 2.5x faster than splitting the loop at the padding edges
# (benchmarks/conv_nd_im2col.py).
def im2col_nd(x, col, kernel, stride, pad, dilation, batch_last):
    n, c, *spatial = x.shape
    rows, cols = _nd_columns(col, n, c, spatial, kernel, stride, pad, dilation, batch_last)
    last = (kernel[-1], stride[-1], pad[-1], dilation[-1], spatial[-1])
    if batch_last:
        _im2col_nd_batch_last(x.reshape(n, c, -1), cols, rows, *last)
    else:
        _im2col_nd_batch_first(x.reshape(n * c, -1), cols, rows, *last)


def col2im_nd(col, dx, kernel, stride, pad, dilation, batch_last):
    n, c, *spatial = dx.shape
    rows, cols = _nd_columns(col, n, c, spatial, kernel, stride, pad, dilation, batch_last)
    last = (kernel[-1], stride[-1], pad[-1], dilation[-1], spatial[-1])
    if batch_last:
        _col2im_nd_batch_last(cols, dx.reshape(n, c, -1), rows, *last)
    else:
        _col2im_nd_batch_first(cols, dx.reshape(n * c, -1), rows, *last)


def _nd_columns(col, n, c, spatial, kernel, stride, pad, dilation, batch_last):
    """The row table, and ``col`` as ``(n*C, cells, k, rows, ow)`` (batch-first) or
    ``(C, cells, k, rows, ow, n)`` (batch-last), where ``cells`` and ``rows`` run over
    the kernel cells and output rows of the axes before the last."""
    axes = len(spatial)
    out = col.shape[-1 - axes : -1] if batch_last else col.shape[-axes:]
    lead = zip(spatial, out, kernel, stride, pad, dilation, strict=True)
    rows = _row_table(list(lead)[:-1], spatial[-1])
    frame = (rows.shape[0], kernel[-1], rows.shape[1], out[-1])
    cols = col.reshape(c, *frame, n) if batch_last else col.reshape(n * c, *frame)
    return rows, cols


def _row_table(lead_axes, width):
    """``table[cell, row]``: where, in a flattened image plane, the row starts that output
    row ``row`` reads through kernel cell ``cell`` (both row-major over the axes before
    the last, ``lead_axes``: (size, out, kernel, stride, pad, dilation) each), or -1
    where that row lies in the padding. Small: one entry per window row, not per value."""
    offsets = np.zeros((1, 1), np.int64)
    inside = np.ones((1, 1), bool)
    for size, o, k, s, p, d in lead_axes:
        position = np.arange(k)[:, None] * d + np.arange(o)[None, :] * s - p  # (k, o)
        valid = (position >= 0) & (position < size)
        shape = (offsets.shape[0] * k, offsets.shape[1] * o)
        offsets = (offsets[:, None, :, None] * size + position[None, :, None, :]).reshape(shape)
        inside = (inside[:, None, :, None] & valid[None, :, None, :]).reshape(shape)
    return np.where(inside, offsets * width, -1)


@_jit
def _im2col_nd_batch_first(x, col, rows, k, s, p, d, width):
    planes, cells, _, nrows, ow = col.shape
    for task in prange(planes * cells):
        plane, cell = task // cells, task % cells
        for j in range(k):
            shift = j * d - p
            for r in range(nrows):
                start = rows[cell, r]
                for z in range(ow):
                    q = z * s + shift
                    if start >= 0 and 0 <= q < width:
                        col[plane, cell, j, r, z] = x[plane, start + q]
                    else:
                        col[plane, cell, j, r, z] = 0


@_jit
def _im2col_nd_batch_last(x, col, rows, k, s, p, d, width):
    c, cells, _, nrows, ow, n = col.shape
    for task in prange(c * cells):
        ch, cell = task // cells, task % cells
        for j in range(k):
            shift = j * d - p
            for r in range(nrows):
                start = rows[cell, r]
                for z in range(ow):
                    q = z * s + shift
                    if start >= 0 and 0 <= q < width:
                        for b in range(n):
                            col[ch, cell, j, r, z, b] = x[b, ch, start + q]
                    else:
                        for b in range(n):
                            col[ch, cell, j, r, z, b] = 0


@_jit
def _col2im_nd_batch_first(col, dx, rows, k, s, p, d, width):
    planes, cells, _, nrows, ow = col.shape
    for plane in prange(planes):
        dx[plane, :] = 0
        for cell in range(cells):
            for j in range(k):
                shift = j * d - p
                for r in range(nrows):
                    start = rows[cell, r]
                    if start >= 0:
                        for z in range(ow):
                            q = z * s + shift
                            if 0 <= q < width:
                                dx[plane, start + q] += col[plane, cell, j, r, z]


@_jit
def _col2im_nd_batch_last(col, dx, rows, k, s, p, d, width):
    c, cells, _, nrows, ow, n = col.shape
    for ch in prange(c):
        for b in range(n):
            dx[b, ch, :] = 0
        for cell in range(cells):
            for j in range(k):
                shift = j * d - p
                for r in range(nrows):
                    start = rows[cell, r]
                    if start >= 0:
                        for z in range(ow):
                            q = z * s + shift
                            if 0 <= q < width:
                                for b in range(n):
                                    dx[b, ch, start + q] += col[ch, cell, j, r, z, b]


# ---- stochastic pooling -------------------------------------------------------------------
# The sums start from scalars of the arrays' dtype, as Caffe's ``Dtype cumsum``: a bare
# literal (``0``, ``FLT_MIN``) would make numba add in float64 for float32 arrays.
def stochastic_pool_forward_train(x, y, uniforms, sampled, kernel, stride):
    _stochastic_pool_forward_train(x, y, uniforms, sampled, x.dtype.type(0), *kernel, *stride)


def stochastic_pool_forward_test(x, y, kernel, stride):
    start = x.dtype.type(FLT_MIN)
    _stochastic_pool_forward_test(x, y, x.dtype.type(0), start, *kernel, *stride)


@_jit
def _stochastic_pool_forward_train(x, y, uniforms, sampled, zero, kh, kw, sh, sw):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    x_planes, y_planes = x.reshape(n * c, h * w), y.reshape(n * c, oh * ow)
    u_planes, s_planes = uniforms.reshape(n * c, oh * ow), sampled.reshape(n * c, oh * ow)
    for plane in prange(n * c):
        xs, ys, us, ss = x_planes[plane], y_planes[plane], u_planes[plane], s_planes[plane]
        for py in range(oh):
            r0, r1 = py * sh, min(py * sh + kh, h)
            for px in range(ow):
                q0, q1 = px * sw, min(px * sw + kw, w)
                total = zero
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        total += xs[r * w + q]
                threshold = us[py * ow + px] * total
                pick = (r1 - 1) * w + q1 - 1
                running = zero
                found = False
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        running += xs[r * w + q]
                        if running >= threshold:
                            pick, found = r * w + q, True
                            break
                    if found:
                        break
                ys[py * ow + px] = xs[pick]
                ss[py * ow + px] = pick


@_jit
def _stochastic_pool_forward_test(x, y, zero, start, kh, kw, sh, sw):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    x_planes, y_planes = x.reshape(n * c, h * w), y.reshape(n * c, oh * ow)
    for plane in prange(n * c):
        xs, ys = x_planes[plane], y_planes[plane]
        for py in range(oh):
            r0, r1 = py * sh, min(py * sh + kh, h)
            for px in range(ow):
                q0, q1 = px * sw, min(px * sw + kw, w)
                total = start
                squares = zero
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        value = xs[r * w + q]
                        total += value
                        squares += value * value
                ys[py * ow + px] = squares / total
