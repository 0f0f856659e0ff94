"""SoftmaxWithLoss and the shared LossLayer / normaliser against plain numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.layers.loss import (
    BATCH_SIZE,
    FULL,
    NONE,
    VALID,
    get_normalizer,
    normalization_mode,
)
from caffelite.proto import caffe_pb2
from caffelite.testing import build_layer, check_gradient, check_layer

FLT_MIN = 1.1754943508222875e-38


def softmax_loss_reference(x, labels, axis=1, ignore_label=None, mode="VALID"):
    """Loss, probabilities and the gradient (for loss weight 1), by explicit loops."""
    axis = axis % x.ndim
    outer = math.prod(x.shape[:axis])
    channels = x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    x3 = x.reshape(outer, channels, inner)
    lab = labels.reshape(outer, inner)
    prob = np.empty_like(x3)
    for i in range(outer):
        for j in range(inner):
            column = [float(v) for v in x3[i, :, j]]
            top = max(column)
            exps = [math.exp(v - top) for v in column]
            prob[i, :, j] = [e / sum(exps) for e in exps]
    loss = 0.0
    valid = 0
    grad = prob.copy()
    for i in range(outer):
        for j in range(inner):
            label = int(lab[i, j])
            if ignore_label is not None and label == ignore_label:
                grad[i, :, j] = 0
                continue
            loss -= math.log(max(prob[i, label, j], FLT_MIN))
            grad[i, label, j] -= 1
            valid += 1
    normalizer = {
        "FULL": outer * inner,
        "VALID": valid,
        "BATCH_SIZE": outer,
        "NONE": 1,
    }[mode]
    normalizer = max(1, normalizer)
    return loss / normalizer, prob.reshape(x.shape), grad.reshape(x.shape) / normalizer


def _data(shape, classes_axis=1, ignore=None, seed=0, ignore_fraction=0.3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    label_shape = list(shape)
    label_shape[classes_axis] = 1
    labels = rng.integers(0, shape[classes_axis], size=label_shape).astype(float)
    if ignore is not None:
        labels[rng.random(label_shape) < ignore_fraction] = ignore
    return x, labels


def _text(extra=""):
    return f'type: "SoftmaxWithLoss" {extra}'


def test_basic_2d():
    x, labels = _data((6, 5))
    labels = labels.reshape(6)
    check_layer(
        _text(),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab)[0]),
        bottom_indices=[0],
    )


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_normalization_modes_with_ignore_label(mode):
    x, labels = _data((2, 4, 3, 3), ignore=255, seed=1)
    check_layer(
        _text(f"loss_param {{ ignore_label: 255 normalization: {mode} }}"),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab, 1, 255, mode)[0]),
        bottom_indices=[0],
    )


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_normalization_modes_backward_matches_reference(mode):
    x, labels = _data((3, 5, 2, 2), ignore=-1, seed=2)
    layer, bottom, top = build_layer(
        _text(f"loss_param {{ ignore_label: -1 normalization: {mode} }}"), [x, labels]
    )
    layer.forward(bottom, top)
    loss, _, grad = softmax_loss_reference(x, labels, 1, -1, mode)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-12, atol=1e-15)


def test_modes_differ_as_expected():
    """The four normalisers really differ on the same data (the tests above can fail)."""
    x, labels = _data((2, 4, 3, 3), ignore=255, seed=1)
    losses = {}
    for mode in ["FULL", "VALID", "BATCH_SIZE", "NONE"]:
        layer, bottom, top = build_layer(
            _text(f"loss_param {{ ignore_label: 255 normalization: {mode} }}"), [x, labels]
        )
        layer.forward(bottom, top)
        losses[mode] = float(top[0].data)
    valid = int(np.sum(labels != 255))
    assert 0 < valid < labels.size
    total = losses["NONE"]
    assert losses["FULL"] == pytest.approx(total / 18)
    assert losses["VALID"] == pytest.approx(total / valid)
    assert losses["BATCH_SIZE"] == pytest.approx(total / 2)


def test_ignored_positions_do_not_contribute():
    x, labels = _data((4, 3), seed=3)
    labels = labels.reshape(4)
    labels[1] = 7
    layer, bottom, top = build_layer(_text("loss_param { ignore_label: 7 }"), [x, labels])
    layer.forward(bottom, top)
    x2 = x.copy()
    x2[1] = [100.0, -50.0, 3.0]  # anything: it is ignored
    bottom[0].data[...] = x2
    loss_before = float(top[0].data)
    layer.forward(bottom, top)
    assert float(top[0].data) == pytest.approx(loss_before, rel=1e-14)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[1], 0.0)
    assert np.all(bottom[0].diff[[0, 2, 3]] != 0)


def test_axis_2_on_4d_input_with_label_map():
    # softmax over axis 2 of (N, A, C, W): labels are (N, A, W)
    x, labels = _data((2, 3, 4, 5), classes_axis=2, ignore=-1, seed=4, ignore_fraction=0.2)
    labels = labels.reshape(2, 3, 5)
    check_layer(
        _text("softmax_param { axis: 2 } loss_param { ignore_label: -1 }"),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab, 2, -1)[0]),
        bottom_indices=[0],
    )


def test_spatial_labels_without_singleton_axis():
    x, labels = _data((2, 3, 4, 4), seed=5)
    labels = labels.reshape(2, 4, 4)
    check_layer(
        _text(),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab)[0]),
        bottom_indices=[0],
    )


def test_negative_axis():
    x, labels = _data((3, 2, 4), classes_axis=2, seed=6)
    check_layer(
        _text("softmax_param { axis: -1 }"),
        [x, labels.reshape(3, 2)],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab, 2)[0]),
        bottom_indices=[0],
    )


@pytest.mark.parametrize(("normalize", "mode"), [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_legacy_normalize_flag(normalize, mode):
    x, labels = _data((2, 3, 2, 2), ignore=9, seed=7)
    check_layer(
        _text(f"loss_param {{ ignore_label: 9 normalize: {normalize} }}"),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab, 1, 9, mode)[0]),
        bottom_indices=[0],
    )


def test_normalization_wins_over_legacy_flag():
    x, labels = _data((2, 3, 2, 2), ignore=9, seed=8)
    check_layer(
        _text("loss_param { ignore_label: 9 normalize: false normalization: FULL }"),
        [x, labels],
        reference=lambda x, lab: np.array(softmax_loss_reference(x, lab, 1, 9, "FULL")[0]),
        bottom_indices=[0],
    )


def test_second_top_is_the_probabilities():
    x, labels = _data((3, 4, 2), seed=9)
    layer, bottom, top = check_layer(
        _text(),
        [x, labels.reshape(3, 2)],
        num_top=2,
        reference=lambda x, lab: [
            np.array(softmax_loss_reference(x, lab)[0]),
            softmax_loss_reference(x, lab)[1],
        ],
        bottom_indices=[0],
        top_indices=[0],
    )
    assert layer.loss_weights == [1.0, 0.0]
    assert top[1].shape == x.shape


def test_explicit_loss_weights_for_two_tops():
    x, labels = _data((3, 4), seed=9)
    layer, _, _ = build_layer(
        _text("loss_weight: 0.5 loss_weight: 0"), [x, labels.reshape(3)], num_top=2
    )
    assert layer.loss_weights == [0.5, 0.0]


def test_loss_weight_scales_the_gradient():
    x, labels = _data((4, 6), seed=10)
    labels = labels.reshape(4)
    layer, bottom, top = build_layer(_text(), [x, labels])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    once = bottom[0].diff.copy()
    top[0].diff[...] = 2.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2 * once, rtol=1e-14)
    _, _, grad = softmax_loss_reference(x, labels)
    np.testing.assert_allclose(bottom[0].diff, 2 * grad, rtol=1e-12, atol=1e-15)


def test_backward_overwrites_bottom_diff():
    x, labels = _data((4, 6), seed=11)
    layer, bottom, top = build_layer(_text(), [x, labels.reshape(4)])
    layer.forward(bottom, top)
    bottom[0].diff[...] = 123.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(
        bottom[0].diff, softmax_loss_reference(x, labels)[2], rtol=1e-12, atol=1e-15
    )


def test_all_ignored_gives_zero_not_nan():
    x = np.random.default_rng(12).standard_normal((3, 4))
    labels = np.full(3, -1.0)
    layer, bottom, top = build_layer(_text("loss_param { ignore_label: -1 }"), [x, labels])
    layer.forward(bottom, top)
    assert float(top[0].data) == 0.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)


def test_probabilities_clipped_at_flt_min():
    x = np.array([[0.0, 200.0], [0.0, 0.0]])
    labels = np.array([0.0, 1.0])
    layer, bottom, top = build_layer(_text("loss_param { normalization: NONE }"), [x, labels])
    layer.forward(bottom, top)
    expected = -math.log(FLT_MIN) - math.log(0.5)
    assert float(top[0].data) == pytest.approx(expected, rel=1e-12)


def test_float_labels_truncate_like_a_cast():
    x, _ = _data((3, 4), seed=13)
    layer, bottom, top = build_layer(_text(), [x, np.array([0.9, 2.5, 3.999])])
    layer.forward(bottom, top)
    expected = softmax_loss_reference(x, np.array([0.0, 2.0, 3.0]))[0]
    assert float(top[0].data) == pytest.approx(expected, rel=1e-12)


def test_float32_net():
    x, labels = _data((5, 10), seed=14)
    layer, bottom, top = build_layer(_text(), [x, labels.reshape(5)], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    assert top[0].shape == ()
    expected = softmax_loss_reference(x.astype(np.float32).astype(float), labels)[0]
    assert float(top[0].data) == pytest.approx(expected, rel=1e-5)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    assert bottom[0].diff.dtype == np.float32


def test_batch_size_change_between_forwards():
    x, labels = _data((2, 3), seed=15)
    layer, bottom, top = build_layer(_text(), [x, labels.reshape(2)])
    x2, labels2 = _data((5, 3), seed=16)
    bottom[0].reshape(5, 3)
    bottom[1].reshape(5)
    bottom[0].data[...] = x2
    bottom[1].data[...] = labels2.reshape(5)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert float(top[0].data) == pytest.approx(softmax_loss_reference(x2, labels2)[0], rel=1e-12)
    check_gradient(layer, bottom, top, bottom_indices=[0])


def test_loss_layer_contract():
    x, labels = _data((2, 3), seed=17)
    layer, bottom, top = build_layer(_text(), [x, labels.reshape(2)])
    assert layer.loss_weights == [1.0]
    assert top[0].shape == ()
    assert layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1)


# ---- errors ---------------------------------------------------------------------------


@pytest.mark.host_only
@pytest.mark.parametrize("bad", [5.0, -1.0, 17.0])
def test_label_out_of_range(bad):
    x, _ = _data((3, 5), seed=18)
    layer, bottom, top = build_layer(_text(), [x, np.array([0.0, bad, 2.0])])
    with pytest.raises(
        CaffeliteError, match=rf"softmaxwithloss.*label {bad:g} is out of range.*\[0, 5\)"
    ):
        layer.forward(bottom, top)


@pytest.mark.host_only
def test_label_out_of_range_with_ignore_label_mentions_it():
    x, _ = _data((3, 5), seed=18)
    layer, bottom, top = build_layer(
        _text("loss_param { ignore_label: 255 }"), [x, np.array([0.0, 255.0, 6.0])]
    )
    with pytest.raises(CaffeliteError, match=r"label 6 is out of range.*ignore_label 255"):
        layer.forward(bottom, top)


def test_label_count_mismatch_names_both_shapes():
    x = np.zeros((2, 3, 4, 4))
    with pytest.raises(
        CaffeliteError,
        match=r"number of labels.*\(2, 3, 4, 4\).*32 labels.*\(2, 1, 4, 3\) \(24 labels\)",
    ):
        build_layer(_text(), [x, np.zeros((2, 1, 4, 3))])


def test_first_dimension_mismatch_names_both_shapes():
    with pytest.raises(CaffeliteError, match=r"first dimension.*\(4, 3\).*\(2, 2\)"):
        build_layer(_text(), [np.zeros((4, 3)), np.zeros((2, 2))])


def test_needs_two_bottoms():
    with pytest.raises(CaffeliteError, match="exactly 2 bottom"):
        build_layer(_text(), [np.zeros((4, 3))])


def test_at_most_two_tops():
    with pytest.raises(CaffeliteError, match="at most 2 top"):
        build_layer(_text(), [np.zeros((4, 3)), np.zeros(4)], num_top=3)


# ---- the normaliser -------------------------------------------------------------------


def test_get_normalizer():
    assert get_normalizer(FULL, 4, 6, 10) == 24
    assert get_normalizer(VALID, 4, 6, 10) == 10
    assert get_normalizer(VALID, 4, 6, -1) == 24
    assert get_normalizer(VALID, 4, 6, 0) == 1  # max(1, ...) avoids 0/0
    assert get_normalizer(BATCH_SIZE, 4, 6, 10) == 4
    assert get_normalizer(NONE, 4, 6, 10) == 1
    assert get_normalizer(FULL, 0, 6, 0) == 1
    with pytest.raises(CaffeliteError, match="unknown loss normalization mode 7"):
        get_normalizer(7, 4, 6, 10)


def test_modes_match_the_proto_enum():
    enum = caffe_pb2.LossParameter
    assert (FULL, VALID, BATCH_SIZE, NONE) == (enum.FULL, enum.VALID, enum.BATCH_SIZE, enum.NONE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", VALID),
        ("normalize: true", VALID),
        ("normalize: false", BATCH_SIZE),
        ("normalization: NONE", NONE),
        ("normalization: FULL normalize: false", FULL),
        ("normalization: VALID normalize: false", VALID),
    ],
)
def test_normalization_mode(text, expected):
    from google.protobuf import text_format

    param = text_format.Parse(text, caffe_pb2.LossParameter())
    assert normalization_mode(param) == expected
