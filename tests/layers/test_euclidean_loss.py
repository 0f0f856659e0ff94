import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def reference(x, y):
    n = x.shape[0]
    total = 0.0
    for a, b in zip(x.ravel(), y.ravel(), strict=True):
        total += (a - b) ** 2
    return np.array(total / n / 2.0)


@pytest.mark.parametrize(
    "shapes",
    [((4, 3), (4, 3)), ((2, 3, 4, 5), (2, 3, 4, 5)), ((5, 6), (5, 2, 3)), ((3, 1), (3,))],
)
def test_forward_and_gradients(shapes):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shapes[0])
    y = rng.standard_normal(shapes[1])
    check_layer('type: "EuclideanLoss"', [x, y], reference=reference)


def test_loss_weight_scales_gradient():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    check_layer('type: "EuclideanLoss" loss_weight: 2.5', [x, y], reference=reference)
    layer, bottom, top = build_layer('type: "EuclideanLoss" loss_weight: 2.5', [x, y])
    layer.forward(bottom, top)
    top[0].diff[...] = 2.5
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2.5 * (x - y) / 4, rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, -2.5 * (x - y) / 4, rtol=1e-12)


def test_default_loss_weight_and_force_backward():
    layer, _, _ = build_layer('type: "EuclideanLoss"', [np.zeros((2, 2)), np.zeros((2, 2))])
    assert layer.loss_weights == [1.0]
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)


def test_float32_keeps_dtype():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.ones((2, 3), dtype=np.float32)
    layer, bottom, top = build_layer('type: "EuclideanLoss"', [x, y], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    assert top[0].shape == ()
    np.testing.assert_allclose(top[0].data, reference(x.astype(float), y), rtol=1e-6)


def test_mismatched_inputs():
    message = r"same number of values per sample.*\(4, 3\).*\(4, 2\)"
    with pytest.raises(CaffeliteError, match=message):
        build_layer('type: "EuclideanLoss"', [np.zeros((4, 3)), np.zeros((4, 2))])
    with pytest.raises(CaffeliteError, match="same first dimension"):
        build_layer('type: "EuclideanLoss"', [np.zeros((4, 3)), np.zeros((2, 6))])
