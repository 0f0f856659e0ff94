"""The CPU elementwise kernels against numpy: ReLU, the per-channel normalisation and
the per-channel affine map's gradients, in place and not, in both dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import kernels

DTYPES = [np.float32, np.float64]


def _values(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[:6] = [np.nan, -np.inf, np.inf, 0.0, -0.0, 1e-40]  # 1e-40: a float32 denormal
    return x


# ---- ReLU ---------------------------------------------------------------------------------
def _caffe_relu(x, slope):
    """Caffe's std::max(x, 0) + slope * std::min(x, 0), one element at a time."""
    out = np.empty_like(x)
    zero = x.dtype.type(0)
    for i, v in np.ndenumerate(x):
        positive = zero if v < zero else v
        out[i] = (
            positive if slope == 0 else positive + x.dtype.type(slope) * (zero if zero < v else v)
        )
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5])
@pytest.mark.parametrize("in_place", [True, False], ids=["in_place", "out_of_place"])
def test_relu_forward(dtype, slope, in_place):
    x = _values((3, 5, 7, 11), dtype)
    expected = _caffe_relu(x, slope)
    y = x if in_place else np.full_like(x, 7.0)
    source = x.copy()
    kernels.relu_forward(x, y, slope)
    np.testing.assert_array_equal(y, expected)
    if not in_place:
        np.testing.assert_array_equal(x, source)  # the input is left alone


def test_relu_forward_zero_slope_is_the_maximum_alone():
    """``-inf`` gives 0 (numpy's maximum), not Caffe's ``0 * -inf`` = NaN."""
    x = np.array([-np.inf, -1.0, np.nan, 2.0], np.float32)
    kernels.relu_forward(x, x, 0.0)
    np.testing.assert_array_equal(x, [0.0, 0.0, np.nan, 2.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("slope", [0.0, 0.25])
@pytest.mark.parametrize("in_place", [True, False], ids=["in_place", "out_of_place"])
def test_relu_backward(dtype, slope, in_place):
    x = _values((2, 3, 40_000), dtype)  # more than one task of the parallel loop
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    s = dtype(slope)
    factor = (x > 0).astype(dtype) + s * (x <= 0).astype(dtype)  # Caffe's, 0 for NaN
    expected = dy * factor
    dx = dy if in_place else np.full_like(dy, 7.0)
    kernels.relu_backward(x, dy, dx, slope)
    np.testing.assert_array_equal(dx, expected)
    assert dx.reshape(-1)[0] == 0  # x is NaN there


# ---- channel_normalize ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("centred", [True, False], ids=["centred", "divided"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (3, 2, 1, 2, 3)])
def test_channel_normalize(dtype, centred, shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    mean = rng.standard_normal(shape[1]).astype(dtype) if centred else None
    std = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
    broadcast = (1, shape[1]) + (1,) * (len(shape) - 2)
    centre = x - mean.reshape(broadcast) if centred else x
    expected = centre / std.reshape(broadcast)  # subtract, then divide: Caffe's two roundings
    y = np.full_like(x, 7.0)
    kernels.channel_normalize(x, y, mean, std)
    np.testing.assert_array_equal(y, expected)
    kernels.channel_normalize(x, x, mean, std)
    np.testing.assert_array_equal(x, expected)


# ---- channel_affine_backward ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mode", ["in_place", "out_of_place", "no_dx"])
@pytest.mark.parametrize("shape", [(3, 4, 6, 5), (5, 3), (2, 70, 3000)])
def test_channel_affine_backward(dtype, mode, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    scale = rng.standard_normal(shape[1]).astype(dtype)
    broadcast = (1, shape[1]) + (1,) * (len(shape) - 2)
    axes = (0,) + tuple(range(2, len(shape)))
    expected_dx = dy * scale.reshape(broadcast)
    expected_dot = (dy.astype(np.float64) * x.astype(np.float64)).sum(axis=axes)
    expected_sum = dy.astype(np.float64).sum(axis=axes)
    original_dy = dy.copy()
    dx = {"in_place": dy, "out_of_place": np.full_like(dy, 7.0), "no_dx": None}[mode]
    scale_diff, shift_diff = np.full(shape[1], 7.0), np.full(shape[1], 7.0)
    kernels.channel_affine_backward(x, dy, dx, scale, scale_diff, shift_diff)
    if dx is not None:
        np.testing.assert_array_equal(dx, expected_dx)
    if mode != "in_place":
        np.testing.assert_array_equal(dy, original_dy)
    # float64 sums of float32 products: the products' rounding is all that differs
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    scale_of = np.abs(dy.astype(np.float64) * x).sum(axis=axes)
    np.testing.assert_array_less(np.abs(scale_diff - expected_dot), rtol * scale_of + 1e-300)
    np.testing.assert_allclose(shift_diff, expected_sum, rtol=1e-12, atol=1e-12)


# ---- BatchNorm -> Scale -> ReLU in one pass ---------------------------------------------------
def _chain_operands(dtype, shape, seed=4):
    rng = np.random.default_rng(seed)
    c = shape[1]
    y = rng.standard_normal(shape).astype(dtype)
    mean, scale, shift = (rng.standard_normal(c).astype(dtype) for _ in range(3))
    std = rng.uniform(0.5, 2.0, c).astype(dtype)
    return y, mean, std, scale, shift


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shifted", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(("relu", "slope"), [(True, 0.0), (True, 0.2), (False, 0.0)])
def test_normalize_scale_equals_the_three_kernels(dtype, shifted, relu, slope):
    """Forward and backward to the bit against the layers' own kernels in sequence."""
    shape = (2, 5, 7, 9)
    y, mean, std, scale, shift = _chain_operands(dtype, shape)
    shift = shift if shifted else None
    # the layers, one pass each: BatchNorm, Scale (keeping its input), ReLU
    expected = y.copy()
    kernels.channel_normalize(expected, expected, mean, std)
    expected_saved = expected.copy()
    if shifted:
        kernels.channel_affine(expected, scale, shift, False, 0.0)
    else:
        expected *= scale.reshape(1, -1, 1, 1)
    if relu:
        kernels.relu_forward(expected, expected, slope)
    saved = np.full_like(y, 7.0)
    kernels.normalize_scale_forward(y, saved, mean, std, scale, shift, relu, slope)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(saved, expected_saved)

    d = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    expected_d = d.copy()
    if relu:
        kernels.relu_backward(y, expected_d, expected_d, slope)
    expected_sums = np.empty((2, shape[1]))
    kernels.channel_affine_backward(saved, expected_d, expected_d, scale, *expected_sums)
    kernels.channel_normalize(expected_d, expected_d, None, std)
    sums = np.full((2, shape[1]), 7.0)
    kernels.normalize_scale_backward(y, saved, d, std, scale, relu, slope, sums[0], sums[1])
    np.testing.assert_array_equal(d, expected_d)
    np.testing.assert_array_equal(sums, expected_sums)
