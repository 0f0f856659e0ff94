"""SPP: Caffe's pyramid windows, MAX and AVE against a loop reference, gradients."""

import math

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.layers.spp import pyramid_window
from caffelite.testing import build_layer, check_layer


def pool_reference(x, kernel, pad, method):
    """Caffe's pooling with stride = kernel: ceil-rounded bins, AVE divides by the
    window clipped to the padded image."""
    n, c, h, w = x.shape
    sizes = []
    for size, k, p in zip((h, w), kernel, pad, strict=True):
        pooled = math.ceil((size + 2 * p - k) / k) + 1
        if p and (pooled - 1) * k >= size + p:
            pooled -= 1
        sizes.append(pooled)
    y = np.zeros((n, c, *sizes))
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            r0, c0 = i * kernel[0] - pad[0], j * kernel[1] - pad[1]
            r1, c1 = min(r0 + kernel[0], h + pad[0]), min(c0 + kernel[1], w + pad[1])
            window = x[:, :, max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)]
            if method == "MAX":
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                y[:, :, i, j] = window.sum(axis=(2, 3)) / ((r1 - r0) * (c1 - c0))
    return y


def spp_reference(x, height, method):
    levels = []
    for level in range(height):
        kernel, pad = pyramid_window(level, *x.shape[2:])
        levels.append(pool_reference(x, kernel, pad, method).reshape(x.shape[0], -1))
    return np.concatenate(levels, axis=1)


def text(height, method):
    return f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}'


def test_pyramid_windows_follow_caffe():
    assert pyramid_window(0, 13, 13) == ((13, 13), (0, 0))
    assert pyramid_window(1, 13, 13) == ((7, 7), (1, 1))
    assert pyramid_window(2, 13, 10) == ((4, 3), (2, 1))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (1, 2, 8, 8)])
def test_forward_and_gradients(method, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    layer, _, top = check_layer(
        text(3, method), [x], reference=lambda x: spp_reference(x, 3, method)
    )
    assert top[0].shape == (shape[0], shape[1] * (1 + 4 + 16))


def test_fixed_length_whatever_the_input_size():
    layer, bottom, top = build_layer(text(2, "MAX"), [np.zeros((2, 3, 9, 9))])
    assert top[0].shape == (2, 15)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 16))
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (2, 15)
    np.testing.assert_allclose(top[0].data, spp_reference(x, 2, "MAX"), rtol=1e-6)


def test_pyramid_height_one_is_global_pooling_with_4d_top():
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4))
    _, _, top = check_layer(
        text(1, "AVE"), [x], reference=lambda x: x.mean(axis=(2, 3), keepdims=True)
    )
    assert top[0].shape == (2, 3, 1, 1)


def test_errors():
    with pytest.raises(CaffeliteError, match="pyramid_height must be positive"):
        build_layer(text(0, "MAX"), [np.zeros((1, 1, 4, 4))])
    with pytest.raises(CaffeliteError, match="4 axes"):
        build_layer(text(2, "MAX"), [np.zeros((1, 4, 4))])
