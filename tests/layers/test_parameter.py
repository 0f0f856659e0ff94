import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_gradient, check_layer

TEXT = 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'


def test_top_is_the_blob():
    layer, bottom, top = build_layer(TEXT, [])
    assert top[0].shape == (2, 3)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (2, 3)
    np.testing.assert_array_equal(top[0].data, 0.0)  # no filler: starts at zero
    layer.blobs[0].data[...] = np.arange(6.0).reshape(2, 3)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, np.arange(6.0).reshape(2, 3))
    top[0].diff[...] = 4.0  # what a consumer writes is the parameter's gradient
    np.testing.assert_array_equal(layer.blobs[0].diff, 4.0)


def test_declarative_check_and_param_gradient():
    check_layer(TEXT, [], reference=lambda weight: weight)
    layer, bottom, top = build_layer(TEXT, [])
    layer.blobs[0].data[...] = np.random.default_rng(0).standard_normal((2, 3))
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data)
    check_gradient(layer, bottom, top)  # d<w, top>/d(blob) = w, through the shared diff


def test_loaded_blob_shape_must_match():
    text = TEXT + " blobs { shape { dim: 3 dim: 2 } data: [1, 2, 3, 4, 5, 6] }"
    message = r"loaded parameter blob has shape \(3, 2\), expected \(2, 3\)"
    with pytest.raises(CaffeliteError, match=message):
        build_layer(text, [])


def test_loaded_blob_is_used():
    text = TEXT + " blobs { shape { dim: 2 dim: 3 } data: [1, 2, 3, 4, 5, 6] }"
    layer, bottom, top = build_layer(text, [])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [[1, 2, 3], [4, 5, 6]])
