"""Accuracy: top-k with Caffe's tie rule, ignore_label, axis, the per-class top."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def accuracy_reference(scores, labels, top_k=1, axis=1, ignore_label=None):
    """(accuracy, per-class accuracy) by explicit loops, Caffe's rule: the label is
    a hit when fewer than top_k other classes score >= the true class."""
    axis = axis % scores.ndim
    outer = math.prod(scores.shape[:axis])
    classes = scores.shape[axis]
    inner = math.prod(scores.shape[axis + 1 :])
    s = scores.reshape(outer, classes, inner)
    lab = labels.reshape(outer, inner)
    hits = 0
    count = 0
    per_hits = [0] * classes
    per_count = [0] * classes
    for i in range(outer):
        for j in range(inner):
            label = int(lab[i, j])
            if ignore_label is not None and label == ignore_label:
                continue
            true_score = s[i, label, j]
            others_at_least = sum(
                1 for c in range(classes) if c != label and s[i, c, j] >= true_score
            )
            per_count[label] += 1
            count += 1
            if others_at_least < top_k:
                hits += 1
                per_hits[label] += 1
    accuracy = hits / count if count else 0.0
    per_class = np.array([h / n if n else 0.0 for h, n in zip(per_hits, per_count, strict=True)])
    return np.array(accuracy), per_class


def _data(shape, axis=1, seed=0, ignore=None, fraction=0.25):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(shape)
    label_shape = list(shape)
    label_shape[axis] = 1
    labels = rng.integers(0, shape[axis], size=label_shape).astype(float)
    if ignore is not None:
        labels[rng.random(label_shape) < fraction] = ignore
    return scores, labels


@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("ignore", [None, -1])
def test_top_k_with_per_class(top_k, ignore):
    scores, labels = _data((40, 6), seed=top_k, ignore=ignore)
    labels = labels.reshape(40)
    extra = "" if ignore is None else f" ignore_label: {ignore}"
    layer, bottom, top = check_layer(
        f'type: "Accuracy" accuracy_param {{ top_k: {top_k}{extra} }}',
        [scores, labels],
        num_top=2,
        reference=lambda s, lab: accuracy_reference(s, lab, top_k, 1, ignore),
        gradient=False,
    )
    assert top[0].shape == ()
    assert top[1].shape == (6,)
    # the data is not trivially all right or all wrong
    assert 0 < float(top[0].data) < 1


@pytest.mark.parametrize("top_k", [1, 3])
def test_spatial_axis_and_ignore(top_k):
    scores, labels = _data((2, 5, 3, 4), seed=10 + top_k, ignore=255)
    check_layer(
        f'type: "Accuracy" accuracy_param {{ top_k: {top_k} ignore_label: 255 }}',
        [scores, labels],
        num_top=2,
        reference=lambda s, lab: accuracy_reference(s, lab, top_k, 1, 255),
        gradient=False,
    )


def test_axis_2():
    scores, labels = _data((3, 2, 5, 4), axis=2, seed=20)
    check_layer(
        'type: "Accuracy" accuracy_param { axis: 2 top_k: 2 }',
        [scores, labels.reshape(3, 2, 4)],
        reference=lambda s, lab: accuracy_reference(s, lab, 2, 2)[0],
        gradient=False,
    )


def test_ties_count_against_the_prediction():
    scores = np.array(
        [
            [1.0, 1.0, 0.0],  # label 0 ties with class 1: wrong for top 1
            [1.0, 1.0, 0.0],  # label 1 ties with class 0: wrong for top 1 too
            [0.5, 1.0, 1.0],  # label 2 ties with 1 -> top 1 wrong, top 2 right
            [2.0, 1.0, 1.0],  # label 0 strictly best
        ]
    )
    labels = np.array([0.0, 1.0, 2.0, 0.0])
    layer, bottom, top = build_layer('type: "Accuracy"', [scores, labels])
    layer.forward(bottom, top)
    assert float(top[0].data) == 0.25
    layer, bottom, top = build_layer(
        'type: "Accuracy" accuracy_param { top_k: 2 }', [scores, labels]
    )
    layer.forward(bottom, top)
    assert float(top[0].data) == 1.0


def test_all_ignored_gives_zero():
    scores, _ = _data((4, 3), seed=21)
    layer, bottom, top = build_layer(
        'type: "Accuracy" accuracy_param { ignore_label: 2 }', [scores, np.full(4, 2.0)], num_top=2
    )
    layer.forward(bottom, top)
    assert float(top[0].data) == 0.0
    np.testing.assert_array_equal(top[1].data, 0.0)


def test_per_class_of_missing_class_is_zero():
    scores = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    layer, bottom, top = build_layer('type: "Accuracy"', [scores, np.array([0.0, 0.0])], num_top=2)
    layer.forward(bottom, top)
    assert float(top[0].data) == 0.5
    np.testing.assert_array_equal(top[1].data, [0.5, 0.0, 0.0])


def test_no_gradient_demanded():
    scores, labels = _data((4, 3), seed=22)
    layer, bottom, top = build_layer('type: "Accuracy"', [scores, labels.reshape(4)])
    assert layer.loss_weights == [0.0]
    assert not layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1)
    layer.forward(bottom, top)
    bottom[0].diff[...] = 5.0
    layer.backward(top, [False, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 5.0)


def test_float32_and_reshape():
    scores, labels = _data((4, 3), seed=23)
    layer, bottom, top = build_layer(
        'type: "Accuracy"', [scores, labels.reshape(4)], num_top=2, dtype=np.float32
    )
    scores2, labels2 = _data((7, 3), seed=24)
    bottom[0].reshape(7, 3)
    bottom[1].reshape(7)
    bottom[0].data[...] = scores2
    bottom[1].data[...] = labels2.reshape(7)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    want, per_class = accuracy_reference(scores2.astype(np.float32), labels2)
    assert float(top[0].data) == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)


# ---- errors ---------------------------------------------------------------------------


def test_label_count_mismatch_names_both_shapes():
    with pytest.raises(CaffeliteError, match=r"accuracy.*\(4, 3\).*4 labels.*\(5,\) \(5 labels\)"):
        build_layer('type: "Accuracy"', [np.zeros((4, 3)), np.zeros(5)])


def test_top_k_larger_than_classes():
    with pytest.raises(
        CaffeliteError, match=r"top_k \(4\) must not exceed the number of classes \(3"
    ):
        build_layer('type: "Accuracy" accuracy_param { top_k: 4 }', [np.zeros((4, 3)), np.zeros(4)])


@pytest.mark.host_only
def test_label_out_of_range():
    layer, bottom, top = build_layer('type: "Accuracy"', [np.zeros((2, 3)), np.array([1.0, 3.0])])
    with pytest.raises(CaffeliteError, match=r"label 3 is out of range.*\[0, 3\)"):
        layer.forward(bottom, top)


def test_bad_axis():
    with pytest.raises(CaffeliteError, match=r"axis 2 is out of range.*\(4, 3\)"):
        build_layer('type: "Accuracy" accuracy_param { axis: 2 }', [np.zeros((4, 3)), np.zeros(4)])
