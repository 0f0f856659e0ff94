"""The CUDA kernels: numba.cuda twins of :mod:`caffelite.kernels.cpu`, one thread per output.

Same function names and arguments as the CPU module (the contract is in
:mod:`caffelite.kernels`), with Caffe's CUDA kernels as the semantic model
(``im2col.cu``, ``pooling_layer.cu``, ``lrn_layer.cu``): every thread computes one
output element and writes it once, so no kernel needs atomics and every result is
deterministic. Where the CPU loop scatters (col2im, pooling backward), the thread of
an input pixel gathers its contributions instead, in the order the CPU loop adds
them, so the sums are bit-identical to the CPU's where the arithmetic is.

Why numba.cuda rather than CuPy RawKernels: with ``NUMBA_ENABLE_CUDASIM=1`` numba runs
these same kernels on the CPU, on numpy arrays, which is how CI checks each one against
its CPU twin without a GPU (tests/kernels/test_cuda_twins.py). On a GPU they take CuPy
arrays through ``__cuda_array_interface__`` and are launched on CuPy's current stream,
so they are ordered with CuPy's own work and never wait for the device.

Arrays are C-contiguous and are handed to the kernels flattened; each kernel decodes
its thread's flat index into coordinates.
"""

from __future__ import annotations

import math

from numba import cuda
from numba.core import config as numba_config

from caffelite.errors import CaffeliteError
from caffelite.kernels import FLT_MIN

#: Threads per block: a multiple of the warp size, small enough that a block of
#: simulated threads (Python threads under the simulator) stays cheap.
THREADS_PER_BLOCK = 128

_jit = cuda.jit(cache=True)
_device_function = cuda.jit(device=True)


# ---- launching -------------------------------------------------------------------------
def _quiet_low_occupancy_warnings() -> None:
    """Small layers launch few blocks by nature (LeNet's at batch 1): numba's warning
    about it would fill every user's log, and fails a test run under ``-W error``."""
    numba_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    if not numba_config.ENABLE_CUDASIM:
        from numba.cuda import dispatcher  # numba-cuda reads its own config module here

        getattr(dispatcher, "config", numba_config).CUDA_LOW_OCCUPANCY_WARNINGS = 0


_quiet_low_occupancy_warnings()


def _launch(kernel, count: int, *arrays_then_scalars):
    """Run ``kernel`` with one thread for each of its ``count`` outputs.

    Device (CuPy) arrays are wrapped for numba without the stream synchronisation that
    numba's default import of ``__cuda_array_interface__`` does, and the kernel goes on
    CuPy's current stream, so the launch is asynchronous like CuPy's own kernels (and
    can be captured in a CUDA graph). Numpy arrays (the simulator) are passed as they are.
    """
    if count == 0:
        return
    args = [_for_numba(a) for a in arrays_then_scalars]
    blocks = math.ceil(count / THREADS_PER_BLOCK)
    kernel[blocks, THREADS_PER_BLOCK, _stream_of(arrays_then_scalars[0])](*args)


def _for_numba(value):
    interface = getattr(value, "__cuda_array_interface__", None)
    if interface is None:
        return value
    return cuda.from_cuda_array_interface(interface, owner=value, sync=False)


_external_streams: dict[int, object] = {}


def _stream_of(array):
    """CuPy's current stream for a CuPy array; numba's default stream otherwise."""
    if not hasattr(array, "__cuda_array_interface__"):
        return 0
    import cupy

    pointer = cupy.cuda.get_current_stream().ptr
    if pointer == 0:
        return 0  # the legacy default stream, numba's default too
    stream = _external_streams.get(pointer)
    if stream is None:
        stream = _external_streams[pointer] = cuda.external_stream(pointer)
    return stream


def _flat(array):
    """``array`` as a 1-D view; a copy would lose the kernel's writes, so refuse one."""
    if not array.flags.c_contiguous:
        raise CaffeliteError(
            f"CUDA kernels need C-contiguous arrays, got shape {array.shape} "
            f"with strides {array.strides}"
        )
    return array.reshape(-1)


def _zero(array):
    """A zero of ``array``'s dtype: the kernels accumulate in it, as the CPU loops do."""
    return array.dtype.type(0)


# ---- im2col / col2im ----------------------------------------------------------------
def im2col(x, col, kernel, stride, pad, dilation, batch_last):
    n, c, h, w = x.shape
    oh, ow = (col.shape[3], col.shape[4]) if batch_last else (col.shape[4], col.shape[5])
    loop = _im2col_batch_last if batch_last else _im2col_batch_first
    geometry = (*kernel, *stride, *pad, *dilation)
    _launch(loop, col.size, _flat(x), _flat(col), n, c, h, w, oh, ow, *geometry)


def col2im(col, dx, kernel, stride, pad, dilation, batch_last):
    n, c, h, w = dx.shape
    oh, ow = (col.shape[3], col.shape[4]) if batch_last else (col.shape[4], col.shape[5])
    loop = _col2im_batch_last if batch_last else _col2im_batch_first
    geometry = (*kernel, *stride, *pad, *dilation)
    _launch(loop, dx.size, _flat(col), _flat(dx), _zero(dx), n, c, h, w, oh, ow, *geometry)


@_device_function
def _copy_pixel(x, col, t, plane, h, w, r, q):
    """``col[t] = x[plane, r, q]``, or 0 in the padding."""
    if 0 <= r < h and 0 <= q < w:
        col[t] = x[(plane * h + r) * w + q]
    else:
        col[t] = 0


@_jit
def _im2col_batch_first(x, col, n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    # col is (n, C, kh, kw, oh, ow): consecutive threads write consecutive columns
    t = cuda.grid(1)
    if t >= col.size:
        return
    z, rest = t % ow, t // ow
    y, rest = rest % oh, rest // oh
    j, rest = rest % kw, rest // kw
    i, plane = rest % kh, rest // kh
    _copy_pixel(x, col, t, plane, h, w, y * sh - ph + i * dh, z * sw - pw + j * dw)


@_jit
def _im2col_batch_last(x, col, n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    # col is (C, kh, kw, oh, ow, n)
    t = cuda.grid(1)
    if t >= col.size:
        return
    b, rest = t % n, t // n
    z, rest = rest % ow, rest // ow
    y, rest = rest % oh, rest // oh
    j, rest = rest % kw, rest // kw
    i, ch = rest % kh, rest // kh
    _copy_pixel(x, col, t, b * c + ch, h, w, y * sh - ph + i * dh, z * sw - pw + j * dw)


@_device_function
def _window_offset(pixel, pad, offset, stride, pooled):
    """The output along one axis whose kernel cell ``offset`` lands on ``pixel``, or -1."""
    position = pixel + pad - offset
    if position < 0 or position % stride != 0 or position // stride >= pooled:
        return -1
    return position // stride


@_jit
def _col2im_batch_first(col, dx, zero, n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    # One thread per pixel sums the column entries that copied it, kernel cells in
    # row-major order: the order in which the CPU loop adds them.
    t = cuda.grid(1)
    if t >= dx.size:
        return
    q, rest = t % w, t // w
    r, plane = rest % h, rest // h
    total = zero
    for i in range(kh):
        y = _window_offset(r, ph, i * dh, sh, oh)
        if y < 0:
            continue
        for j in range(kw):
            z = _window_offset(q, pw, j * dw, sw, ow)
            if z >= 0:
                total += col[(((plane * kh + i) * kw + j) * oh + y) * ow + z]
    dx[t] = total


@_jit
def _col2im_batch_last(col, dx, zero, n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    if t >= dx.size:
        return
    q, rest = t % w, t // w
    r, plane = rest % h, rest // h
    b, ch = plane // c, plane % c
    total = zero
    for i in range(kh):
        y = _window_offset(r, ph, i * dh, sh, oh)
        if y < 0:
            continue
        for j in range(kw):
            z = _window_offset(q, pw, j * dw, sw, ow)
            if z >= 0:
                total += col[((((ch * kh + i) * kw + j) * oh + y) * ow + z) * n + b]
    dx[t] = total


# ---- pooling --------------------------------------------------------------------------
def max_pool_forward(x, y, argmax, kernel, stride, pad):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    geometry = (*kernel, *stride, *pad)
    keep = argmax is not None
    if not keep:  # a one-element stand-in (of the same array module) it never writes
        argmax = type(y)((1,), dtype="int32")
    args = (_flat(x), _flat(y), _flat(argmax), keep, h, w, oh, ow, *geometry)
    _launch(_max_pool_forward, y.size, *args)


def max_pool_backward(dy, argmax, dx, kernel, stride, pad):
    """Needs the window geometry, unlike the CPU twin: each input pixel's thread gathers
    from the windows that can contain it, instead of scattering with atomics."""
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    geometry = (*kernel, *stride, *pad)
    args = (_flat(dy), _flat(argmax), _flat(dx), _zero(dx), h, w, oh, ow, *geometry)
    _launch(_max_pool_backward, dx.size, *args)


def ave_pool_forward(x, y, kernel, stride, pad):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    geometry = (*kernel, *stride, *pad)
    _launch(_ave_pool_forward, y.size, _flat(x), _flat(y), _zero(y), h, w, oh, ow, *geometry)


def ave_pool_backward(dy, dx, kernel, stride, pad):
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    geometry = (*kernel, *stride, *pad)
    _launch(_ave_pool_backward, dx.size, _flat(dy), _flat(dx), _zero(dx), h, w, oh, ow, *geometry)


@_device_function
def _windows_over(pixel, kernel, stride, pad, pooled):
    """The outputs ``[lo, hi)`` along one axis whose windows contain ``pixel``."""
    lo = 0 if pixel + pad < kernel else (pixel + pad - kernel) // stride + 1
    hi = min((pixel + pad) // stride + 1, pooled)
    return lo, hi


@_jit
def _max_pool_forward(x, y, argmax, keep, h, w, oh, ow, kh, kw, sh, sw, ph, pw):
    t = cuda.grid(1)
    if t >= y.size:
        return
    px, rest = t % ow, t // ow
    py, plane = rest % oh, rest // oh
    r0, r1 = max(py * sh - ph, 0), min(py * sh - ph + kh, h)
    q0, q1 = max(px * sw - pw, 0), min(px * sw - pw + kw, w)
    base = plane * h * w
    where = r0 * w + q0
    best = x[base + where]
    for r in range(r0, r1):
        for q in range(q0, q1):
            if x[base + r * w + q] > best:  # Caffe's tie rule: the first maximum stays
                best, where = x[base + r * w + q], r * w + q
    y[t] = best
    if keep:
        argmax[t] = where


@_jit
def _max_pool_backward(dy, argmax, dx, zero, h, w, oh, ow, kh, kw, sh, sw, ph, pw):
    # Windows in row-major order: the order in which the CPU loop adds them.
    t = cuda.grid(1)
    if t >= dx.size:
        return
    q, rest = t % w, t // w
    r, plane = rest % h, rest // h
    y0, y1 = _windows_over(r, kh, sh, ph, oh)
    x0, x1 = _windows_over(q, kw, sw, pw, ow)
    base = plane * oh * ow
    total = zero
    for py in range(y0, y1):
        for px in range(x0, x1):
            if argmax[base + py * ow + px] == r * w + q:
                total += dy[base + py * ow + px]
    dx[t] = total


@_jit
def _ave_pool_forward(x, y, zero, h, w, oh, ow, kh, kw, sh, sw, ph, pw):
    t = cuda.grid(1)
    if t >= y.size:
        return
    px, rest = t % ow, t // ow
    py, plane = rest % oh, rest // oh
    start_r, start_q = py * sh - ph, px * sw - pw
    end_r, end_q = min(start_r + kh, h + ph), min(start_q + kw, w + pw)
    base = plane * h * w
    total = zero
    for r in range(max(start_r, 0), min(end_r, h)):
        for q in range(max(start_q, 0), min(end_q, w)):
            total += x[base + r * w + q]
    y[t] = total / ((end_r - start_r) * (end_q - start_q))


@_jit
def _ave_pool_backward(dy, dx, zero, h, w, oh, ow, kh, kw, sh, sw, ph, pw):
    # Accumulates in dx itself, so each addition rounds to dx's dtype as on the CPU.
    t = cuda.grid(1)
    if t >= dx.size:
        return
    q, rest = t % w, t // w
    r, plane = rest % h, rest // h
    y0, y1 = _windows_over(r, kh, sh, ph, oh)
    x0, x1 = _windows_over(q, kw, sw, pw, ow)
    base = plane * oh * ow
    dx[t] = zero
    for py in range(y0, y1):
        start_r = py * sh - ph
        rows = min(start_r + kh, h + ph) - start_r
        for px in range(x0, x1):
            start_q = px * sw - pw
            columns = min(start_q + kw, w + pw) - start_q
            dx[t] += dy[base + py * ow + px] / (rows * columns)


# ---- local response normalisation ------------------------------------------------------
def lrn_across_forward(x, y, scale, size, alpha, beta, k):
    # constants in the arrays' dtype, so float32 runs float32 pow, not float64's
    real = x.dtype.type
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    constants = (real(alpha / size), real(beta), real(k))
    args = (_flat(x), _flat(y), _flat(scale), _zero(x), c, pixels, size, *constants)
    _launch(_lrn_across_forward, x.size, *args)


def lrn_across_backward(x, y, dy, dx, scale, size, alpha, beta):
    real = x.dtype.type
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    constants = (real(2.0 * alpha * beta / size), real(beta))
    arrays = (_flat(x), _flat(y), _flat(dy), _flat(dx), _flat(scale))
    _launch(_lrn_across_backward, x.size, *arrays, c, pixels, size, *constants)


@_jit
def _lrn_across_forward(x, y, scale, zero, c, pixels, size, coefficient, beta, k):
    t = cuda.grid(1)
    if t >= x.size:
        return
    p, rest = t % pixels, t // pixels
    ch, b = rest % c, rest // c
    pad = (size - 1) // 2
    total = zero
    for other in range(max(ch - pad, 0), min(ch + pad + 1, c)):
        value = x[(b * c + other) * pixels + p]
        total += value * value
    total = k + coefficient * total
    scale[t] = total
    y[t] = x[t] * total**-beta


@_jit
def _lrn_across_backward(x, y, dy, dx, scale, c, pixels, size, coefficient, beta):
    t = cuda.grid(1)
    if t >= x.size:
        return
    p, rest = t % pixels, t // pixels
    ch, b = rest % c, rest // c
    pad = (size - 1) // 2
    out = dy[t] * scale[t] ** -beta
    for other in range(max(ch - pad, 0), min(ch + pad + 1, c)):
        o = (b * c + other) * pixels + p
        out -= coefficient * x[t] * (dy[o] * y[o] / scale[o])
    dx[t] = out


# ---- GEMM ---------------------------------------------------------------------------------
def matmul_accumulate(a, b, out):
    """cuBLAS's GEMM with ``beta = 1`` on CuPy's current stream (a library call, not a
    numba kernel, so it has no simulator run: its check is a ``gpu`` case)."""
    import cupy
    import cupy.cublas
    from cupy_backends.cuda.libs import cublas

    cublas.setStream(cupy.cuda.device.get_cublas_handle(), cupy.cuda.get_current_stream().ptr)
    cupy.cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=1.0)


# ---- layout --------------------------------------------------------------------------------
def batch_last_to_first(src, dst, bias):
    c, p, n = src.shape
    add = bias is not None
    if not add:  # a one-element stand-in (of the same array module) that is never read
        bias = type(src)((1,), dtype=src.dtype)
    _launch(_batch_last_to_first, dst.size, _flat(src), _flat(dst), _flat(bias), add, c, p, n)


@_jit
def _batch_last_to_first(src, dst, bias, add, c, p, n):
    t = cuda.grid(1)
    if t >= dst.size:
        return
    q, rest = t % p, t // p
    ch, i = rest % c, rest // c
    value = src[(ch * p + q) * n + i]
    dst[t] = value + bias[ch] if add else value


# ---- Winograd convolution F(4x4, 3x3) ----------------------------------------------------
# One thread per (plane, tile), transforming its columns first and then its rows, in the
# order of the CPU loops, with the same sums for the factors 2, 4 and 8 (a literal
# would promote float32 to float64). Tuples are indexed by constants only, so they stay
# in registers.
def winograd_input(x, v, pad, tiles):
    n, c, h, w = x.shape
    th, tw = tiles
    args = (_flat(x), _flat(v), _zero(x), n, c, h, w, *pad, th, tw)
    _launch(_winograd_input, n * c * th * tw, *args)


def winograd_output(m, y, scale, shift, relu, negative_slope):
    n, k, oh, ow = y.shape
    scaled, shifted = scale is not None, shift is not None
    stand_in = type(m)((1,), dtype=m.dtype)  # of the same array module, never read
    scale = scale if scaled else stand_in
    shift = shift if shifted else stand_in
    th, tw = (oh + 3) // 4, (ow + 3) // 4
    epilogue = (scaled, shifted, relu, y.dtype.type(negative_slope))
    args = (_flat(m), _flat(y), _flat(scale), _flat(shift), *epilogue, n, k, oh, ow, th, tw)
    _launch(_winograd_output, n * k * th * tw, *args)


@_device_function
def _twice(a):
    return a + a


@_device_function
def _four_times(a):
    b = a + a
    return b + b


@_device_function
def _input_transform(d0, d1, d2, d3, d4, d5):
    """``B^T d`` for one column ``d`` of a tile, with the CPU twin's operations."""
    p, q = d4 - d2, d1 - d3
    return (
        _four_times(d0 - d2) + p,
        d3 + d4 - _four_times(d1 + d2),
        _four_times(d1 - d2) + d4 - d3,
        p - _twice(q),
        p + _twice(q),
        _four_times(q) - d3 + d5,
    )


@_device_function
def _output_transform(m0, m1, m2, m3, m4, m5):
    """``A^T m`` for one column ``m`` of a tile's product."""
    a, b = m1 + m2, m1 - m2
    c, d = m3 + m4, m3 - m4
    d2 = _twice(d)
    return (m0 + a + c, b + d2, a + _four_times(c), b + _four_times(d2) + m5)


@_device_function
def _pixel(x, zero, plane, h, w, r, q):
    if 0 <= r < h and 0 <= q < w:
        return x[(plane * h + r) * w + q]
    return zero


@_device_function
def _tile_column(x, zero, plane, h, w, r, q):
    """``B^T`` of the 6 input pixels of column ``q`` from row ``r`` down."""
    return _input_transform(
        _pixel(x, zero, plane, h, w, r, q),
        _pixel(x, zero, plane, h, w, r + 1, q),
        _pixel(x, zero, plane, h, w, r + 2, q),
        _pixel(x, zero, plane, h, w, r + 3, q),
        _pixel(x, zero, plane, h, w, r + 4, q),
        _pixel(x, zero, plane, h, w, r + 5, q),
    )


@_device_function
def _store_row(v, first, step, e0, e1, e2, e3, e4, e5):
    """One row of a transformed tile: entries ``first + col * step`` of ``v``."""
    v[first] = e0
    v[first + step] = e1
    v[first + 2 * step] = e2
    v[first + 3 * step] = e3
    v[first + 4 * step] = e4
    v[first + 5 * step] = e5


@_jit
def _winograd_input(x, v, zero, n, c, h, w, ph, pw, th, tw):
    t = cuda.grid(1)
    tiles = th * tw
    if t >= n * c * tiles:
        return
    tile, plane = t % tiles, t // tiles  # consecutive threads write consecutive tiles
    b, ch = plane // c, plane % c
    r, q = tile // tw * 4 - ph, tile % tw * 4 - pw
    c0 = _tile_column(x, zero, plane, h, w, r, q)
    c1 = _tile_column(x, zero, plane, h, w, r, q + 1)
    c2 = _tile_column(x, zero, plane, h, w, r, q + 2)
    c3 = _tile_column(x, zero, plane, h, w, r, q + 3)
    c4 = _tile_column(x, zero, plane, h, w, r, q + 4)
    c5 = _tile_column(x, zero, plane, h, w, r, q + 5)
    step = c * n * tiles  # from one of the 36 entries to the next
    first = ch * n * tiles + b * tiles + tile
    _store_row(v, first, step, *_input_transform(c0[0], c1[0], c2[0], c3[0], c4[0], c5[0]))
    first += 6 * step
    _store_row(v, first, step, *_input_transform(c0[1], c1[1], c2[1], c3[1], c4[1], c5[1]))
    first += 6 * step
    _store_row(v, first, step, *_input_transform(c0[2], c1[2], c2[2], c3[2], c4[2], c5[2]))
    first += 6 * step
    _store_row(v, first, step, *_input_transform(c0[3], c1[3], c2[3], c3[3], c4[3], c5[3]))
    first += 6 * step
    _store_row(v, first, step, *_input_transform(c0[4], c1[4], c2[4], c3[4], c4[4], c5[4]))
    first += 6 * step
    _store_row(v, first, step, *_input_transform(c0[5], c1[5], c2[5], c3[5], c4[5], c5[5]))


@_device_function
def _product_column(m, first, step):
    """``A^T`` of one column of a tile's 6x6 product, its entries ``6 * step`` apart."""
    return _output_transform(
        m[first],
        m[first + 6 * step],
        m[first + 12 * step],
        m[first + 18 * step],
        m[first + 24 * step],
        m[first + 30 * step],
    )


@_device_function
def _epilogue(value, scale, shift, scaled, shifted, relu, slope):
    """``value * scale + shift`` (each where given), then the (leaky) ReLU."""
    if scaled:
        value = value * scale
    if shifted:
        value = value + shift
    if relu and value < 0:
        value *= slope
    return value


@_device_function
def _store_output_row(y, start, q, ow, values, scale, shift, scaled, shifted, relu, slope):
    """The four ``values`` of one tile row from ``y[start]`` (column ``q``), cropped at
    ``ow``, each through the epilogue."""
    y[start] = _epilogue(values[0], scale, shift, scaled, shifted, relu, slope)
    if q + 1 < ow:
        y[start + 1] = _epilogue(values[1], scale, shift, scaled, shifted, relu, slope)
    if q + 2 < ow:
        y[start + 2] = _epilogue(values[2], scale, shift, scaled, shifted, relu, slope)
    if q + 3 < ow:
        y[start + 3] = _epilogue(values[3], scale, shift, scaled, shifted, relu, slope)


@_jit
def _winograd_output(m, y, scale, shift, scaled, shifted, relu, slope, n, k, oh, ow, th, tw):
    t = cuda.grid(1)
    tiles = th * tw
    if t >= n * k * tiles:
        return
    tile, plane = t % tiles, t // tiles
    b, ch = plane // k, plane % k
    step = k * n * tiles
    first = ch * n * tiles + b * tiles + tile
    s0 = _product_column(m, first, step)
    s1 = _product_column(m, first + step, step)
    s2 = _product_column(m, first + 2 * step, step)
    s3 = _product_column(m, first + 3 * step, step)
    s4 = _product_column(m, first + 4 * step, step)
    s5 = _product_column(m, first + 5 * step, step)
    a, c = scale[ch] if scaled else scale[0], shift[ch] if shifted else shift[0]
    r, q = tile // tw * 4, tile % tw * 4
    start = (plane * oh + r) * ow + q
    values = _output_transform(s0[0], s1[0], s2[0], s3[0], s4[0], s5[0])
    _store_output_row(y, start, q, ow, values, a, c, scaled, shifted, relu, slope)
    if r + 1 < oh:
        values = _output_transform(s0[1], s1[1], s2[1], s3[1], s4[1], s5[1])
        _store_output_row(y, start + ow, q, ow, values, a, c, scaled, shifted, relu, slope)
    if r + 2 < oh:
        values = _output_transform(s0[2], s1[2], s2[2], s3[2], s4[2], s5[2])
        _store_output_row(y, start + 2 * ow, q, ow, values, a, c, scaled, shifted, relu, slope)
    if r + 3 < oh:
        values = _output_transform(s0[3], s1[3], s2[3], s3[3], s4[3], s5[3])
        _store_output_row(y, start + 3 * ow, q, ow, values, a, c, scaled, shifted, relu, slope)


# ---- elementwise -------------------------------------------------------------------------
def channel_affine(y, scale, shift, relu, negative_slope):
    n, c = y.shape[0], y.shape[1]
    pixels = y.size // max(n * c, 1)
    slope = y.dtype.type(negative_slope)
    args = (_flat(y), _flat(scale), _flat(shift), c, pixels, relu, slope)
    _launch(_channel_affine, y.size, *args)


@_jit
def _channel_affine(y, scale, shift, c, pixels, relu, negative_slope):
    t = cuda.grid(1)
    if t >= y.size:
        return
    ch = (t // pixels) % c
    value = y[t] * scale[ch] + shift[ch]
    if relu and value < 0:
        value *= negative_slope
    y[t] = value


def channel_normalize(x, y, mean, std):
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    centred = mean is not None
    mean = _flat(mean) if centred else _flat(std)  # unread when not centred
    _launch(_channel_normalize, x.size, _flat(x), _flat(y), mean, _flat(std), c, pixels, centred)


@_jit
def _channel_normalize(x, y, mean, std, c, pixels, centred):
    t = cuda.grid(1)
    if t >= x.size:
        return
    ch = (t // pixels) % c
    value = x[t]
    if centred:
        value = value - mean[ch]
    y[t] = value / std[ch]


def channel_affine_backward(x, dy, dx, scale, scale_diff, shift_diff):
    n, c = x.shape[0], x.shape[1]
    pixels = x.size // max(n * c, 1)
    # the chain's sums without its ReLU; they read dy before the second launch (same
    # stream) overwrites it in place
    sums = (_flat(scale_diff), _flat(shift_diff), n, pixels)
    flags = (False, _zero(x), x.dtype.type(1), _zero(x))
    _launch(_chain_sums, c, _flat(x), _flat(x), _flat(dy), *sums, *flags)
    if dx is not None:
        _launch(_channel_scale, x.size, _flat(dy), _flat(dx), _flat(scale), c, pixels)


@_jit
def _channel_scale(dy, dx, scale, c, pixels):
    t = cuda.grid(1)
    if t >= dy.size:
        return
    dx[t] = dy[t] * scale[(t // pixels) % c]


@_device_function
def _relu(value, slope, zero, leaky):
    """Caffe's ReLU, ``std::max(x, 0) + slope * std::min(x, 0)`` (the maximum alone
    when not ``leaky``)."""
    positive = zero if value < zero else value
    if leaky:
        positive += slope * (zero if zero < value else value)
    return positive


@_device_function
def _relu_factor(value, slope, one, zero):
    """Caffe's ReLU gradient factor, ``(x > 0) + slope * (x <= 0)``."""
    return (one if value > zero else zero) + slope * (one if value <= zero else zero)


def relu_forward(x, y, negative_slope):
    slope, zero = x.dtype.type(negative_slope), _zero(x)
    _launch(_relu_forward, x.size, _flat(x), _flat(y), slope, zero, negative_slope != 0)


@_jit
def _relu_forward(x, y, slope, zero, leaky):
    t = cuda.grid(1)
    if t >= x.size:
        return
    y[t] = _relu(x[t], slope, zero, leaky)


def relu_backward(x, dy, dx, negative_slope):
    slope, one, zero = x.dtype.type(negative_slope), x.dtype.type(1), _zero(x)
    _launch(_relu_backward, x.size, _flat(x), _flat(dy), _flat(dx), slope, one, zero)


@_jit
def _relu_backward(x, dy, dx, slope, one, zero):
    t = cuda.grid(1)
    if t >= x.size:
        return
    dx[t] = dy[t] * _relu_factor(x[t], slope, one, zero)


def normalize_scale_forward(y, saved, mean, std, scale, shift, relu, negative_slope):
    n, c = y.shape[0], y.shape[1]
    pixels = y.size // max(n * c, 1)
    shifted = shift is not None
    slope, zero = y.dtype.type(negative_slope), _zero(y)
    operands = (_flat(mean), _flat(std), _flat(scale), _flat(shift if shifted else scale))
    flags = (shifted, relu, slope, zero)
    _launch(_normalize_scale_forward, y.size, _flat(y), _flat(saved), *operands, c, pixels, *flags)


@_jit
def _normalize_scale_forward(
    y, saved, mean, std, scale, shift, c, pixels, shifted, relu, slope, zero
):
    t = cuda.grid(1)
    if t >= y.size:
        return
    ch = (t // pixels) % c
    normalized = (y[t] - mean[ch]) / std[ch]
    saved[t] = normalized
    value = normalized * scale[ch]
    if shifted:
        value = value + shift[ch]
    if relu:
        value = _relu(value, slope, zero, slope != zero)
    y[t] = value


def normalize_scale_backward(y, saved, d, std, scale, relu, negative_slope, scale_diff, shift_diff):
    n, c = y.shape[0], y.shape[1]
    pixels = y.size // max(n * c, 1)
    slope, one, zero = y.dtype.type(negative_slope), y.dtype.type(1), _zero(y)
    flags = (relu, slope, one, zero)
    arrays = (_flat(y), _flat(saved), _flat(d))
    # the sums read d before the second launch (same stream) overwrites it
    sums = (_flat(scale_diff), _flat(shift_diff))
    _launch(_chain_sums, c, *arrays, *sums, n, pixels, *flags)
    operands = (_flat(std), _flat(scale))
    _launch(_chain_gradient, y.size, arrays[0], arrays[2], *operands, c, pixels, *flags)


@_jit
def _chain_sums(y, saved, d, dot, total, n, pixels, relu, slope, one, zero):
    """One thread per channel, adding in the CPU loop's order (batch, then position)."""
    ch = cuda.grid(1)
    c = dot.size
    if ch >= c:
        return
    d_sum = 0.0
    dot_sum = 0.0
    for b in range(n):
        start = (b * c + ch) * pixels
        for p in range(start, start + pixels):
            gradient = d[p]
            if relu:
                gradient = gradient * _relu_factor(y[p], slope, one, zero)
            # float(): float64 sums, as on the CPU (the simulator's numpy scalars would
            # otherwise keep float32); the product itself is rounded in the dtype there too
            d_sum += float(gradient)
            dot_sum += float(gradient * saved[p])
    dot[ch] = dot_sum
    total[ch] = d_sum


@_jit
def _chain_gradient(y, d, std, scale, c, pixels, relu, slope, one, zero):
    t = cuda.grid(1)
    if t >= d.size:
        return
    ch = (t // pixels) % c
    gradient = d[t]
    if relu:
        gradient = gradient * _relu_factor(y[t], slope, one, zero)
    d[t] = gradient * scale[ch] / std[ch]


# ---- N-d im2col / col2im ------------------------------------------------------------------
# The geometry travels as tuples, one entry per spatial axis (numba compiles one version
# per number of axes). A thread decodes its flat index axis by axis from the last, the
# kernel cell and the output position together, so no per-thread arrays are needed.
def im2col_nd(x, col, kernel, stride, pad, dilation, batch_last):
    n, c, *spatial = x.shape
    out = _nd_output_shape(col, len(spatial), batch_last)
    geometry = _nd_geometry(spatial, out, kernel, stride, pad, dilation)
    loop = _im2col_nd_batch_last if batch_last else _im2col_nd_batch_first
    _launch(loop, col.size, _flat(x), _flat(col), n, c, *geometry)


def col2im_nd(col, dx, kernel, stride, pad, dilation, batch_last):
    n, c, *spatial = dx.shape
    out = _nd_output_shape(col, len(spatial), batch_last)
    geometry = _nd_geometry(spatial, out, kernel, stride, pad, dilation)
    loop = _col2im_nd_batch_last if batch_last else _col2im_nd_batch_first
    _launch(loop, dx.size, _flat(col), _flat(dx), _zero(dx), n, c, *geometry)


def _nd_output_shape(col, axes, batch_last):
    return tuple(col.shape[-1 - axes : -1] if batch_last else col.shape[-axes:])


def _nd_geometry(spatial, out, kernel, stride, pad, dilation):
    """The per-axis tuples, and the products the kernels divide by."""
    axes = (spatial, out, kernel, stride, pad, dilation)
    return (
        *(tuple(int(v) for v in values) for values in axes),
        math.prod(spatial),
        math.prod(out),
        math.prod(kernel),
    )


@_device_function
def _nd_source(cell, position, spatial, out, kernel, stride, pad, dilation):
    """The offset in an image plane that kernel cell ``cell`` reads for output
    ``position`` (both flat, row-major), or -1 in the padding."""
    offset, place = 0, 1
    for a in range(len(spatial) - 1, -1, -1):
        k, cell = cell % kernel[a], cell // kernel[a]
        o, position = position % out[a], position // out[a]
        source = o * stride[a] - pad[a] + k * dilation[a]
        if source < 0 or source >= spatial[a]:
            return -1
        offset += source * place
        place *= spatial[a]
    return offset


@_device_function
def _nd_target(cell, pixel, spatial, out, kernel, stride, pad, dilation):
    """The flat output position whose window reads ``pixel`` through kernel cell
    ``cell``, or -1 where none does: the inverse of :func:`_nd_source`."""
    position, place = 0, 1
    for a in range(len(spatial) - 1, -1, -1):
        k, cell = cell % kernel[a], cell // kernel[a]
        p, pixel = pixel % spatial[a], pixel // spatial[a]
        reach = p + pad[a] - k * dilation[a]
        if reach < 0 or reach % stride[a] != 0 or reach // stride[a] >= out[a]:
            return -1
        position += (reach // stride[a]) * place
        place *= out[a]
    return position


@_jit
def _im2col_nd_batch_first(
    x, col, n, c, spatial, out, kernel, stride, pad, dilation, pixels, outputs, cells
):
    # col is (n, C, *kernel, *out)
    t = cuda.grid(1)
    if t >= col.size:
        return
    position, rest = t % outputs, t // outputs
    cell, plane = rest % cells, rest // cells
    source = _nd_source(cell, position, spatial, out, kernel, stride, pad, dilation)
    col[t] = 0 if source < 0 else x[plane * pixels + source]


@_jit
def _im2col_nd_batch_last(
    x, col, n, c, spatial, out, kernel, stride, pad, dilation, pixels, outputs, cells
):
    # col is (C, *kernel, *out, n)
    t = cuda.grid(1)
    if t >= col.size:
        return
    b, rest = t % n, t // n
    position, rest = rest % outputs, rest // outputs
    cell, ch = rest % cells, rest // cells
    source = _nd_source(cell, position, spatial, out, kernel, stride, pad, dilation)
    col[t] = 0 if source < 0 else x[(b * c + ch) * pixels + source]


@_jit
def _col2im_nd_batch_first(
    col, dx, zero, n, c, spatial, out, kernel, stride, pad, dilation, pixels, outputs, cells
):
    # Kernel cells in row-major order: the order in which the CPU loop adds them.
    t = cuda.grid(1)
    if t >= dx.size:
        return
    pixel, plane = t % pixels, t // pixels
    total = zero
    for cell in range(cells):
        position = _nd_target(cell, pixel, spatial, out, kernel, stride, pad, dilation)
        if position >= 0:
            total += col[(plane * cells + cell) * outputs + position]
    dx[t] = total


@_jit
def _col2im_nd_batch_last(
    col, dx, zero, n, c, spatial, out, kernel, stride, pad, dilation, pixels, outputs, cells
):
    t = cuda.grid(1)
    if t >= dx.size:
        return
    pixel, plane = t % pixels, t // pixels
    b, ch = plane // c, plane % c
    total = zero
    for cell in range(cells):
        position = _nd_target(cell, pixel, spatial, out, kernel, stride, pad, dilation)
        if position >= 0:
            total += col[((ch * cells + cell) * outputs + position) * n + b]
    dx[t] = total


# ---- stochastic pooling -------------------------------------------------------------------
# Caffe's StoPoolForwardTrain / StoPoolForwardTest, one thread per output, windows from
# ``p * stride`` clipped to the image; sums start from scalars of the arrays' dtype.
def stochastic_pool_forward_train(x, y, uniforms, sampled, kernel, stride):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    arrays = (_flat(x), _flat(y), _flat(uniforms), _flat(sampled))
    _launch(
        _stochastic_pool_forward_train, y.size, *arrays, _zero(x), h, w, oh, ow, *kernel, *stride
    )


def stochastic_pool_forward_test(x, y, kernel, stride):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    start = x.dtype.type(FLT_MIN)
    _launch(
        _stochastic_pool_forward_test,
        y.size,
        _flat(x),
        _flat(y),
        _zero(x),
        start,
        h,
        w,
        oh,
        ow,
        *kernel,
        *stride,
    )


@_jit
def _stochastic_pool_forward_train(x, y, uniforms, sampled, zero, h, w, oh, ow, kh, kw, sh, sw):
    t = cuda.grid(1)
    if t >= y.size:
        return
    px, rest = t % ow, t // ow
    py, plane = rest % oh, rest // oh
    r0, r1 = py * sh, min(py * sh + kh, h)
    q0, q1 = px * sw, min(px * sw + kw, w)
    base = plane * h * w
    total = zero
    for r in range(r0, r1):
        for q in range(q0, q1):
            total += x[base + r * w + q]
    threshold = uniforms[t] * total
    pick = (r1 - 1) * w + q1 - 1  # where the threshold is never reached (negative inputs)
    running = zero
    found = False
    for r in range(r0, r1):
        for q in range(q0, q1):
            running += x[base + r * w + q]
            if not found and running >= threshold:
                pick, found = r * w + q, True
    y[t] = x[base + pick]
    sampled[t] = pick


@_jit
def _stochastic_pool_forward_test(x, y, zero, start, h, w, oh, ow, kh, kw, sh, sw):
    t = cuda.grid(1)
    if t >= y.size:
        return
    px, rest = t % ow, t // ow
    py, plane = rest % oh, rest // oh
    base = plane * h * w
    total, squares = start, zero
    for r in range(py * sh, min(py * sh + kh, h)):
        for q in range(px * sw, min(px * sw + kw, w)):
            value = x[base + r * w + q]
            total += value
            squares += value * value
    y[t] = squares / total
