import math

import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def ranked(values):
    """(value, index) pairs largest first; equal values: larger index first (Caffe's
    std::greater on pairs)."""
    return sorted(((float(v), i) for i, v in enumerate(values)), reverse=True)


def argmax_reference(top_k, out_max_val=False, axis=None):
    def reference(x):
        if axis is None:
            n = x.shape[0]
            top_shape = [1] * max(x.ndim, 3)
            top_shape[0], top_shape[1], top_shape[2] = n, 2 if out_max_val else 1, top_k
            out = np.zeros(top_shape)
            for i in range(n):
                best = ranked(x[i].ravel())[:top_k]
                for j, (value, index) in enumerate(best):
                    out[(i, 0, j) + (0,) * (len(top_shape) - 3)] = index
                    if out_max_val:
                        out[(i, 1, j) + (0,) * (len(top_shape) - 3)] = value
            return out
        a = axis % x.ndim
        moved = np.moveaxis(x, a, -1)
        out = np.zeros(moved.shape[:-1] + (top_k,))
        for idx in np.ndindex(*moved.shape[:-1]):
            best = ranked(moved[idx])[:top_k]
            out[idx] = [value if out_max_val else index for value, index in best]
        return np.moveaxis(out, -1, a)

    return reference


@pytest.mark.parametrize(
    ("extra", "shape", "kwargs"),
    [
        ("", (4, 6), {"top_k": 1}),
        ("top_k: 3", (3, 2, 4), {"top_k": 3}),
        ("out_max_val: true top_k: 2", (3, 5), {"top_k": 2, "out_max_val": True}),
        ("top_k: 2", (2, 3, 2, 2), {"top_k": 2}),
        ("out_max_val: true", (2, 2, 3, 2), {"top_k": 1, "out_max_val": True}),
        ("axis: 1 top_k: 2", (2, 4, 3), {"top_k": 2, "axis": 1}),
        (
            "axis: 1 top_k: 2 out_max_val: true",
            (2, 4, 3),
            {"top_k": 2, "axis": 1, "out_max_val": True},
        ),
        ("axis: -1", (3, 2, 5), {"top_k": 1, "axis": -1}),
        ("axis: 0 top_k: 3", (4, 3), {"top_k": 3, "axis": 0}),
    ],
)
def test_forward(extra, shape, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    check_layer(
        f'type: "ArgMax" argmax_param {{ {extra} }}',
        [x],
        reference=argmax_reference(**kwargs),
        gradient=False,
    )


def test_ties_put_the_larger_index_first():
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]])
    layer, bottom, top = build_layer(
        'type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [x]
    )
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [4, 2, 1, 0])
    np.testing.assert_array_equal(top[0].data[0, 1], [3, 3, 3, 1])
    layer, bottom, top = build_layer('type: "ArgMax" argmax_param { axis: 0 }', [x.T])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [[4]])


def test_integer_tied_data_against_reference():
    x = np.random.default_rng(1).integers(0, 3, (4, 2, 5)).astype(float)  # many ties
    for text, kwargs in [("top_k: 4", {"top_k": 4}), ("axis: 2 top_k: 3", {"top_k": 3, "axis": 2})]:
        check_layer(
            f'type: "ArgMax" argmax_param {{ {text} }}',
            [x],
            reference=argmax_reference(**kwargs),
            gradient=False,
        )


def test_no_gradient():
    layer, bottom, top = build_layer('type: "ArgMax"', [np.zeros((2, 3))])
    assert not layer.allow_force_backward(0)
    layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match="no gradient"):
        layer.backward(top, [True], bottom)


def test_top_k_errors():
    with pytest.raises(CaffeliteError, match=r"top_k 7 exceeds the 6 values per item.*\(2, 2, 3\)"):
        build_layer('type: "ArgMax" argmax_param { top_k: 7 }', [np.zeros((2, 2, 3))])
    with pytest.raises(CaffeliteError, match=r"top_k 4 exceeds the size 3 of axis 2"):
        build_layer('type: "ArgMax" argmax_param { top_k: 4 axis: 2 }', [np.zeros((2, 2, 3))])
    with pytest.raises(CaffeliteError, match="top_k must be at least 1"):
        build_layer('type: "ArgMax" argmax_param { top_k: 0 }', [np.zeros((2, 2))])


def test_reference_is_not_trivial():
    x = np.array([[0.5, -1.0, 2.0, 2.0]])
    assert math.isclose(argmax_reference(2)(x)[0, 0, 0], 3)
    assert math.isclose(argmax_reference(2)(x)[0, 0, 1], 2)
