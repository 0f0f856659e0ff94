"""Dropout: the TRAIN mask and scaling, backward = mask * scale * dy, TEST identity,
scale_train false, reproducibility with the shared generator, in place, errors.

Finite differences do not apply to a random mask, so backward is compared with
the mask recovered from forward."""

from __future__ import annotations

import numpy as np
import pytest

from caffelite import backend, rng
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST, TRAIN, create_layer
from caffelite.proto import caffe_pb2
from caffelite.testing import build_layer, check_layer, layer_param_from_text


def nonzero_inputs(shape, seed=0):
    x = np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)
    return x * np.where(np.random.default_rng(seed + 1).random(shape) < 0.5, -1, 1)


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.7])
def test_train_forward_and_backward(ratio):
    rng.set_random_seed(42)
    p = float(np.float32(ratio))
    x = nonzero_inputs((4, 5, 6, 7))
    layer, bottom, top = build_layer(
        f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [x]
    )
    layer.forward(bottom, top)
    kept = top[0].data != 0
    scale = 1.0 / (1.0 - p)
    for i in np.ndindex(x.shape):
        assert top[0].data[i] == (x[i] * scale if kept[i] else 0.0)
    # about 1 - p of the units survive (840 units: 4 standard deviations of slack)
    sd = np.sqrt(p * (1 - p) / x.size)
    assert abs(kept.mean() - (1 - p)) < 4 * sd
    dy = np.random.default_rng(5).standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy * kept * scale, rtol=1e-15)


def test_default_ratio_is_half_and_kept_fraction():
    rng.set_random_seed(1)
    x = np.ones((200, 500))
    layer, bottom, top = build_layer('type: "Dropout"', [x])
    assert layer.ratio == 0.5
    layer.forward(bottom, top)
    assert set(np.unique(top[0].data)) <= {0.0, 2.0}
    assert abs((top[0].data != 0).mean() - 0.5) < 0.01


def test_mask_is_redrawn_each_forward_and_reproducible():
    x = nonzero_inputs((20, 30), seed=3)
    rng.set_random_seed(7)
    layer, bottom, top = build_layer('type: "Dropout"', [x])
    layer.forward(bottom, top)
    first = top[0].data.copy()
    layer.forward(bottom, top)
    assert not np.array_equal(first, top[0].data)
    rng.set_random_seed(7)
    layer2, bottom2, top2 = build_layer('type: "Dropout"', [x])
    layer2.forward(bottom2, top2)
    np.testing.assert_array_equal(top2[0].data, first)


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_test_phase_is_identity(ratio):
    x = nonzero_inputs((2, 3, 4), seed=4)
    check_layer(
        f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}',
        [x],
        reference=lambda x: x.copy(),
        phase=TEST,
    )


def test_scale_train_false_semantics():
    """Without scale_train: TRAIN keeps units unscaled, TEST multiplies by 1 - p.

    BVLC's schema has no scale_train field (it comes from Caffe forks), so the
    attribute read from it is set directly here.
    """
    p = 0.25
    x = nonzero_inputs((10, 40), seed=6)
    dy = np.random.default_rng(8).standard_normal(x.shape)
    rng.set_random_seed(9)
    layer, bottom, top = build_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {p} }}', [x])
    layer.scale_train = False
    layer.forward(bottom, top)
    kept = top[0].data != 0
    np.testing.assert_array_equal(top[0].data, x * kept)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy * kept)

    layer, bottom, top = build_layer(
        f'type: "Dropout" dropout_param {{ dropout_ratio: {p} }}', [x], phase=TEST
    )
    layer.scale_train = False
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x * (1 - p), rtol=1e-15)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy * (1 - p), rtol=1e-15)


@pytest.mark.skipif(
    "scale_train" not in caffe_pb2.DropoutParameter.DESCRIPTOR.fields_by_name,
    reason="this schema has no dropout_param.scale_train",
)
def test_scale_train_is_read_from_the_schema():
    layer, _, _ = build_layer('type: "Dropout" dropout_param { scale_train: false }', [np.ones(3)])
    assert layer.scale_train is False


def test_scale_train_defaults_to_true():
    layer, _, _ = build_layer('type: "Dropout"', [np.ones(3)])
    assert layer.scale_train is True


def test_in_place_train():
    x = nonzero_inputs((6, 7), seed=10)
    dy = np.random.default_rng(11).standard_normal(x.shape)
    rng.set_random_seed(12)
    with backend.precision(np.float64):
        layer = create_layer(layer_param_from_text('type: "Dropout"'), TRAIN)
        blob = Blob(x.shape)
        blob.data[...] = x
        layer.setup_layer([blob], [blob])
    layer.forward([blob], [blob])
    kept = blob.data != 0
    np.testing.assert_array_equal(blob.data, x * kept * 2.0)
    blob.diff[...] = dy
    layer.backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, dy * kept * 2.0)


def test_float32_mask_and_output():
    rng.set_random_seed(13)
    layer, bottom, top = build_layer('type: "Dropout"', [nonzero_inputs((3, 4))], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    assert layer.mask.dtype == np.float32


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(CaffeliteError, match=r"dropout_ratio must be in \[0, 1\)"):
        build_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [np.ones(3)])


def test_backward_before_forward_is_an_error():
    layer, bottom, top = build_layer('type: "Dropout"', [np.ones(3)])
    top[0].diff[...] = 1.0
    with pytest.raises(CaffeliteError, match="backward before forward"):
        layer.backward(top, [True], bottom)
