"""SigmoidCrossEntropy, Hinge, Contrastive, Infogain and MultinomialLogistic losses
against plain-loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer

MODES = ["FULL", "VALID", "BATCH_SIZE", "NONE"]


def _normalizer(mode, outer, inner, valid):
    return max(1, {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode])


# ---- SigmoidCrossEntropyLoss -----------------------------------------------------------


def sce_reference(mode="BATCH_SIZE", ignore=None):
    def reference(x, t):
        total, valid = 0.0, 0
        for xi, ti in zip(x.ravel(), t.ravel(), strict=True):
            if ignore is not None and int(ti) == ignore:
                continue
            s = 1.0 / (1.0 + math.exp(-xi))
            total -= ti * math.log(s) + (1 - ti) * math.log(1 - s)
            valid += 1
        n = x.shape[0]
        return np.array(total / _normalizer(mode, n, x.size // n, valid))

    return reference


def _sce_data(shape, seed, ignore=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    t = rng.random(shape)
    t[rng.random(shape) < 0.3] = 1.0
    if ignore is not None:
        t[rng.random(shape) < 0.3] = ignore
    return x, t


def test_sigmoid_cross_entropy_default_is_batch_size():
    x, t = _sce_data((4, 3), 0)
    layer, _, _ = check_layer(
        'type: "SigmoidCrossEntropyLoss"', [x, t], reference=sce_reference(), bottom_indices=[0]
    )
    assert layer.loss_weights == [1.0]
    assert not layer.allow_force_backward(1)


@pytest.mark.parametrize("mode", MODES)
def test_sigmoid_cross_entropy_modes_with_ignore_label(mode):
    x, t = _sce_data((3, 2, 2, 2), 1, ignore=-1)
    check_layer(
        f'type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 normalization: {mode} }}',
        [x, t],
        reference=sce_reference(mode, -1),
        bottom_indices=[0],
    )


@pytest.mark.parametrize(("flag", "mode"), [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_sigmoid_cross_entropy_legacy_normalize(flag, mode):
    x, t = _sce_data((3, 4), 2, ignore=5)
    check_layer(
        f'type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: 5 normalize: {flag} }}',
        [x, t],
        reference=sce_reference(mode, 5),
        bottom_indices=[0],
    )


def test_sigmoid_cross_entropy_is_stable_for_large_inputs():
    x = np.array([[100.0, -100.0, 800.0, -800.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    layer, bottom, top = build_layer('type: "SigmoidCrossEntropyLoss"', [x, t])
    layer.forward(bottom, top)
    assert float(top[0].data) == pytest.approx(200.0, rel=1e-12)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[1.0, -1.0, 0.0, 0.0]], atol=1e-12)


def test_sigmoid_cross_entropy_gradient_zero_where_ignored():
    x, t = _sce_data((2, 3), 3)
    t[0, 1] = -1
    layer, bottom, top = build_layer(
        'type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 }', [x, t]
    )
    layer.forward(bottom, top)
    top[0].diff[...] = 2.0
    layer.backward(top, [True, False], bottom)
    expected = 2.0 * (1 / (1 + np.exp(-x)) - t) / 2  # default BATCH_SIZE: N = 2
    expected[0, 1] = 0
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)
    with pytest.raises(CaffeliteError, match=r"cannot backpropagate to bottom\[1\]"):
        layer.backward(top, [True, True], bottom)


def test_sigmoid_cross_entropy_float32():
    x, t = _sce_data((3, 4), 4)
    layer, bottom, top = build_layer('type: "SigmoidCrossEntropyLoss"', [x, t], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32 and top[0].shape == ()
    expected = sce_reference()(x.astype(np.float32).astype(float), t.astype(np.float32))
    assert float(top[0].data) == pytest.approx(float(expected), rel=1e-5)


def test_sigmoid_cross_entropy_count_mismatch():
    with pytest.raises(CaffeliteError, match=r"same count.*\(2, 3\).*\(2, 2\)"):
        build_layer('type: "SigmoidCrossEntropyLoss"', [np.zeros((2, 3)), np.zeros((2, 2))])


# ---- HingeLoss --------------------------------------------------------------------------


def hinge_reference(norm="L1"):
    def reference(x, labels):
        n = x.shape[0]
        scores = x.reshape(n, -1)
        total = 0.0
        for i in range(n):
            for j in range(scores.shape[1]):
                s = -scores[i, j] if j == int(labels.ravel()[i]) else scores[i, j]
                h = max(0.0, 1.0 + s)
                total += h if norm == "L1" else h * h
        return np.array(total / n)

    return reference


def _hinge_data(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, shape)
    x[np.abs(np.abs(x) - 1) < 0.15] += 0.4  # keep away from the kinks at +-1
    n = shape[0]
    labels = rng.integers(0, x.size // n, n).astype(float)
    return x, labels


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 1)])
def test_hinge(norm, shape):
    x, labels = _hinge_data(shape, 5)
    check_layer(
        f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}',
        [x, labels],
        reference=hinge_reference(norm),
        bottom_indices=[0],
    )


def test_hinge_default_is_l1_and_label_shape_may_be_4d():
    x, labels = _hinge_data((4, 3), 6)
    check_layer(
        'type: "HingeLoss"',
        [x, labels.reshape(4, 1, 1, 1)],
        reference=hinge_reference("L1"),
        bottom_indices=[0],
    )


@pytest.mark.host_only
def test_hinge_errors():
    layer, bottom, top = build_layer('type: "HingeLoss"', [np.zeros((2, 3)), np.array([0.0, 3.0])])
    with pytest.raises(CaffeliteError, match=r"label 3 is out of range.*\[0, 3\)"):
        layer.forward(bottom, top)
    with pytest.raises(
        CaffeliteError, match=r"one label per item.*\(2, 3\) need 2 labels.*\(2, 2\)"
    ):
        build_layer('type: "HingeLoss"', [np.zeros((2, 3)), np.zeros((2, 2))])


# ---- ContrastiveLoss --------------------------------------------------------------------


def contrastive_reference(margin=1.0, legacy=False):
    def reference(a, b, y):
        n = a.shape[0]
        total = 0.0
        for i in range(n):
            d2 = sum((p - q) ** 2 for p, q in zip(a[i].ravel(), b[i].ravel(), strict=True))
            if int(y.ravel()[i]):
                total += d2
            elif legacy:
                total += max(margin - d2, 0.0)
            else:
                total += max(margin - math.sqrt(d2), 0.0) ** 2
        return np.array(total / n / 2)

    return reference


def _pairs(n, c, seed, margin=1.0):
    """Pairs whose distances lie well inside or well outside the margin (no kinks)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, c))
    direction = rng.standard_normal((n, c))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    inside = rng.random(n) < 0.5
    dist = np.where(inside, rng.uniform(0.3, 0.7, n), rng.uniform(1.3, 2.0, n)) * margin
    b = a + direction * dist[:, None]
    y = (rng.random(n) < 0.4).astype(float)
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize(("margin", "shape"), [(1.0, (6, 3)), (2.0, (5, 4))])
def test_contrastive(legacy, margin, shape):
    a, b, y = _pairs(*shape, seed=7, margin=margin)
    flag = "true" if legacy else "false"
    check_layer(
        'type: "ContrastiveLoss" '
        f"contrastive_loss_param {{ margin: {margin} legacy_version: {flag} }}",
        [a, b, y],
        reference=contrastive_reference(margin, legacy),
        bottom_indices=[0, 1],
    )


def test_contrastive_4d_features_and_default_margin():
    a, b, y = _pairs(4, 3, seed=8)
    check_layer(
        'type: "ContrastiveLoss"',
        [a.reshape(4, 3, 1, 1), b.reshape(4, 3, 1, 1), y.reshape(4, 1, 1, 1)],
        reference=contrastive_reference(),
        bottom_indices=[0, 1],
    )


def test_contrastive_backward_uses_caffes_offset():
    """The non-legacy gradient divides by d + 1e-4 (Caffe), visible for a small d."""
    a = np.array([[0.0, 0.0]])
    b = np.array([[0.001, 0.0]])  # d = 0.001, dissimilar, inside the margin 1
    layer, bottom, top = build_layer('type: "ContrastiveLoss"', [a, b, np.array([0.0])])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True, False], bottom)
    d = 0.001
    expected = -(1.0 - d) / (d + 1e-4) * (a - b)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, -expected, rtol=1e-12)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)
    assert not layer.allow_force_backward(2)


def test_contrastive_errors():
    with pytest.raises(CaffeliteError, match=r"same shape.*\(3, 2\).*\(3, 4\)"):
        build_layer('type: "ContrastiveLoss"', [np.zeros((3, 2)), np.zeros((3, 4)), np.zeros(3)])
    with pytest.raises(CaffeliteError, match=r"same shape.*\(3, 2, 2, 2\)"):
        build_layer(
            'type: "ContrastiveLoss"', [np.zeros((3, 2, 2, 2)), np.zeros((3, 2, 2, 2)), np.zeros(3)]
        )
    with pytest.raises(CaffeliteError, match=r"one similarity label per pair.*\(3, 2\)"):
        build_layer(
            'type: "ContrastiveLoss"', [np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))]
        )
    with pytest.raises(CaffeliteError, match="exactly 3 bottom"):
        build_layer('type: "ContrastiveLoss"', [np.zeros((3, 2)), np.zeros((3, 2))])


# ---- InfogainLoss -----------------------------------------------------------------------


def infogain_reference(matrix, axis=1, ignore=None, mode="VALID"):
    def reference(x, labels, *rest):
        a = axis % x.ndim
        outer = math.prod(x.shape[:a])
        k = x.shape[a]
        inner = math.prod(x.shape[a + 1 :])
        x3 = x.reshape(outer, k, inner)
        lab = labels.reshape(outer, inner)
        total, valid = 0.0, 0
        for i in range(outer):
            for j in range(inner):
                label = int(lab[i, j])
                if ignore is not None and label == ignore:
                    continue
                column = [float(v) for v in x3[i, :, j]]
                top = max(column)
                exps = [math.exp(v - top) for v in column]
                for c in range(k):
                    p = exps[c] / sum(exps)
                    total -= matrix[label][c] * math.log(max(p, 1e-20))
                valid += 1
        return np.array(total / _normalizer(mode, outer, inner, valid))

    return reference


def _infogain_data(shape, axis=1, seed=0, ignore=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    k = shape[axis]
    label_shape = list(shape)
    label_shape[axis] = 1
    labels = rng.integers(0, k, label_shape).astype(float)
    if ignore is not None:
        labels[rng.random(label_shape) < 0.3] = ignore
    matrix = rng.uniform(0.1, 1.0, (k, k))
    return x, labels, matrix


def test_infogain_matrix_as_third_bottom():
    x, labels, matrix = _infogain_data((4, 3), seed=10)
    layer, _, _ = check_layer(
        'type: "InfogainLoss"',
        [x, labels.reshape(4), matrix],
        reference=infogain_reference(matrix),
        bottom_indices=[0],
    )
    assert layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)


@pytest.mark.parametrize("mode", MODES)
def test_infogain_modes_with_ignore_label_on_maps(mode):
    x, labels, matrix = _infogain_data((2, 3, 2, 2), seed=11, ignore=7)
    check_layer(
        f'type: "InfogainLoss" loss_param {{ ignore_label: 7 normalization: {mode} }}',
        [x, labels, matrix.reshape(1, 1, 3, 3)],
        reference=infogain_reference(matrix, 1, 7, mode),
        bottom_indices=[0],
    )


def test_infogain_axis_2():
    x, labels, matrix = _infogain_data((2, 3, 4), axis=2, seed=12)
    check_layer(
        'type: "InfogainLoss" infogain_loss_param { axis: 2 }',
        [x, labels.reshape(2, 3), matrix],
        reference=infogain_reference(matrix, axis=2),
        bottom_indices=[0],
    )


def _write_matrix(path, matrix, legacy=False):
    blob = Blob(*matrix.shape, dtype=np.float32)
    blob.data[...] = matrix
    proto = blob.to_proto()
    if legacy:
        proto.ClearField("shape")
        proto.num, proto.channels = 1, 1
        proto.height, proto.width = matrix.shape
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("legacy", [False, True])
def test_infogain_matrix_from_source(tmp_path, legacy):
    x, labels, matrix = _infogain_data((3, 4), seed=13)
    matrix = matrix.astype(np.float32).astype(float)
    path = tmp_path / "H.binaryproto"
    _write_matrix(path, matrix, legacy)
    check_layer(
        f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}',
        [x, labels.reshape(3)],
        reference=infogain_reference(matrix),
        bottom_indices=[0],
    )


def test_infogain_identity_equals_softmax_with_loss():
    x, labels, _ = _infogain_data((3, 5, 2), seed=14, ignore=-1)
    infogain, b1, t1 = build_layer(
        'type: "InfogainLoss" loss_param { ignore_label: -1 }', [x, labels, np.eye(5)], num_top=2
    )
    softmax, b2, t2 = build_layer(
        'type: "SoftmaxWithLoss" loss_param { ignore_label: -1 }', [x, labels], num_top=2
    )
    for layer, b, t in ((infogain, b1, t1), (softmax, b2, t2)):
        layer.forward(b, t)
        t[0].diff[...] = 1.5
        layer.backward(t, [True, False] + [False] * (len(b) - 2), b)
    assert float(t1[0].data) == pytest.approx(float(t2[0].data), rel=1e-12)
    np.testing.assert_allclose(t1[1].data, t2[1].data, rtol=1e-12)
    np.testing.assert_allclose(b1[0].diff, b2[0].diff, rtol=1e-10, atol=1e-15)


def test_infogain_second_top_is_the_probabilities():
    x, labels, matrix = _infogain_data((2, 3), seed=15)
    layer, bottom, top = build_layer(
        'type: "InfogainLoss"', [x, labels.reshape(2), matrix], num_top=2
    )
    layer.forward(bottom, top)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(top[1].data, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    assert layer.loss_weights == [1.0, 0.0]


@pytest.mark.host_only
def test_infogain_errors(tmp_path):
    x, labels, matrix = _infogain_data((2, 3), seed=16)
    with pytest.raises(CaffeliteError, match="third bottom or infogain_loss_param.source"):
        build_layer('type: "InfogainLoss"', [x, labels.reshape(2)])
    with pytest.raises(CaffeliteError, match="normalize is deprecated"):
        build_layer(
            'type: "InfogainLoss" loss_param { normalize: true }', [x, labels.reshape(2), matrix]
        )
    with pytest.raises(CaffeliteError, match=r"3 x 3 = 9 values.*got shape \(2, 2\)"):
        build_layer('type: "InfogainLoss"', [x, labels.reshape(2), np.eye(2)])
    with pytest.raises(CaffeliteError, match=r"number of labels.*need 2 labels.*\(2, 2\)"):
        build_layer('type: "InfogainLoss"', [x, np.zeros((2, 2)), matrix])
    missing = tmp_path / "missing.binaryproto"
    with pytest.raises(CaffeliteError, match="cannot read"):
        build_layer(
            f'type: "InfogainLoss" infogain_loss_param {{ source: "{missing}" }}',
            [x, labels.reshape(2)],
        )
    layer, bottom, top = build_layer('type: "InfogainLoss"', [x, np.array([0.0, 3.0]), matrix])
    with pytest.raises(CaffeliteError, match=r"label 3 is out of range.*\[0, 3\)"):
        layer.forward(bottom, top)


# ---- MultinomialLogisticLoss ------------------------------------------------------------


def mll_reference(p, labels):
    n = p.shape[0]
    rows = p.reshape(n, -1)
    total = 0.0
    for i in range(n):
        total -= math.log(max(rows[i, int(labels.ravel()[i])], 1e-20))
    return np.array(total / n)


@pytest.mark.parametrize(("shape", "label_shape"), [((4, 5), (4,)), ((3, 2, 2, 1), (3, 1, 1, 1))])
def test_multinomial_logistic(shape, label_shape):
    rng = np.random.default_rng(17)
    p = rng.uniform(0.05, 1.0, shape)
    labels = rng.integers(0, p.size // shape[0], label_shape).astype(float)
    layer, _, _ = check_layer(
        'type: "MultinomialLogisticLoss"', [p, labels], reference=mll_reference, bottom_indices=[0]
    )
    assert not layer.allow_force_backward(1)


def test_multinomial_logistic_clamps_at_threshold():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    labels = np.array([0.0, 1.0])
    layer, bottom, top = build_layer('type: "MultinomialLogisticLoss"', [p, labels])
    layer.forward(bottom, top)
    assert float(top[0].data) == pytest.approx((-math.log(1e-20) - math.log(0.5)) / 2, rel=1e-12)
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 3.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[-0.5 / 1e-20, 0.0], [0.0, -1.0]], rtol=1e-12)


@pytest.mark.host_only
def test_multinomial_logistic_errors():
    with pytest.raises(CaffeliteError, match=r"labels \(bottom\[1\]\) must have shape.*\(2, 2\)"):
        build_layer('type: "MultinomialLogisticLoss"', [np.ones((2, 3)), np.zeros((2, 2))])
    layer, bottom, top = build_layer(
        'type: "MultinomialLogisticLoss"', [np.ones((2, 3)), np.array([-1.0, 0.0])]
    )
    with pytest.raises(CaffeliteError, match=r"label -1 is out of range.*\[0, 3\)"):
        layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match="same first dimension"):
        build_layer('type: "MultinomialLogisticLoss"', [np.ones((2, 3)), np.zeros(3)])
