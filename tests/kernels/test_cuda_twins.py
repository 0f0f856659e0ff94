"""Each CUDA kernel (caffelite/kernels/cuda.py) against its CPU twin (kernels/cpu.py).

The same cases run on two "devices":

* ``simulator``: numba's CUDA simulator runs the kernels on the CPU, on numpy arrays,
  so CI checks every CUDA kernel without a GPU. The simulator is chosen by an
  environment variable that numba reads when it is first imported, and the rest of
  the suite has imported numba already, so :func:`test_cuda_kernels_under_simulator`
  runs this file again in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``; only there do
  the ``simulator`` cases run.
* ``gpu`` (marker ``gpu``): CuPy arrays on a real device, launched on a non-default
  stream; skipped where CuPy or a device is absent.

Inputs are small (the simulator runs each GPU thread as a Python thread). Where both
twins do the same arithmetic in the same order (im2col, col2im, max pooling and its
argmax) the results must be bit-identical; elsewhere equal to the dtype's tolerance
(the device's pow and fused multiply-add may round differently).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.kernels import cpu
from caffelite.layers.pooling import pooled_size

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REPO = Path(__file__).resolve().parents[2]

DTYPES = [np.float32, np.float64]
TOLERANCE = {np.float32: {"rtol": 1e-6, "atol": 1e-6}, np.float64: {"rtol": 1e-13, "atol": 1e-14}}


# ---- the simulator run -------------------------------------------------------------------
if not SIMULATED:  # the simulator run itself holds only the cases below

    def test_cuda_kernels_under_simulator():
        environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "NUMBA_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"]
        run = subprocess.run(
            [*command, str(Path(__file__).resolve())],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = run.stdout + run.stderr
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        assert run.returncode == 0, output[-6000:]
        passed = re.search(r"(\d+) passed", summary)
        assert passed and int(passed.group(1)) >= 90, output[-6000:]
        assert "skipped" not in summary and "failed" not in summary, output[-6000:]


# ---- devices ---------------------------------------------------------------------------
class Device:
    """Moves test arrays to where the CUDA kernels run, and back."""

    def __init__(self, name: str):
        self.name = name
        if name == "gpu":
            cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
            try:
                if cupy.cuda.runtime.getDeviceCount() == 0:
                    pytest.skip("no CUDA device")
            except cupy.cuda.runtime.CUDARuntimeError as error:
                pytest.skip(f"no usable CUDA device ({error})")
            self.cupy = cupy
        from caffelite.kernels import cuda

        self.kernels = cuda

    def put(self, array):
        return self.cupy.asarray(array) if self.name == "gpu" else array.copy()

    def get(self, array):
        return self.cupy.asnumpy(array) if self.name == "gpu" else array

    def run(self, kernel_name: str, *args):
        """Call the CUDA kernel; on a GPU on a fresh non-default stream, waited for."""
        kernel = getattr(self.kernels, kernel_name)
        if self.name != "gpu":
            kernel(*args)
            return
        self.cupy.cuda.Device().synchronize()  # the inputs, put on the null stream
        stream = self.cupy.cuda.Stream(non_blocking=True)
        with stream:
            kernel(*args)
        stream.synchronize()


DEVICES = ["simulator"] if SIMULATED else [pytest.param("gpu", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request):
    return Device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


def garbage(shape, dtype):
    """An output buffer full of NaNs: a kernel must overwrite every element."""
    return np.full(shape, np.nan, dtype)


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


# ---- im2col / col2im ----------------------------------------------------------------
# (input shape, kernel, stride, pad, dilation)
CONVOLUTIONS = {
    "3x3_pad1": ((2, 3, 5, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    "lenet_5x5": ((2, 1, 9, 8), (5, 5), (1, 1), (0, 0), (1, 1)),
    "strided_dilated": ((1, 2, 7, 6), (3, 2), (2, 1), (1, 0), (2, 1)),
    "stride_over_kernel": ((2, 2, 7, 7), (2, 2), (3, 3), (1, 2), (1, 1)),
    "pointwise": ((2, 3, 3, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
}


# and for the N-d kernels, one entry per spatial axis (2-D too: force_nd_im2col)
CONVOLUTIONS_ND = {
    "1d": ((2, 3, 9), (3,), (2,), (1,), (1,)),
    "2d_as_nd": ((1, 2, 5, 6), (3, 2), (1, 2), (1, 0), (1, 2)),
    "3d_c3d": ((1, 2, 3, 4, 4), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "3d_mixed": ((1, 2, 5, 4, 6), (2, 3, 1), (2, 1, 3), (0, 1, 1), (2, 1, 1)),
    "4d": ((1, 1, 3, 3, 4, 3), (2, 1, 2, 3), (1, 2, 1, 1), (1, 0, 0, 1), (1, 1, 2, 1)),
}
# (forward kernel, backward kernel, geometry) per case
IM2COL_CASES = {
    **{name: ("im2col", "col2im", case) for name, case in CONVOLUTIONS.items()},
    **{f"nd_{name}": ("im2col_nd", "col2im_nd", case) for name, case in CONVOLUTIONS_ND.items()},
}


def col_shape(x_shape, kernel, stride, pad, dilation, batch_last):
    n, c, *spatial = x_shape
    out = tuple(
        (size + 2 * p - (d * (k - 1) + 1)) // s + 1
        for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation, strict=True)
    )
    return (c, *kernel, *out, n) if batch_last else (n, c, *kernel, *out)


@pytest.mark.parametrize("batch_last", [False, True], ids=["batch_first", "batch_last"])
@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col(device, dtype, case, batch_last):
    forward, _, (x_shape, *geometry) = IM2COL_CASES[case]
    x = np.random.default_rng(0).standard_normal(x_shape).astype(dtype)
    shape = col_shape(x_shape, *geometry, batch_last)
    expected = garbage(shape, dtype)
    getattr(cpu, forward)(x, expected, *geometry, batch_last)
    col = device.put(garbage(shape, dtype))
    device.run(forward, device.put(x), col, *geometry, batch_last)
    np.testing.assert_array_equal(device.get(col), expected)


@pytest.mark.parametrize("batch_last", [False, True], ids=["batch_first", "batch_last"])
@pytest.mark.parametrize("case", IM2COL_CASES)
def test_col2im(device, dtype, case, batch_last):
    _, backward, (x_shape, *geometry) = IM2COL_CASES[case]
    shape = col_shape(x_shape, *geometry, batch_last)
    col = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    expected = garbage(x_shape, dtype)
    getattr(cpu, backward)(col, expected, *geometry, batch_last)
    dx = device.put(garbage(x_shape, dtype))
    device.run(backward, device.put(col), dx, *geometry, batch_last)
    np.testing.assert_array_equal(device.get(dx), expected)


# ---- pooling --------------------------------------------------------------------------
# (input shape, kernel, stride, pad); ceil rounding clips the last windows of most
POOLINGS = {
    "2x2_stride2": ((2, 3, 6, 6), (2, 2), (2, 2), (0, 0)),
    "3x3_stride2_clipped": ((2, 2, 7, 8), (3, 3), (2, 2), (0, 0)),
    "3x3_pad1": ((1, 3, 5, 5), (3, 3), (1, 1), (1, 1)),
    "rectangular": ((2, 2, 6, 7), (2, 3), (1, 2), (1, 1)),
    "global": ((2, 3, 4, 5), (4, 5), (1, 1), (0, 0)),
}


def pooled_shape(x_shape, kernel, stride, pad):
    n, c, h, w = x_shape
    return (n, c, *(map(pooled_size, (h, w), kernel, stride, pad)))


def tied_input(shape, dtype, seed):
    """Few distinct values, so most windows hold several maxima (Caffe keeps the first)."""
    return np.random.default_rng(seed).integers(-2, 3, shape).astype(dtype)


@pytest.mark.parametrize("case", POOLINGS)
def test_max_pool_forward(device, dtype, case):
    x_shape, *geometry = POOLINGS[case]
    y_shape = pooled_shape(x_shape, *geometry)
    x = tied_input(x_shape, dtype, seed=2)
    expected_y, expected_argmax = garbage(y_shape, dtype), np.full(y_shape, -1, np.int32)
    cpu.max_pool_forward(x, expected_y, expected_argmax, *geometry)
    y, argmax = device.put(garbage(y_shape, dtype)), device.put(np.full(y_shape, -1, np.int32))
    device.run("max_pool_forward", device.put(x), y, argmax, *geometry)
    np.testing.assert_array_equal(device.get(y), expected_y)
    np.testing.assert_array_equal(device.get(argmax), expected_argmax)


@pytest.mark.parametrize("case", POOLINGS)
def test_max_pool_forward_without_argmax(device, dtype, case):
    """argmax None (no backward follows): the same maxima, on both twins."""
    x_shape, *geometry = POOLINGS[case]
    y_shape = pooled_shape(x_shape, *geometry)
    x = tied_input(x_shape, dtype, seed=5)
    expected_y = garbage(y_shape, dtype)
    cpu.max_pool_forward(x, expected_y, np.empty(y_shape, np.int32), *geometry)
    cpu_y = garbage(y_shape, dtype)
    cpu.max_pool_forward(x, cpu_y, None, *geometry)
    np.testing.assert_array_equal(cpu_y, expected_y)
    y = device.put(garbage(y_shape, dtype))
    device.run("max_pool_forward", device.put(x), y, None, *geometry)
    np.testing.assert_array_equal(device.get(y), expected_y)


@pytest.mark.parametrize("case", POOLINGS)
def test_max_pool_backward(device, dtype, case):
    x_shape, *geometry = POOLINGS[case]
    y_shape = pooled_shape(x_shape, *geometry)
    argmax = np.empty(y_shape, np.int32)
    cpu.max_pool_forward(
        tied_input(x_shape, dtype, seed=3), garbage(y_shape, dtype), argmax, *geometry
    )
    dy = np.random.default_rng(4).standard_normal(y_shape).astype(dtype)
    expected = garbage(x_shape, dtype)
    cpu.max_pool_backward(dy, argmax, expected, *geometry)
    dx = device.put(garbage(x_shape, dtype))
    device.run("max_pool_backward", device.put(dy), device.put(argmax), dx, *geometry)
    np.testing.assert_array_equal(device.get(dx), expected)


@pytest.mark.parametrize("case", POOLINGS)
def test_ave_pool_forward(device, dtype, case):
    x_shape, *geometry = POOLINGS[case]
    y_shape = pooled_shape(x_shape, *geometry)
    x = np.random.default_rng(5).standard_normal(x_shape).astype(dtype)
    expected = garbage(y_shape, dtype)
    cpu.ave_pool_forward(x, expected, *geometry)
    y = device.put(garbage(y_shape, dtype))
    device.run("ave_pool_forward", device.put(x), y, *geometry)
    assert_close(device.get(y), expected, dtype)


@pytest.mark.parametrize("case", POOLINGS)
def test_ave_pool_backward(device, dtype, case):
    x_shape, *geometry = POOLINGS[case]
    y_shape = pooled_shape(x_shape, *geometry)
    dy = np.random.default_rng(6).standard_normal(y_shape).astype(dtype)
    expected = garbage(x_shape, dtype)
    cpu.ave_pool_backward(dy, expected, *geometry)
    dx = device.put(garbage(x_shape, dtype))
    device.run("ave_pool_backward", device.put(dy), dx, *geometry)
    assert_close(device.get(dx), expected, dtype)


# ---- local response normalisation ------------------------------------------------------
# (shape, size, alpha, beta, k): AlexNet's constants, and large ones that make the
# normalisation matter; 7 channels so windows are clipped at both ends
LRNS = {
    "alexnet": ((2, 7, 3, 4), 5, 1e-4, 0.75, 1.0),
    "strong": ((2, 7, 2, 3), 3, 0.8, 0.6, 2.0),
}


@pytest.mark.parametrize("case", LRNS)
def test_lrn_across(device, dtype, case):
    shape, size, alpha, beta, k = LRNS[case]
    rng = np.random.default_rng(7)
    x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    y, scale, dx = garbage(shape, dtype), garbage(shape, dtype), garbage(shape, dtype)
    cpu.lrn_across_forward(x, y, scale, size, alpha, beta, k)
    cpu.lrn_across_backward(x, y, dy, dx, scale, size, alpha, beta)

    on_x, on_y, on_scale = (
        device.put(x),
        device.put(garbage(shape, dtype)),
        device.put(garbage(shape, dtype)),
    )
    device.run("lrn_across_forward", on_x, on_y, on_scale, size, alpha, beta, k)
    assert_close(device.get(on_y), y, dtype)
    assert_close(device.get(on_scale), scale, dtype)
    # backward from the CPU's forward results, so only the backward kernel is compared
    on_dx = device.put(garbage(shape, dtype))
    arrays = (device.put(x), device.put(y), device.put(dy), on_dx, device.put(scale))
    device.run("lrn_across_backward", *arrays, size, alpha, beta)
    assert_close(device.get(on_dx), dx, dtype)


# ---- elementwise -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("relu", "negative_slope"),
    [(False, 0.0), (True, 0.0), (True, 0.1)],
    ids=["affine", "relu", "leaky"],
)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4)], ids=["4d", "2d"])
def test_channel_affine(device, dtype, shape, relu, negative_slope):
    rng = np.random.default_rng(8)
    y = rng.standard_normal(shape).astype(dtype)
    scale, shift = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    expected = y.copy()
    cpu.channel_affine(expected, scale, shift, relu, negative_slope)
    on_y = device.put(y)
    device.run("channel_affine", on_y, device.put(scale), device.put(shift), relu, negative_slope)
    assert_close(device.get(on_y), expected, dtype)


@pytest.mark.parametrize("slope", [0.0, 0.1], ids=["relu", "leaky"])
def test_relu_forward(device, dtype, slope):
    x = np.random.default_rng(12).standard_normal((2, 3, 4, 5)).astype(dtype)
    x.reshape(-1)[:4] = [np.nan, -np.inf, -0.0, 0.0]
    expected = x.copy()
    cpu.relu_forward(expected, expected, slope)
    y = device.put(garbage(x.shape, dtype))
    device.run("relu_forward", device.put(x), y, slope)
    np.testing.assert_array_equal(device.get(y), expected)  # no multiply-add to round


@pytest.mark.parametrize("slope", [0.0, 0.1], ids=["relu", "leaky"])
def test_relu_backward(device, dtype, slope):
    rng = np.random.default_rng(13)
    x, dy = (rng.standard_normal((2, 3, 4, 5)).astype(dtype) for _ in range(2))
    x.reshape(-1)[:3] = [np.nan, 0.0, -0.0]
    expected = garbage(x.shape, dtype)
    cpu.relu_backward(x, dy, expected, slope)
    dx = device.put(garbage(x.shape, dtype))
    device.run("relu_backward", device.put(x), device.put(dy), dx, slope)
    np.testing.assert_array_equal(device.get(dx), expected)


@pytest.mark.parametrize("centred", [True, False], ids=["centred", "divided"])
def test_channel_normalize(device, dtype, centred):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    mean = rng.standard_normal(3).astype(dtype) if centred else None
    std = rng.uniform(0.5, 2.0, 3).astype(dtype)
    expected = garbage(x.shape, dtype)
    cpu.channel_normalize(x, expected, mean, std)
    y = device.put(garbage(x.shape, dtype))
    on_mean = None if mean is None else device.put(mean)
    device.run("channel_normalize", device.put(x), y, on_mean, device.put(std))
    np.testing.assert_array_equal(device.get(y), expected)


@pytest.mark.parametrize("mode", ["in_place", "out_of_place", "no_dx"])
def test_channel_affine_backward(device, dtype, mode):
    """Sums in the CPU loop's order and precision: equal to the bit."""
    rng = np.random.default_rng(15)
    x, dy = (rng.standard_normal((3, 4, 2, 5)).astype(dtype) for _ in range(2))
    scale = rng.standard_normal(4).astype(dtype)
    expected_dx = dy.copy()
    expected_dot, expected_sum = np.empty(4), np.empty(4)
    cpu.channel_affine_backward(x, expected_dx, expected_dx, scale, expected_dot, expected_sum)
    on_dy = device.put(dy)
    dx = {"in_place": on_dy, "out_of_place": device.put(garbage(x.shape, dtype)), "no_dx": None}
    dot, total = device.put(garbage(4, np.float64)), device.put(garbage(4, np.float64))
    on_x, on_scale = device.put(x), device.put(scale)
    device.run("channel_affine_backward", on_x, on_dy, dx[mode], on_scale, dot, total)
    np.testing.assert_array_equal(device.get(dot), expected_dot)
    np.testing.assert_array_equal(device.get(total), expected_sum)
    if dx[mode] is not None:
        np.testing.assert_array_equal(device.get(dx[mode]), expected_dx)


@pytest.mark.parametrize(("relu", "slope", "shifted"), [(True, 0.1, True), (False, 0.0, False)])
def test_normalize_scale(device, dtype, relu, slope, shifted):
    """Both directions of the chain; the sums in the CPU loop's order, so to the bit."""
    rng = np.random.default_rng(16)
    y, d = (rng.standard_normal((3, 4, 2, 5)).astype(dtype) for _ in range(2))
    mean, scale, shift = (rng.standard_normal(4).astype(dtype) for _ in range(3))
    std = rng.uniform(0.5, 2.0, 4).astype(dtype)
    shift = shift if shifted else None
    expected_y, expected_saved = y.copy(), garbage(y.shape, dtype)
    cpu.normalize_scale_forward(expected_y, expected_saved, mean, std, scale, shift, relu, slope)
    on_y, saved = device.put(y), device.put(garbage(y.shape, dtype))
    operands = [device.put(a) if a is not None else None for a in (mean, std, scale, shift)]
    device.run("normalize_scale_forward", on_y, saved, *operands, relu, slope)
    np.testing.assert_array_equal(device.get(on_y), expected_y)
    np.testing.assert_array_equal(device.get(saved), expected_saved)

    expected_d, expected_sums = d.copy(), np.empty((2, 4))
    cpu.normalize_scale_backward(
        expected_y, expected_saved, expected_d, std, scale, relu, slope, *expected_sums
    )
    on_d, dot, total = (
        device.put(d),
        device.put(garbage(4, np.float64)),
        device.put(garbage(4, np.float64)),
    )
    device.run(
        "normalize_scale_backward",
        on_y,
        saved,
        on_d,
        operands[1],
        operands[2],
        relu,
        slope,
        dot,
        total,
    )
    np.testing.assert_array_equal(device.get(on_d), expected_d)
    np.testing.assert_array_equal(device.get(dot), expected_sums[0])
    np.testing.assert_array_equal(device.get(total), expected_sums[1])


# ---- layout -------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", [(3, 5, 2), (2, 7, 37)], ids=["few_images", "image_blocks"])
def test_batch_last_to_first(device, dtype, shape, with_bias):
    """Both twins against numpy's transpose (37 images: two full blocks and a partial
    one on the CPU); without a bias it is a copy, which keeps the sign of -0.0."""
    rng = np.random.default_rng(10)
    src = rng.standard_normal(shape).astype(dtype)
    src.reshape(-1)[::3] = -0.0
    bias = rng.standard_normal(shape[0]).astype(dtype) if with_bias else None
    expected = src.transpose(2, 0, 1) + bias[:, None] if with_bias else src.transpose(2, 0, 1)
    out_shape = (shape[2], shape[0], shape[1])
    on_cpu = garbage(out_shape, dtype)
    cpu.batch_last_to_first(src, on_cpu, bias)
    np.testing.assert_array_equal(on_cpu, expected)
    np.testing.assert_array_equal(np.signbit(on_cpu), np.signbit(expected))
    dst = device.put(garbage(out_shape, dtype))
    device.run(
        "batch_last_to_first", device.put(src), dst, None if bias is None else device.put(bias)
    )
    np.testing.assert_array_equal(device.get(dst), expected)
    np.testing.assert_array_equal(np.signbit(device.get(dst)), np.signbit(expected))


# ---- Winograd F(4x4, 3x3) ----------------------------------------------------------------
# (input shape, pad): the last tiles overhang the image, and pad 2 puts whole tile rows in it
WINOGRAD_INPUTS = {"overhanging_tiles": ((2, 3, 7, 9), (1, 1)), "pad_2": ((1, 2, 5, 6), (2, 0))}


@pytest.mark.parametrize("case", WINOGRAD_INPUTS)
def test_winograd_input(device, dtype, case):
    """Both twins add and subtract the same values in the same order: bit-identical."""
    x_shape, pad = WINOGRAD_INPUTS[case]
    n, c, h, w = x_shape
    tiles = ((h + 2 * pad[0] - 2 + 3) // 4, (w + 2 * pad[1] - 2 + 3) // 4)
    v_shape = (36, c, n * tiles[0] * tiles[1])
    x = np.random.default_rng(14).standard_normal(x_shape).astype(dtype)
    expected = garbage(v_shape, dtype)
    cpu.winograd_input(x, expected, pad, tiles)
    assert not np.isnan(expected).any()
    v = device.put(garbage(v_shape, dtype))
    device.run("winograd_input", device.put(x), v, pad, tiles)
    np.testing.assert_array_equal(device.get(v), expected)


#: (scale, shift, relu, negative_slope) given: a bias alone, nothing, a folded epilogue
WINOGRAD_EPILOGUES = {
    "bias": (False, True, False, 0.0),
    "none": (False, False, False, 0.0),
    "scale_leaky_relu": (True, True, True, 0.1),
    "scale_relu": (True, False, True, 0.0),
}


@pytest.mark.parametrize("epilogue", WINOGRAD_EPILOGUES)
@pytest.mark.parametrize("out_shape", [(2, 3, 7, 9), (1, 2, 4, 5)], ids=["overhang", "one_row"])
def test_winograd_output(device, dtype, out_shape, epilogue):
    n, k, oh, ow = out_shape
    count = n * ((oh + 3) // 4) * ((ow + 3) // 4)
    rng = np.random.default_rng(15)
    m = rng.standard_normal((36, k, count)).astype(dtype)
    scaled, shifted, relu, slope = WINOGRAD_EPILOGUES[epilogue]
    scale = rng.standard_normal(k).astype(dtype) if scaled else None
    shift = rng.standard_normal(k).astype(dtype) if shifted else None
    expected = garbage(out_shape, dtype)
    cpu.winograd_output(m, expected, scale, shift, relu, slope)
    assert not np.isnan(expected).any()
    y = device.put(garbage(out_shape, dtype))
    on_device = [None if a is None else device.put(a) for a in (scale, shift)]
    device.run("winograd_output", device.put(m), y, *on_device, relu, slope)
    if scaled:  # a device may fuse the multiply and add
        assert_close(device.get(y), expected, dtype)
    else:
        np.testing.assert_array_equal(device.get(y), expected)


# ---- stochastic pooling -------------------------------------------------------------------
# (input shape, kernel, stride): windows from p * stride, the last ones clipped
STOCHASTIC_POOLINGS = {
    "3x3_stride2_clipped": ((2, 3, 7, 8), (3, 3), (2, 2)),
    "2x2_stride2": ((1, 2, 6, 6), (2, 2), (2, 2)),
    "rectangular_overlapping": ((2, 2, 5, 7), (2, 3), (1, 2)),
}


def activations(shape, dtype, seed):
    """Non-negative, as after a ReLU, with a third of them exactly zero (so some windows
    are all zeros and the draw must fall on the first element reached)."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return np.maximum(x, 0) * (np.arange(x.size).reshape(shape) % 3 != 0)


@pytest.mark.parametrize("case", STOCHASTIC_POOLINGS)
def test_stochastic_pool_forward_train(device, dtype, case):
    x_shape, kernel, stride = STOCHASTIC_POOLINGS[case]
    y_shape = pooled_shape(x_shape, kernel, stride, (0, 0))
    x = activations(x_shape, dtype, seed=12)
    uniforms = (1.0 - np.random.default_rng(13).random(y_shape)).astype(dtype)
    expected_y, expected_at = garbage(y_shape, dtype), np.full(y_shape, -1, np.int32)
    cpu.stochastic_pool_forward_train(x, expected_y, uniforms, expected_at, kernel, stride)
    y, at = device.put(garbage(y_shape, dtype)), device.put(np.full(y_shape, -1, np.int32))
    device.run(
        "stochastic_pool_forward_train", device.put(x), y, device.put(uniforms), at, kernel, stride
    )
    np.testing.assert_array_equal(device.get(at), expected_at)
    np.testing.assert_array_equal(device.get(y), expected_y)


@pytest.mark.parametrize("case", STOCHASTIC_POOLINGS)
def test_stochastic_pool_forward_test(device, dtype, case):
    x_shape, kernel, stride = STOCHASTIC_POOLINGS[case]
    y_shape = pooled_shape(x_shape, kernel, stride, (0, 0))
    x = activations(x_shape, dtype, seed=14)
    expected = garbage(y_shape, dtype)
    cpu.stochastic_pool_forward_test(x, expected, kernel, stride)
    y = device.put(garbage(y_shape, dtype))
    device.run("stochastic_pool_forward_test", device.put(x), y, kernel, stride)
    assert_close(device.get(y), expected, dtype)


if not SIMULATED:  # cuBLAS, not a numba kernel: the simulator cannot run it

    @pytest.mark.gpu
    @pytest.mark.parametrize("transposes", [(False, False), (True, False), (False, True)])
    def test_matmul_accumulate(dtype, transposes):
        device = Device("gpu")
        rng = np.random.default_rng(11)
        m, k, n = 37, 19, 23
        a = rng.standard_normal((k, m) if transposes[0] else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if transposes[1] else (k, n)).astype(dtype)
        a, b = (a.T if transposes[0] else a), (b.T if transposes[1] else b)
        out = rng.standard_normal((m, n)).astype(dtype)
        expected = out.copy()
        cpu.matmul_accumulate(a, b, expected)
        on_device = device.put(out)
        device.run("matmul_accumulate", device.put(a), device.put(b), on_device)
        assert_close(device.get(on_device), expected, dtype)


def test_every_kernel_has_a_cuda_twin():
    """No kernel reaches a device without its twin (and so without the cases above)."""
    import inspect

    from caffelite import kernels
    from caffelite.kernels import cuda

    contract = [
        name
        for name, function in inspect.getmembers(kernels, inspect.isfunction)
        if function.__module__ == kernels.__name__ and name != "implementation"
    ]
    assert len(contract) >= 13
    for name in contract:
        for module in (cpu, cuda):
            twin = getattr(module, name, None)
            assert callable(twin), f"{module.__name__} has no {name}"
            assert list(inspect.signature(twin).parameters) == list(
                inspect.signature(getattr(kernels, name)).parameters
            ), name


# ---- refusals ----------------------------------------------------------------------------
def test_non_contiguous_output_is_refused(device):
    """A strided output would be copied by the flattening and the kernel's writes lost."""
    y = device.put(np.ones((2, 3, 4, 6), np.float32))[..., ::2]
    ones = device.put(np.ones(3, np.float32))
    with pytest.raises(CaffeliteError, match="C-contiguous"):
        device.run("channel_affine", y, ones, ones, False, 0.0)
