"""Fillers: the statistics of each random filler and Caffe's exact bilinear kernel.

Sample sizes are large enough that the tolerances (several standard errors) are
tight: a wrong scale (e.g. sqrt(2/n) instead of sqrt(3/n)) fails every check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.fillers import fill
from caffelite.proto import caffe_pb2
from caffelite.rng import set_random_seed


def _param(text: str):
    return text_format.Parse(text, caffe_pb2.FillerParameter())


def _filled(text: str, *shape, dtype=np.float64, seed=1234):
    set_random_seed(seed)
    with backend.precision(dtype):
        blob = Blob(*shape)
    fill(blob, _param(text))
    return blob.data.copy()


def _assert_std(values, std, n_sigma=6):
    """Sample std within ``n_sigma`` standard errors (std / sqrt(2n)) of ``std``."""
    n = values.size
    assert abs(values.std() - std) < n_sigma * std / math.sqrt(2 * n), (values.std(), std)


def _assert_mean(values, mean, std, n_sigma=6):
    assert abs(values.mean() - mean) < n_sigma * std / math.sqrt(values.size), (values.mean(), mean)


def test_constant():
    values = _filled("type: 'constant' value: 2.5", 3, 4, 5)
    np.testing.assert_array_equal(values, 2.5)


def test_constant_is_the_default_type_and_value():
    values = _filled("", 7)
    np.testing.assert_array_equal(values, 0.0)


def test_constant_float32_storage():
    values = _filled("type: 'constant' value: 0.1", 4, dtype=np.float32)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.float32(0.1))


def test_uniform():
    values = _filled("type: 'uniform' min: -2 max: 3", 200, 500)
    assert values.min() >= -2 and values.max() <= 3
    assert values.min() < -1.99 and values.max() > 2.99
    _assert_mean(values, 0.5, 5 / math.sqrt(12))
    _assert_std(values, 5 / math.sqrt(12))


def test_uniform_default_range():
    values = _filled("type: 'uniform'", 10000)
    assert values.min() >= 0 and values.max() <= 1
    _assert_mean(values, 0.5, 1 / math.sqrt(12))


def test_gaussian():
    values = _filled("type: 'gaussian' mean: 1.5 std: 0.3", 200, 500)
    _assert_mean(values, 1.5, 0.3)
    _assert_std(values, 0.3)


def test_gaussian_sparse():
    # 10 non-zeros expected per output (row of 100): probability 10 / 100
    values = _filled("type: 'gaussian' std: 2 sparse: 10", 100, 2000)
    non_zero = values != 0
    p = 0.1
    fraction = non_zero.mean()
    assert abs(fraction - p) < 6 * math.sqrt(p * (1 - p) / values.size)
    _assert_std(values[non_zero], 2.0)


def test_gaussian_sparse_on_one_axis_blob():
    """Caffe only needs one axis (the outputs); a 1-d blob is fine."""
    values = _filled("type: 'gaussian' sparse: 1", 10000)
    assert abs((values != 0).mean() - 1e-4) < 1e-3


def test_gaussian_sparse_zero_gives_zeros():
    values = _filled("type: 'gaussian' sparse: 0", 20, 30)
    np.testing.assert_array_equal(values, 0.0)


def test_positive_unitball():
    values = _filled("type: 'positive_unitball'", 50, 3, 4, 5)
    assert np.all(values >= 0) and np.all(values <= 1)
    np.testing.assert_allclose(values.reshape(50, -1).sum(axis=1), 1.0, rtol=1e-12)
    # not constant rows: the values are random
    assert values.reshape(50, -1).std(axis=1).min() > 0


def _fans(shape):
    count = math.prod(shape)
    return count // shape[0], count // shape[1]


@pytest.mark.parametrize(
    ("norm", "pick"),
    [
        ("", lambda fi, fo: fi),
        ("variance_norm: FAN_IN", lambda fi, fo: fi),
        ("variance_norm: FAN_OUT", lambda fi, fo: fo),
        ("variance_norm: AVERAGE", lambda fi, fo: (fi + fo) / 2),
    ],
)
def test_xavier(norm, pick):
    shape = (64, 8, 5, 5)  # fan_in 200, fan_out 1600
    n = pick(*_fans(shape))
    scale = math.sqrt(3.0 / n)
    values = _filled(f"type: 'xavier' {norm}", *shape)
    assert np.abs(values).max() <= scale
    assert np.abs(values).max() > 0.99 * scale
    _assert_std(values, scale / math.sqrt(3))  # uniform(-s, s) has std s / sqrt(3)


def test_xavier_scales_are_distinct():
    """The three variance norms give clearly different scales for this shape."""
    shape = (64, 8, 5, 5)
    maxima = [
        np.abs(_filled(f"type: 'xavier' variance_norm: {n}", *shape)).max()
        for n in ("FAN_IN", "FAN_OUT", "AVERAGE")
    ]
    assert maxima[0] > maxima[2] > maxima[1]


@pytest.mark.parametrize(
    ("norm", "pick"),
    [
        ("", lambda fi, fo: fi),
        ("variance_norm: FAN_OUT", lambda fi, fo: fo),
        ("variance_norm: AVERAGE", lambda fi, fo: (fi + fo) / 2),
    ],
)
def test_msra(norm, pick):
    shape = (96, 16, 3, 3)  # fan_in 144, fan_out 864
    n = pick(*_fans(shape))
    values = _filled(f"type: 'msra' {norm}", *shape)
    _assert_mean(values, 0.0, math.sqrt(2.0 / n))
    _assert_std(values, math.sqrt(2.0 / n))


def test_fans_of_a_matrix_and_a_vector():
    # InnerProduct weights (num_output, input): fan_in = input, fan_out = num_output
    values = _filled("type: 'msra'", 300, 400)
    _assert_std(values, math.sqrt(2.0 / 400))
    values = _filled("type: 'msra' variance_norm: FAN_OUT", 300, 400)
    _assert_std(values, math.sqrt(2.0 / 300))
    # a 1-d blob: fan_in = 1, fan_out = count
    values = _filled("type: 'xavier' variance_norm: FAN_OUT", 30000)
    assert np.abs(values).max() <= math.sqrt(3.0 / 30000)


def _caffe_bilinear(shape):
    """Caffe's BilinearFiller loop, element by element."""
    num, channels, height, width = shape
    f = math.ceil(width / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    out = np.empty(math.prod(shape))
    for i in range(out.size):
        x = i % width
        y = (i // width) % height
        out[i] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return out.reshape(shape)


def test_bilinear_4x4_exact():
    values = _filled("type: 'bilinear'", 2, 3, 4, 4)
    np.testing.assert_allclose(values, _caffe_bilinear((2, 3, 4, 4)), rtol=0, atol=1e-15)
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(values[1, 2], np.outer(ramp, ramp), rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", [2, 3, 5, 6, 8])
def test_bilinear_other_sizes_match_caffe(size):
    values = _filled("type: 'bilinear'", 1, 2, size, size)
    np.testing.assert_allclose(values, _caffe_bilinear((1, 2, size, size)), atol=1e-15)


def test_bilinear_needs_square_4d():
    with pytest.raises(CaffeliteError, match="square"):
        _filled("type: 'bilinear'", 1, 1, 4, 3)
    with pytest.raises(CaffeliteError, match="4-d"):
        _filled("type: 'bilinear'", 4, 4)


def test_unknown_filler():
    with pytest.raises(CaffeliteError, match="unknown filler type 'nope'"):
        _filled("type: 'nope'", 3)


def test_same_seed_same_values():
    a = _filled("type: 'gaussian'", 5, 5, seed=7)
    b = _filled("type: 'gaussian'", 5, 5, seed=7)
    c = _filled("type: 'gaussian'", 5, 5, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_sparse_needs_an_axis():
    with pytest.raises(CaffeliteError, match="at least 1 axis"):
        _filled("type: 'gaussian' sparse: 1")
