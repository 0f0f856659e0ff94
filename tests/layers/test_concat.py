import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def concat_reference(axis):
    def reference(*arrays):
        return np.concatenate(arrays, axis=axis)

    return reference


@pytest.mark.parametrize(
    ("text", "shapes", "axis"),
    [
        ("", [(2, 3, 2, 2), (2, 1, 2, 2), (2, 2, 2, 2)], 1),
        ("concat_param { axis: 0 }", [(1, 3, 2), (3, 3, 2)], 0),
        ("concat_param { axis: -1 }", [(2, 3, 1), (2, 3, 4)], 2),
        ("concat_param { axis: 2 }", [(2, 2, 3, 2), (2, 2, 1, 2)], 2),
        ("concat_param { concat_dim: 0 }", [(2, 3), (1, 3), (2, 3)], 0),
        ("concat_param { concat_dim: 1 }", [(2, 3), (2, 1)], 1),
    ],
)
def test_forward_and_gradient(text, shapes, axis):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    check_layer(f'type: "Concat" {text}', arrays, reference=concat_reference(axis))


def test_backward_copies_slices_and_respects_propagate_down():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal((2, k, 3)) for k in (1, 2, 3))
    layer, bottom, top = build_layer('type: "Concat"', [a, b, c])
    layer.forward(bottom, top)
    dtop = rng.standard_normal(top[0].shape)
    top[0].diff[...] = dtop
    bottom[1].diff[...] = 7.0
    layer.backward(top, [True, False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dtop[:, 0:1])
    np.testing.assert_array_equal(bottom[1].diff, 7.0)
    np.testing.assert_array_equal(bottom[2].diff, dtop[:, 3:6])


def test_single_bottom_is_passed_through():
    x = np.arange(6.0).reshape(2, 3)
    layer, bottom, top = build_layer('type: "Concat"', [x])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, x)
    bottom[0].data[0, 0] = 42.0
    assert top[0].data[0, 0] == 42.0  # shared memory, no copy
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 3.0)


def test_reshape_follows_bottom_shapes():
    layer, bottom, top = build_layer('type: "Concat"', [np.zeros((2, 3)), np.zeros((2, 1))])
    bottom[0].reshape(5, 2)
    bottom[1].reshape(5, 4)
    bottom[0].data[...] = 1.0
    bottom[1].data[...] = 2.0
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (5, 6)
    np.testing.assert_array_equal(top[0].data[:, :2], 1.0)
    np.testing.assert_array_equal(top[0].data[:, 2:], 2.0)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(CaffeliteError, match=r"except along axis 1.*\(2, 3, 4\).*\(2, 3, 5\)"):
        build_layer('type: "Concat"', [np.zeros((2, 3, 4)), np.zeros((2, 3, 5))])
    with pytest.raises(CaffeliteError, match=r"bottom\[1\] has shape \(2, 3\)"):
        build_layer('type: "Concat"', [np.zeros((2, 3, 4)), np.zeros((2, 3))])


def test_axis_errors():
    with pytest.raises(CaffeliteError, match="either axis or concat_dim"):
        build_layer('type: "Concat" concat_param { axis: 0 concat_dim: 0 }', [np.zeros((2, 2))])
    with pytest.raises(CaffeliteError, match=r"concat_dim 2 is out of range.*\(2, 2\)"):
        build_layer('type: "Concat" concat_param { concat_dim: 2 }', [np.zeros((2, 2))] * 2)
    with pytest.raises(CaffeliteError, match=r"axis 3 is out of range.*\(2, 2\)"):
        build_layer('type: "Concat" concat_param { axis: 3 }', [np.zeros((2, 2))] * 2)
