"""BatchNorm: TRAIN normalisation and its full gradient, the three statistics blobs and
their moving-average update, global statistics (TEST), in-place use, the lr_mult 0
masking of the statistics, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import caffelite as caffe
from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN, create_layer
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text
from caffelite.testing import build_layer, check_gradient, check_layer, layer_param_from_text

EPS = float(np.float32(1e-5))
MAF = float(np.float32(0.999))


def per_channel_stats(x):
    """Mean and biased variance of each channel (axis 1) by plain loops."""
    channels = 1 if x.ndim == 1 else x.shape[1]
    values = [[] for _ in range(channels)]
    for i in np.ndindex(x.shape):
        values[0 if x.ndim == 1 else i[1]].append(float(x[i]))
    mean = np.array([sum(v) / len(v) for v in values])
    var = np.array(
        [sum((a - m) ** 2 for a in v) / len(v) for v, m in zip(values, mean, strict=True)]
    )
    return mean, var, len(values[0])


def normalise(x, mean, var, eps=EPS):
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        c = 0 if x.ndim == 1 else i[1]
        out[i] = (x[i] - mean[c]) / np.sqrt(var[c] + eps)
    return out


def train_reference(x, *blobs):
    mean, var, _ = per_channel_stats(x)
    return normalise(x, mean, var)


def inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 1.5 + rng.uniform(-1, 1)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 3), (3, 2, 3, 4), (2, 4, 3)])
def test_train_forward_and_gradient(shape):
    check_layer('type: "BatchNorm"', [inputs(shape)], reference=train_reference, phase=TRAIN)


def test_explicit_use_global_stats_false_in_test_phase():
    check_layer(
        'type: "BatchNorm" batch_norm_param { use_global_stats: false eps: 0.01 }',
        [inputs((3, 2, 2, 2), seed=1)],
        phase=TEST,
        reference=lambda x, *b: normalise(
            x, *per_channel_stats(x)[:2], eps=float(np.float32(0.01))
        ),
    )


def test_statistics_blobs_after_forwards():
    x1, x2 = inputs((4, 3, 2, 3), seed=2), inputs((4, 3, 2, 3), seed=3)
    layer, bottom, top = build_layer('type: "BatchNorm"', [x1])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    for blob in layer.blobs:
        np.testing.assert_array_equal(blob.data, 0)
    layer.forward(bottom, top)
    mean1, var1, m = per_channel_stats(x1)
    assert m == 4 * 2 * 3
    np.testing.assert_allclose(layer.blobs[0].data, mean1, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var1 * m / (m - 1), rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [1.0], rtol=0)

    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    mean2, var2, _ = per_channel_stats(x2)
    np.testing.assert_allclose(layer.blobs[2].data, [MAF + 1], rtol=1e-15)
    np.testing.assert_allclose(layer.blobs[0].data, MAF * mean1 + mean2, rtol=1e-12)
    np.testing.assert_allclose(
        layer.blobs[1].data, MAF * var1 * m / (m - 1) + var2 * m / (m - 1), rtol=1e-12
    )


def test_moving_average_fraction_and_single_value_per_channel():
    """m = 1 gives no bias correction (Caffe: m / (m - 1) only for m > 1)."""
    x = inputs((1, 3), seed=4)
    layer, bottom, top = build_layer(
        'type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }', [x]
    )
    layer.forward(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(layer.blobs[2].data, [1.5])
    np.testing.assert_allclose(layer.blobs[0].data, 1.5 * x[0], rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, 0, atol=1e-30)


def _with_stats(layer, mean_sum, var_sum, factor):
    layer.blobs[0].data[...] = mean_sum
    layer.blobs[1].data[...] = var_sum
    layer.blobs[2].data[...] = factor


@pytest.mark.parametrize("factor", [2.5, 1.0])
def test_global_stats_in_test_phase(factor):
    x = inputs((3, 4, 2, 2), seed=5)
    mean_sum = np.array([0.5, -1.0, 2.0, 0.0])
    var_sum = np.array([1.0, 4.0, 0.5, 2.0])
    layer, bottom, top = build_layer('type: "BatchNorm"', [x], phase=TEST)
    assert layer.use_global_stats
    _with_stats(layer, mean_sum, var_sum, factor)
    layer.forward(bottom, top)
    np.testing.assert_allclose(
        top[0].data, normalise(x, mean_sum / factor, var_sum / factor), rtol=1e-12
    )
    # the stored statistics are not updated with global stats
    np.testing.assert_array_equal(layer.blobs[2].data, [factor])
    # backward: dx = dy / sqrt(var + eps); the statistics are constants
    check_gradient(layer, bottom, top, check_params=False)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(
        bottom[0].diff[0, :, 0, 0], 1 / np.sqrt(var_sum / factor + EPS), rtol=1e-12
    )


def test_zero_scale_factor_means_zero_statistics():
    x = inputs((2, 3, 2), seed=6)
    layer, bottom, top = build_layer(
        'type: "BatchNorm" batch_norm_param { use_global_stats: true }', [x], phase=TRAIN
    )
    _with_stats(layer, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.0)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(EPS), rtol=1e-12)


def test_use_global_stats_defaults_follow_phase():
    x = np.ones((2, 3))
    assert not build_layer('type: "BatchNorm"', [x], phase=TRAIN)[0].use_global_stats
    assert build_layer('type: "BatchNorm"', [x], phase=TEST)[0].use_global_stats


def test_defaults_eps_and_fraction():
    layer, _, _ = build_layer('type: "BatchNorm"', [np.ones((2, 3))])
    assert layer.eps == EPS and layer.moving_average_fraction == MAF


def test_statistics_are_masked_from_learning():
    layer, _, _ = build_layer('type: "BatchNorm"', [np.ones((2, 3))])
    assert layer.param_propagate_down == [False, False, False]
    assert [p.lr_mult for p in layer.layer_param.param] == [0.0, 0.0, 0.0]
    # given lr_mult 0 specs are kept, missing ones added
    layer, _, _ = build_layer(
        'type: "BatchNorm" param { lr_mult: 0 decay_mult: 0 }', [np.ones((2, 3))]
    )
    assert len(layer.layer_param.param) == 3
    assert layer.layer_param.param[0].decay_mult == 0


def test_nonzero_lr_mult_is_rejected():
    with pytest.raises(CaffeliteError, match="param 1 has lr_mult 1.0.*cannot be learned"):
        build_layer(
            'type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }', [np.ones((2, 3))]
        )


def test_backward_leaves_statistics_diffs_alone():
    layer, bottom, top = build_layer('type: "BatchNorm"', [inputs((4, 3))])
    layer.forward(bottom, top)
    for blob in layer.blobs:
        blob.diff[...] = 0
    top[0].diff[...] = np.random.default_rng(7).standard_normal((4, 3))
    layer.backward(top, [True], bottom)
    for blob in layer.blobs:
        np.testing.assert_array_equal(blob.diff, 0)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_in_place_matches_out_of_place(phase):
    x = inputs((4, 3, 2, 2), seed=8)
    dy = np.random.default_rng(9).standard_normal(x.shape)
    layer, bottom, top = build_layer('type: "BatchNorm"', [x], phase=phase)
    with backend.precision(np.float64):
        twin = create_layer(layer_param_from_text('type: "BatchNorm"'), phase)
        blob = Blob(x.shape)
        blob.data[...] = x
        twin.setup_layer([blob], [blob])
    if phase == TEST:
        _with_stats(layer, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], 1.5)
        _with_stats(twin, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], 1.5)
    layer.forward(bottom, top)
    twin.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, top[0].data, rtol=1e-14)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    blob.diff[...] = dy
    twin.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, bottom[0].diff, rtol=1e-12, atol=1e-14)


def test_backward_uses_cached_normalised_output():
    """A later in-place layer may overwrite the top; Caffe's backward uses its own copy."""
    x = inputs((5, 2, 3), seed=10)
    dy = np.random.default_rng(11).standard_normal(x.shape)
    layer, bottom, top = build_layer('type: "BatchNorm"', [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    expected = bottom[0].diff.copy()
    layer.forward(bottom, top)
    top[0].data[...] = 123.0
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)


def test_float32():
    layer, bottom, top = build_layer('type: "BatchNorm"', [inputs((4, 3, 2))], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32 and layer.blobs[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data.mean(axis=(0, 2)), 0, atol=1e-6)


def test_channel_change_is_rejected():
    layer, bottom, top = build_layer('type: "BatchNorm"', [np.ones((2, 3, 2))])
    bottom[0].reshape(2, 4, 2)
    with pytest.raises(CaffeliteError, match=r"4 channels.*set up for 3"):
        layer.reshape(bottom, top)


def test_loaded_blobs_of_wrong_shape_are_rejected():
    param = layer_param_from_text('type: "BatchNorm"')
    for dims in ([3], [3], [2]):
        blob = param.blobs.add()
        blob.shape.dim.extend(dims)
        blob.data.extend([0.0] * dims[0])
    with pytest.raises(
        CaffeliteError, match=r"loaded scale factor blob has shape \(2,\), expected \(1,\)"
    ):
        create_layer(param).setup_layer([Blob(2, 3)], [Blob()])


NET = """
input: "x" input_shape { dim: 6 dim: 3 dim: 2 dim: 2 }
input: "t" input_shape { dim: 6 dim: 3 dim: 2 dim: 2 }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "loss" }
"""


def test_in_a_net_the_statistics_get_lr_mult_zero():
    net = caffe.Net(parse_text(NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    bn = net.layers[list(net._layer_names).index("bn")]
    assert bn.param_propagate_down == [False, False, False]
    assert net.params_lr[:3] == [0.0, 0.0, 0.0]
    assert net.params_lr[3:] == [1.0, 1.0]
    x = inputs((6, 3, 2, 2), seed=12)
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = 0.0
    net.forward()
    np.testing.assert_allclose(bn.blobs[0].data, per_channel_stats(x)[0], rtol=1e-5)
    net.backward()
    assert np.all(np.isfinite(net.blobs["x"].diff))


def test_scalar_bottom_is_a_clear_error():
    with pytest.raises(CaffeliteError, match="at least one axis"):
        build_layer('type: "BatchNorm"', [np.array(1.0)])
