"""Softmax: forward against a plain numpy reference on several axes, gradients, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def softmax_reference(x, axis=1):
    """Softmax by explicit loops over every position of the other axes."""
    axis = axis % x.ndim
    out = np.empty_like(x)
    moved = np.moveaxis(x, axis, -1)
    result = np.moveaxis(out, axis, -1)
    for index in np.ndindex(moved.shape[:-1]):
        row = [float(v) for v in moved[index]]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        total = sum(exps)
        result[index] = [e / total for e in exps]
    return out


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((2, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), 2), ((2, 3, 4), -1), ((4, 3), 0)],
)
def test_forward_and_gradient(shape, axis):
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer(
        f'type: "Softmax" softmax_param {{ axis: {axis} }}',
        [x],
        reference=lambda x: softmax_reference(x, axis),
    )


def test_default_axis_is_one():
    x = np.random.default_rng(1).standard_normal((3, 4, 2))
    layer, bottom, top = build_layer('type: "Softmax"', [x])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(top[0].data, softmax_reference(x, 1), rtol=1e-12)


def test_stable_for_huge_inputs():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    layer, bottom, top = build_layer('type: "Softmax"', [x], dtype=np.float32)
    layer.forward(bottom, top)
    assert np.all(np.isfinite(top[0].data))
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(top[0].data[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(top[0].data[1], 1 / 3, rtol=1e-6)


def test_in_place():
    x = np.random.default_rng(2).standard_normal((3, 4))
    dy = np.random.default_rng(3).standard_normal((3, 4))
    layer, bottom, top = build_layer('type: "Softmax"', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    with backend.precision(np.float64):
        blob = Blob(3, 4)
        blob.data[...] = x
        inplace = create_layer(layer_param_from_text('type: "Softmax"'))
        inplace.setup_layer([blob], [blob])
    inplace.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-15)
    blob.diff[...] = dy
    inplace.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-13, atol=1e-15)


def test_reshape_to_new_batch():
    layer, bottom, top = build_layer('type: "Softmax"', [np.zeros((2, 3))])
    bottom[0].reshape(5, 3)
    x = np.random.default_rng(4).standard_normal((5, 3))
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, softmax_reference(x), rtol=1e-12)


def test_bad_axis_is_an_error():
    with pytest.raises(
        CaffeliteError, match=r"softmax.*axis 3 is out of range for a bottom of shape \(2, 3\)"
    ):
        build_layer('type: "Softmax" softmax_param { axis: 3 }', [np.zeros((2, 3))])
