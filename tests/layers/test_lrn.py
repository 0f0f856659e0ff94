"""LRN: both normalisation regions against loop references (Caffe's test formulas),
gradients, parameter defaults and configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def f32(v) -> float:
    return float(np.float32(v))


def across_reference(size, alpha, beta, k):
    """scale = k + alpha/size * sum of x^2 over channels c-pad..c+pad inside the blob."""
    alpha, beta, k = f32(alpha), f32(beta), f32(k)

    def ref(x):
        n_, c_, h_, w_ = x.shape
        pad = (size - 1) // 2
        out = np.empty_like(x)
        for n, c, h, w in np.ndindex(x.shape):
            total = 0.0
            for cc in range(max(c - pad, 0), min(c + pad + 1, c_)):
                total += x[n, cc, h, w] ** 2
            out[n, c, h, w] = x[n, c, h, w] * (k + alpha / size * total) ** -beta
        return out

    return ref


def within_reference(size, alpha, beta):
    """scale = 1 + alpha/size^2 * sum of x^2 over the size x size window, clipped to the image."""
    alpha, beta = f32(alpha), f32(beta)

    def ref(x):
        n_, c_, h_, w_ = x.shape
        pad = (size - 1) // 2
        out = np.empty_like(x)
        for n, c, h, w in np.ndindex(x.shape):
            total = 0.0
            for hh in range(max(h - pad, 0), min(h + pad + 1, h_)):
                for ww in range(max(w - pad, 0), min(w + pad + 1, w_)):
                    total += x[n, c, hh, ww] ** 2
            out[n, c, h, w] = x[n, c, h, w] * (1.0 + alpha / size**2 * total) ** -beta
        return out

    return ref


def inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


ACROSS = [
    # (shape, local_size, alpha, beta, k)
    ((2, 7, 3, 3), 5, 1.0, 0.75, 1.0),
    ((2, 4, 2, 3), 3, 0.5, 0.6, 2.0),
    ((1, 3, 3, 2), 7, 2.0, 1.5, 0.7),  # window wider than the channel count
    ((2, 5, 2, 2), 1, 1.0, 0.75, 1.0),
]


@pytest.mark.parametrize(("shape", "size", "alpha", "beta", "k"), ACROSS)
def test_across_channels(shape, size, alpha, beta, k):
    check_layer(
        f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}',
        [inputs(shape)],
        reference=across_reference(size, alpha, beta, k),
    )


WITHIN = [
    ((2, 2, 5, 5), 3, 1.0, 0.75),
    ((1, 3, 4, 6), 5, 0.8, 0.5),
    ((2, 1, 3, 4), 7, 1.5, 1.2),  # window wider than the image
]


@pytest.mark.parametrize(("shape", "size", "alpha", "beta"), WITHIN)
def test_within_channel(shape, size, alpha, beta):
    check_layer(
        f'type: "LRN" lrn_param {{ norm_region: WITHIN_CHANNEL local_size: {size} '
        f"alpha: {alpha} beta: {beta} }}",
        [inputs(shape, seed=1)],
        reference=within_reference(size, alpha, beta),
    )


def test_defaults_are_caffes():
    x = inputs((2, 6, 2, 2), seed=2)
    layer, bottom, top = build_layer('type: "LRN"', [x])
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1.0, f32(0.75), 1.0)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, across_reference(5, 1.0, 0.75, 1.0)(x), rtol=1e-12)


def test_within_channel_ignores_k():
    """Caffe's WITHIN_CHANNEL Power layer uses shift 1: k has no effect there."""
    x = inputs((1, 2, 4, 4), seed=3)
    text = 'type: "LRN" lrn_param {{ norm_region: WITHIN_CHANNEL local_size: 3 k: {} }}'
    _, _, top_a = check_layer(text.format(1), [x], gradient=False)
    _, _, top_b = check_layer(text.format(5), [x], gradient=False)
    np.testing.assert_array_equal(top_a[0].data, top_b[0].data)


def test_float32():
    x = inputs((2, 5, 3, 3), seed=4)
    layer, bottom, top = build_layer('type: "LRN"', [x], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, across_reference(5, 1.0, 0.75, 1.0)(x), rtol=2e-6)


def test_reshape_follows_bottom():
    layer, bottom, top = build_layer(
        'type: "LRN" lrn_param { local_size: 3 }', [inputs((1, 3, 2, 2))]
    )
    bottom[0].reshape(2, 4, 3, 1)
    bottom[0].data[...] = inputs((2, 4, 3, 1), seed=5)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(
        top[0].data, across_reference(3, 1.0, 0.75, 1.0)(bottom[0].data), rtol=1e-12
    )


@pytest.mark.parametrize("size", [4, 0, 2])
def test_even_local_size_is_rejected(size):
    with pytest.raises(CaffeliteError, match=f"local_size must be odd, got {size}"):
        build_layer(f'type: "LRN" lrn_param {{ local_size: {size} }}', [inputs((1, 3, 2, 2))])


def test_needs_four_axes():
    with pytest.raises(CaffeliteError, match=r"4-axis bottom.*\(2, 3\)"):
        build_layer('type: "LRN"', [inputs((2, 3))])


def test_in_place_is_rejected():
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text('type: "LRN"'))
        blob = Blob(1, 3, 2, 2)
        with pytest.raises(CaffeliteError, match="in-place"):
            layer.setup_layer([blob], [blob])
