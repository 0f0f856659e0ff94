import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def _distinct(rng, shape, count):
    """``count`` arrays whose values differ by at least 0.2 at every position (no ties)."""
    size = int(np.prod(shape))
    ranks = np.argsort(rng.random((size, count)), axis=1).T.astype(float)
    return [(r * 0.5 + rng.uniform(-0.1, 0.1, size)).reshape(shape) for r in ranks]


def prod_reference(*arrays):
    out = np.ones_like(arrays[0])
    for a in arrays:
        out = out * a
    return out


def sum_reference(coeffs):
    def reference(*arrays):
        out = np.zeros_like(arrays[0])
        for c, a in zip(coeffs, arrays, strict=True):
            out += c * a
        return out

    return reference


def max_reference(*arrays):
    out = np.empty_like(arrays[0])
    for idx in np.ndindex(out.shape):
        out[idx] = max(a[idx] for a in arrays)
    return out


@pytest.mark.parametrize("stable", ["true", "false"])
@pytest.mark.parametrize("count", [2, 3])
def test_prod(stable, count):
    rng = np.random.default_rng(count)
    # away from 0 so that top / bottom (the unstable gradient) is well defined
    arrays = [
        rng.uniform(0.5, 1.5, (2, 3, 2)) * rng.choice([-1, 1], (2, 3, 2)) for _ in range(count)
    ]
    check_layer(
        f'type: "Eltwise" eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}',
        arrays,
        reference=prod_reference,
    )


def test_sum_default_coefficients():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((3, 4)) for _ in range(3)]
    layer, _, _ = check_layer('type: "Eltwise"', arrays, reference=sum_reference([1, 1, 1]))
    assert layer.coeffs == [1.0, 1.0, 1.0]


def test_sum_with_coefficients():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((2, 3, 2)) for _ in range(3)]
    check_layer(
        'type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }',
        arrays,
        reference=sum_reference([1, -0.5, 2]),
    )


@pytest.mark.parametrize("count", [2, 3, 4])
def test_max(count):
    rng = np.random.default_rng(5 + count)
    arrays = _distinct(rng, (2, 3, 2), count)
    check_layer('type: "Eltwise" eltwise_param { operation: MAX }', arrays, reference=max_reference)


def test_max_gradient_goes_to_the_winner_only():
    a = np.array([1.0, 5.0, -2.0])
    b = np.array([2.0, 0.0, -3.0])
    c = np.array([0.0, 6.0, -1.0])
    layer, bottom, top = build_layer('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [2.0, 6.0, -1.0])
    top[0].diff[...] = [10.0, 20.0, 30.0]
    layer.backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 0, 0])
    np.testing.assert_array_equal(bottom[1].diff, [10, 0, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 20, 30])


def test_max_ties_follow_caffe():
    """Caffe: bottom 0 beats bottom 1 only if strictly greater; later bottoms need to be
    strictly greater than the running max. So 0-vs-1 ties go to 1, later ties stay."""
    a = np.array([1.0, 3.0, 2.0])
    b = np.array([1.0, 0.0, 2.0])
    c = np.array([0.0, 3.0, 2.0])
    layer, bottom, top = build_layer('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 1, 0])
    np.testing.assert_array_equal(bottom[1].diff, [1, 0, 1])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0])


def test_backward_respects_propagate_down_and_overwrites():
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((2, 2)) for _ in range(2)]
    layer, bottom, top = build_layer('type: "Eltwise" eltwise_param { coeff: 2 coeff: 3 }', arrays)
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 5.0
    bottom[1].diff[...] = 5.0
    layer.backward(top, [False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 5.0)
    np.testing.assert_array_equal(bottom[1].diff, 3.0)


def test_float32_keeps_dtype():
    arrays = [np.ones((2, 3), np.float32), np.full((2, 3), 2, np.float32)]
    layer, bottom, top = build_layer(
        'type: "Eltwise" eltwise_param { operation: PROD }', arrays, dtype=np.float32
    )
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, 2.0)


def test_wrong_coeff_count():
    with pytest.raises(CaffeliteError, match="3 coeff values for 2 bottoms"):
        build_layer(
            'type: "Eltwise" eltwise_param { coeff: 1 coeff: 2 coeff: 3 }',
            [np.zeros(2), np.zeros(2)],
        )


def test_coeff_only_for_sum():
    with pytest.raises(CaffeliteError, match="coeff is only for operation SUM, not PROD"):
        build_layer(
            'type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }',
            [np.zeros(2), np.zeros(2)],
        )


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(
        CaffeliteError, match=r"bottom\[0\] has shape \(2, 3\), bottom\[1\] has shape \(3, 2\)"
    ):
        build_layer('type: "Eltwise"', [np.zeros((2, 3)), np.zeros((3, 2))])


def test_needs_two_bottoms():
    with pytest.raises(CaffeliteError, match="at least 2 bottom"):
        build_layer('type: "Eltwise"', [np.zeros(2)])
