import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def slice_reference(axis, points=None, parts=None):
    def reference(x):
        if points:
            return np.split(x, points, axis=axis)
        return np.split(x, parts, axis=axis)

    return reference


@pytest.mark.parametrize(
    ("text", "shape", "num_top", "reference"),
    [
        ("", (2, 6, 2), 3, slice_reference(1, parts=3)),
        ("slice_param { slice_point: 1 slice_point: 4 }", (2, 6, 2), 3, slice_reference(1, [1, 4])),
        ("slice_param { axis: 0 slice_point: 2 }", (5, 3), 2, slice_reference(0, [2])),
        ("slice_param { axis: -1 }", (2, 3, 4), 2, slice_reference(2, parts=2)),
        ("slice_param { slice_dim: 0 }", (4, 3), 2, slice_reference(0, parts=2)),
        ("slice_param { axis: 2 slice_point: 3 }", (1, 2, 5, 2), 2, slice_reference(2, [3])),
    ],
)
def test_forward_and_gradient(text, shape, num_top, reference):
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer(f'type: "Slice" {text}', [x], num_top=num_top, reference=reference)


def test_slice_then_backward_reassembles_the_diff():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 2))
    layer, bottom, top = build_layer('type: "Slice" slice_param { slice_point: 2 }', [x], num_top=2)
    layer.forward(bottom, top)
    d0, d1 = rng.standard_normal(top[0].shape), rng.standard_normal(top[1].shape)
    top[0].diff[...] = d0
    top[1].diff[...] = d1
    bottom[0].diff[...] = 99.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.concatenate([d0, d1], axis=1))


def test_single_top_is_passed_through():
    x = np.arange(6.0).reshape(2, 3)
    layer, bottom, top = build_layer('type: "Slice"', [x])
    bottom[0].data[1, 2] = -5.0
    layer.forward(bottom, top)
    assert top[0].data[1, 2] == -5.0
    top[0].diff[...] = 2.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 2.0)


def test_not_divisible_names_the_sizes():
    with pytest.raises(CaffeliteError, match=r"3 tops do not evenly divide.*axis 1 of size 5"):
        build_layer('type: "Slice"', [np.zeros((2, 5))], num_top=3)


def test_bad_slice_points():
    with pytest.raises(CaffeliteError, match="2 slice_point values for 2 tops"):
        build_layer(
            'type: "Slice" slice_param { slice_point: 1 slice_point: 2 }',
            [np.zeros((2, 5))],
            num_top=2,
        )
    with pytest.raises(CaffeliteError, match=r"strictly increasing within \(0, 5\)"):
        build_layer(
            'type: "Slice" slice_param { slice_point: 3 slice_point: 2 }',
            [np.zeros((2, 5))],
            num_top=3,
        )
    with pytest.raises(CaffeliteError, match="strictly increasing"):
        build_layer('type: "Slice" slice_param { slice_point: 5 }', [np.zeros((2, 5))], num_top=2)
    with pytest.raises(CaffeliteError, match="either axis or slice_dim"):
        build_layer(
            'type: "Slice" slice_param { axis: 1 slice_dim: 1 }', [np.zeros((2, 4))], num_top=2
        )
    with pytest.raises(CaffeliteError, match=r"slice_dim 2 is out of range"):
        build_layer('type: "Slice" slice_param { slice_dim: 2 }', [np.zeros((2, 4))], num_top=2)
