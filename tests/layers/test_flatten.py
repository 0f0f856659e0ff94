"""Flatten: shapes for axis/end_axis, memory shared with the bottom, identity gradient."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


@pytest.mark.parametrize(
    ("params", "shape", "expected"),
    [
        ("", (2, 3, 4, 5), (2, 60)),
        ("axis: 2", (2, 3, 4, 5), (2, 3, 20)),
        ("end_axis: 2", (2, 3, 4, 5), (2, 12, 5)),
        ("axis: 0 end_axis: -1", (2, 3, 4, 5), (120,)),
        ("axis: -2 end_axis: -1", (2, 3, 4, 5), (2, 3, 20)),
        ("axis: 1 end_axis: 1", (2, 3, 4), (2, 3, 4)),
        ("", (6, 3), (6, 3)),
    ],
)
def test_forward_and_gradient(params, shape, expected):
    x = np.random.default_rng(0).standard_normal(shape)
    layer, bottom, top = check_layer(
        f'type: "Flatten" flatten_param {{ {params} }}',
        [x],
        reference=lambda x: x.reshape(expected),
    )
    assert top[0].shape == expected


def test_top_views_bottom_data():
    x = np.arange(24.0).reshape(2, 3, 4)
    layer, bottom, top = build_layer('type: "Flatten"', [x])
    layer.forward(bottom, top)
    bottom[0].data[1, 2, 3] = -7.0
    assert top[0].data[1, 11] == -7.0
    assert np.shares_memory(top[0].data, bottom[0].data)


def test_backward_shares_diff_and_gives_identity():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    dy = np.random.default_rng(2).standard_normal((2, 12))
    layer, bottom, top = build_layer('type: "Flatten"', [x])
    layer.forward(bottom, top)
    bottom[0].diff[...] = 99.0
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy.reshape(2, 3, 4))
    # a second step: the new top diff is the bottom diff without copying
    top[0].diff[...] = 2 * dy
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 2 * dy.reshape(2, 3, 4))


def test_follows_bottom_reshape():
    layer, bottom, top = build_layer('type: "Flatten"', [np.zeros((2, 3, 4))])
    bottom[0].reshape(5, 2, 2)
    bottom[0].data[...] = np.arange(20.0).reshape(5, 2, 2)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (5, 4)
    np.testing.assert_array_equal(top[0].data, np.arange(20.0).reshape(5, 4))


def test_float32_keeps_dtype():
    layer, bottom, top = build_layer('type: "Flatten"', [np.ones((2, 2, 2))], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32


def test_in_place_is_an_error():
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text('type: "Flatten"'))
        blob = Blob(2, 3, 4)
    with pytest.raises(CaffeliteError, match="does not allow in-place"):
        layer.setup_layer([blob], [blob])


def test_end_axis_before_axis_is_an_error():
    with pytest.raises(CaffeliteError, match=r"end_axis \(1, i.e. 1\) comes before axis \(2"):
        build_layer('type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [np.zeros((2, 3, 4))])


def test_axis_out_of_range_is_an_error():
    with pytest.raises(CaffeliteError, match=r"flatten.*axis 3 is out of range.*\(2, 3, 4\)"):
        build_layer('type: "Flatten" flatten_param { axis: 3 }', [np.zeros((2, 3, 4))])
