import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer

COEFF = float(np.float32(0.3))  # what a float proto field really holds


def reduction_reference(op, axis, coeff=1.0):
    def reference(x):
        a = axis % x.ndim if x.ndim else 0
        out = np.zeros(x.shape[:a])
        for idx in np.ndindex(*x.shape[:a]):
            values = x[idx].ravel()
            if op == "SUM":
                total = sum(values)
            elif op == "ASUM":
                total = sum(abs(v) for v in values)
            elif op == "SUMSQ":
                total = sum(v * v for v in values)
            else:
                total = sum(values) / len(values)
            out[idx] = coeff * total
        return out

    return reference


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize(
    ("axis", "shape", "coeff"),
    [(0, (3, 4), 1.0), (1, (2, 3, 2), COEFF), (-1, (2, 2, 3), -2.0), (2, (2, 3, 2, 2), 1.0)],
)
def test_forward_and_gradient(op, axis, shape, coeff):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    x[np.abs(x) < 0.05] = 0.5  # ASUM has a kink at 0
    coeff_text = "" if coeff == 1.0 else f"coeff: {coeff!r}"
    check_layer(
        f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} {coeff_text} }}',
        [x],
        reference=reduction_reference(op, axis, coeff),
    )


def test_default_is_sum_of_everything_into_a_scalar():
    x = np.arange(6.0).reshape(2, 3)
    layer, bottom, top = build_layer('type: "Reduction"', [x])
    layer.forward(bottom, top)
    assert top[0].shape == ()
    assert float(top[0].data) == 15.0


def test_asum_gradient_is_the_sign():
    x = np.array([[-2.0, 0.0, 3.0]])
    layer, bottom, top = build_layer(
        'type: "Reduction" reduction_param { operation: ASUM axis: 1 coeff: 2 }', [x]
    )
    layer.forward(bottom, top)
    top[0].diff[...] = 0.5
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[-1.0, 0.0, 1.0]])


def test_axis_out_of_range():
    with pytest.raises(CaffeliteError, match=r"axis 2 is out of range.*\(2, 3\)"):
        build_layer('type: "Reduction" reduction_param { axis: 2 }', [np.zeros((2, 3))])
