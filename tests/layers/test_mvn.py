"""MVN: mean (and variance) normalisation per image or per channel, against a loop
reference; gradients; Caffe's eps on the standard deviation; legacy 4-axis top; errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def mvn_reference(normalize_variance=True, across_channels=False, eps=1e-9):
    eps = float(np.float32(eps))

    def ref(x):
        shape4 = tuple(x.shape) + (1,) * (4 - x.ndim)
        x4 = x.reshape(shape4)
        out = np.empty(shape4)
        n_, c_ = shape4[:2]
        groups = (
            [[(n, c) for c in range(c_)] for n in range(n_)]
            if across_channels
            else [[(n, c)] for n in range(n_) for c in range(c_)]
        )
        for group in groups:
            values = [float(v) for n, c in group for v in x4[n, c].ravel()]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            for n, c in group:
                centred = x4[n, c] - mean
                out[n, c] = centred / (std + eps) if normalize_variance else centred
        return out

    return ref


def data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 2 + rng.uniform(-3, 3)


CONFIGS = [(True, False), (True, True), (False, False), (False, True)]


@pytest.mark.parametrize(("normalize_variance", "across_channels"), CONFIGS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 3, 1)])
def test_forward_and_gradient(shape, normalize_variance, across_channels):
    text = (
        f'type: "MVN" mvn_param {{ normalize_variance: {str(normalize_variance).lower()} '
        f"across_channels: {str(across_channels).lower()} }}"
    )
    check_layer(text, [data(shape)], reference=mvn_reference(normalize_variance, across_channels))


def test_defaults():
    x = data((2, 3, 2, 2), seed=1)
    layer, bottom, top = build_layer('type: "MVN"', [x])
    assert layer.normalize_variance and not layer.across_channels
    assert layer.eps == float(np.float32(1e-9))
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, mvn_reference()(x), rtol=1e-12)
    np.testing.assert_allclose(top[0].data.mean(axis=(2, 3)), 0, atol=1e-14)
    np.testing.assert_allclose(top[0].data.std(axis=(2, 3)), 1, rtol=1e-8)


def test_eps_is_added_to_the_standard_deviation():
    x = data((1, 2, 3, 3), seed=2)
    check_layer(
        'type: "MVN" mvn_param { eps: 0.5 }', [x], reference=mvn_reference(eps=0.5), gradient=False
    )


def test_constant_group_gives_zero():
    x = np.full((1, 2, 2, 2), 3.0)
    layer, bottom, top = build_layer('type: "MVN"', [x])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, 0.0)


@pytest.mark.parametrize(
    ("shape", "top_shape"), [((4, 6), (4, 6, 1, 1)), ((2, 3, 5), (2, 3, 5, 1))]
)
def test_top_gets_legacy_four_axis_shape(shape, top_shape):
    layer, _, top = check_layer(
        'type: "MVN" mvn_param { across_channels: true }',
        [data(shape, 3)],
        reference=lambda x: mvn_reference(True, True)(x),
    )
    assert top[0].shape == top_shape


def test_reshape_follows_bottom():
    layer, bottom, top = build_layer('type: "MVN"', [data((1, 2, 2, 2))])
    bottom[0].reshape(2, 3, 4, 1)
    bottom[0].data[...] = data((2, 3, 4, 1), seed=4)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, mvn_reference()(bottom[0].data), rtol=1e-12)


def test_float32():
    layer, bottom, top = build_layer('type: "MVN"', [data((2, 2, 3, 3))], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32


def test_more_than_four_axes_is_rejected():
    with pytest.raises(CaffeliteError, match=r"at most 4 axes, got shape \(1, 2, 2, 2, 2\)"):
        build_layer('type: "MVN"', [np.ones((1, 2, 2, 2, 2))])


@pytest.mark.parametrize(("normalize_variance", "across_channels"), CONFIGS)
def test_in_place_matches_out_of_place(normalize_variance, across_channels):
    text = (
        f'type: "MVN" mvn_param {{ normalize_variance: {str(normalize_variance).lower()} '
        f"across_channels: {str(across_channels).lower()} }}"
    )
    x = data((2, 3, 2, 2), seed=5)
    dy = np.random.default_rng(6).standard_normal(x.shape)
    layer, bottom, top = build_layer(text, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    with backend.precision(np.float64):
        twin = create_layer(layer_param_from_text(text))
        blob = Blob(x.shape)
        blob.data[...] = x
        twin.setup_layer([blob], [blob])
    twin.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-14)
    blob.diff[...] = dy
    twin.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-12, atol=1e-15)
