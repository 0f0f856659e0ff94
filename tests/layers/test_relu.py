"""ReLU: forward against numpy, gradients (away from the kink), leaky slope, in place."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_gradient, check_layer, layer_param_from_text


def _inputs(shape, seed=0):
    """Random inputs kept at least 0.05 away from the kink at 0."""
    x = np.random.default_rng(seed).uniform(-1, 1, size=shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


def _reference(slope):
    slope = float(np.float32(slope))  # negative_slope is a float field

    def ref(x):
        out = x.copy()
        for i in np.ndindex(x.shape):
            if x[i] <= 0:
                out[i] = slope * x[i]
        return out

    return ref


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.5, 2.0, -0.5])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), (3, 4)])
def test_forward_and_gradient(slope, shape):
    check_layer(
        f'type: "ReLU" relu_param {{ negative_slope: {slope} }}',
        [_inputs(shape)],
        reference=_reference(slope),
        kink=0.0,
        kink_range=1e-3,
    )


def test_gradient_near_kink_is_skipped_not_wrong():
    x = np.random.default_rng(3).standard_normal((4, 6))
    check_layer('type: "ReLU"', [x], reference=_reference(0.0), kink=0.0, kink_range=1e-3)


def test_zero_maps_to_zero_with_slope_gradient():
    layer, bottom, top = build_layer(
        'type: "ReLU" relu_param { negative_slope: 0.25 }', [np.array([-2.0, 0.0, 3.0])]
    )
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [-0.5, 0.0, 3.0])
    top[0].diff[...] = [1.0, 1.0, 1.0]
    layer.backward(top, [True], bottom)
    # at exactly 0 Caffe uses the negative slope (mask is x > 0)
    np.testing.assert_array_equal(bottom[0].diff, [0.25, 0.25, 1.0])


def _in_place(slope, x):
    with backend.precision(np.float64):
        layer = create_layer(
            layer_param_from_text(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}')
        )
        blob = Blob(x.shape)
        blob.data[...] = x
        layer.setup_layer([blob], [blob])
    return layer, blob


@pytest.mark.parametrize("slope", [0.0, 0.1, 1.5])
def test_in_place_forward_backward(slope):
    x = _inputs((3, 4, 5), seed=1)
    layer, blob = _in_place(slope, x)
    layer.reshape([blob], [blob])
    layer.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, _reference(slope)(x), rtol=1e-15)
    dy = np.random.default_rng(2).standard_normal(x.shape)
    blob.diff[...] = dy
    layer.backward([blob], [True], [blob])
    expected = dy * np.where(x > 0, 1.0, np.float32(slope))
    np.testing.assert_allclose(blob.diff, expected, rtol=1e-15)


def test_in_place_forward_is_idempotent_in_data():
    """Running forward twice in place gives max(x,0) again for slope 0 (a fixed point)."""
    x = _inputs((10,), seed=4)
    layer, blob = _in_place(0.0, x)
    layer.forward([blob], [blob])
    layer.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, np.maximum(x, 0))


def test_in_place_matches_out_of_place_gradient():
    x = _inputs((2, 3, 4), seed=5)
    dy = np.random.default_rng(6).standard_normal(x.shape)
    layer, bottom, top = build_layer('type: "ReLU" relu_param { negative_slope: 0.1 }', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    layer2, blob = _in_place(0.1, x)
    layer2.forward([blob], [blob])
    blob.diff[...] = dy
    layer2.backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, bottom[0].diff)
    np.testing.assert_array_equal(blob.data, top[0].data)


def test_gradient_check_helper_directly():
    layer, bottom, top = build_layer('type: "ReLU"', [_inputs((5, 5), seed=7)])
    check_gradient(layer, bottom, top, kink=0.0, kink_range=1e-3)


def test_no_propagate_leaves_bottom_diff():
    layer, bottom, top = build_layer('type: "ReLU"', [_inputs((4,))])
    layer.forward(bottom, top)
    bottom[0].diff[...] = 7.0
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)


def test_float32_keeps_dtype():
    layer, bottom, top = build_layer('type: "ReLU"', [_inputs((3, 3))], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32


def test_reshape_follows_bottom():
    layer, bottom, top = build_layer(
        'type: "ReLU" relu_param { negative_slope: 0.2 }', [_inputs((2, 3))]
    )
    bottom[0].reshape(4, 5)
    bottom[0].data[...] = _inputs((4, 5), seed=9)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (4, 5)
    np.testing.assert_allclose(top[0].data, _reference(0.2)(bottom[0].data), rtol=1e-15)
