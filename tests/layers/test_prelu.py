"""PReLU: per-channel and shared slopes, filler default, gradients wrt input and slope,
in-place use, loaded slopes and configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import create_layer
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def inputs(shape, seed=0):
    x = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    return np.where(np.abs(x) < 0.05, 0.6, x)


def prelu_reference(x, slope):
    """Per element: x if x > 0 else slope[channel] * x (one shared slope if 0-d)."""
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        a = float(slope) if np.ndim(slope) == 0 else slope[i[1]]
        out[i] = x[i] if x[i] > 0 else a * x[i]
    return out


GAUSSIAN = 'filler { type: "gaussian" std: 0.5 }'


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6), (2, 3, 5)])
@pytest.mark.parametrize(
    "config", ["", "channel_shared: true", GAUSSIAN, f"channel_shared: true {GAUSSIAN}"]
)
def test_forward_and_gradients(shape, config):
    layer, _, _ = check_layer(
        f'type: "PReLU" prelu_param {{ {config} }}',
        [inputs(shape)],
        reference=prelu_reference,
        kink=0.0,
        kink_range=1e-3,
    )
    want = () if "channel_shared" in config else (shape[1],)
    assert layer.blobs[0].shape == want


def test_default_filler_is_quarter():
    layer, _, _ = build_layer('type: "PReLU"', [inputs((2, 3, 2))])
    np.testing.assert_array_equal(layer.blobs[0].data, [0.25, 0.25, 0.25])
    layer, _, _ = build_layer(
        'type: "PReLU" prelu_param { channel_shared: true }', [inputs((2, 3))]
    )
    assert layer.blobs[0].shape == ()
    assert float(layer.blobs[0].data) == 0.25


def test_slope_gradient_sums_negative_inputs_per_channel():
    x = np.array([[[-1.0, 2.0], [3.0, -4.0]], [[-0.5, -0.5], [1.0, 1.0]]])  # (N=2, C=2, 2)
    layer, bottom, top = build_layer('type: "PReLU"', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = 2.0
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)
    # channel 0: x <= 0 at -1, -0.5, -0.5 -> 2 * (-2); channel 1: -4 -> 2 * (-4)
    np.testing.assert_allclose(layer.blobs[0].diff, [-4.0, -8.0])
    np.testing.assert_allclose(bottom[0].diff[0, 0], [0.5, 2.0])


def _in_place(text, x):
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text(text))
        blob = Blob(x.shape)
        blob.data[...] = x
        layer.setup_layer([blob], [blob])
    return layer, blob


@pytest.mark.parametrize("config", ["", "channel_shared: true"])
def test_in_place_matches_out_of_place(config):
    text = f'type: "PReLU" prelu_param {{ {config} {GAUSSIAN} }}'
    x = inputs((3, 4, 5), seed=2)
    dy = np.random.default_rng(3).standard_normal(x.shape)
    layer, bottom, top = build_layer(text, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)

    twin, blob = _in_place(text, x)
    twin.blobs[0].data[...] = layer.blobs[0].data
    twin.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, top[0].data)
    blob.diff[...] = dy
    twin.blobs[0].diff[...] = 0
    twin.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-14)
    np.testing.assert_allclose(twin.blobs[0].diff, layer.blobs[0].diff, rtol=1e-12)


def test_param_propagate_down_false_leaves_slope_diff():
    layer, bottom, top = build_layer('type: "PReLU"', [inputs((2, 3))])
    layer.forward(bottom, top)
    layer.param_propagate_down = [False]
    layer.blobs[0].diff[...] = 5.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, 5.0)


def test_loaded_slopes_are_kept():
    param = layer_param_from_text('type: "PReLU"')
    blob = param.blobs.add()
    blob.shape.dim.append(3)
    blob.data.extend([0.1, 0.2, 0.3])
    with backend.precision(np.float64):
        layer = create_layer(param)
        bottom, top = Blob(1, 3, 1), Blob()
        bottom.data[...] = -1.0
        layer.setup_layer([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data.ravel(), [-0.1, -0.2, -0.3], rtol=1e-7)


def test_loaded_slopes_of_wrong_size_are_rejected():
    param = layer_param_from_text('type: "PReLU"')
    blob = param.blobs.add()
    blob.shape.dim.append(2)
    blob.data.extend([0.1, 0.2])
    layer = create_layer(param)
    with pytest.raises(CaffeliteError, match=r"one slope blob of 3 value\(s\).*\(2,\)"):
        layer.setup_layer([Blob(4, 3)], [Blob()])


def test_needs_two_axes():
    with pytest.raises(CaffeliteError, match=r"at least 2 axes.*\(5,\)"):
        build_layer('type: "PReLU"', [np.ones(5)])


def test_channel_count_change_is_rejected():
    layer, bottom, top = build_layer('type: "PReLU"', [inputs((2, 3))])
    bottom[0].reshape(2, 4)
    with pytest.raises(CaffeliteError, match=r"4 channels.*slope blob has 3"):
        layer.reshape(bottom, top)
