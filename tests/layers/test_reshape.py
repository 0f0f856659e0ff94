import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def _text(dims, extra=""):
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'type: "Reshape" reshape_param {{ shape {{ {shape} }} {extra} }}'


@pytest.mark.parametrize(
    ("dims", "extra", "bottom_shape", "expected"),
    [
        ([0, -1], "", (2, 3, 4, 5), (2, 60)),
        ([0, 0, -1], "", (2, 3, 4, 5), (2, 3, 20)),
        ([0, -1, 0], "", (2, 3, 4, 5), (2, 15, 4)),  # the last 0 copies bottom axis 2
        ([-1], "axis: 1", (2, 3, 4, 5), (2, 60)),
        ([-1], "axis: 1 num_axes: 2", (2, 3, 4, 5), (2, 12, 5)),
        ([1, 1, 1], "axis: 0 num_axes: 0", (2, 3), (1, 1, 1, 2, 3)),
        ([1, 1], "axis: -1 num_axes: 0", (2, 3), (2, 3, 1, 1)),
        ([1], "axis: 1 num_axes: 0", (2, 3), (2, 1, 3)),
        ([2, 5], "axis: -2", (2, 3, 10), (2, 3, 2, 5)),  # -1 is after the last axis
        ([3, 2, 2], "", (2, 6), (3, 2, 2)),
        ([2, -1, 2], "axis: 1", (1, 12), (1, 2, 3, 2)),
    ],
)
def test_shapes_forward_and_gradient(dims, extra, bottom_shape, expected):
    x = np.random.default_rng(0).standard_normal(bottom_shape)
    check_layer(_text(dims, extra), [x], reference=lambda x: x.reshape(expected))


def test_top_shares_bottom_data_and_diff():
    x = np.arange(24.0).reshape(2, 3, 4)
    layer, bottom, top = build_layer(_text([0, -1]), [x])
    assert top[0].shape == (2, 12)
    bottom[0].data[1, 2, 3] = -1.0
    layer.forward(bottom, top)
    assert top[0].data[1, 11] == -1.0
    top[0].diff[...] = np.arange(24.0).reshape(2, 12)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.arange(24.0).reshape(2, 3, 4))
    top[0].diff[0, 0] = 77.0  # the same memory from now on
    assert bottom[0].diff[0, 0, 0] == 77.0


def test_reshape_follows_a_new_batch_size():
    layer, bottom, top = build_layer(_text([0, -1]), [np.zeros((2, 3, 4))])
    bottom[0].reshape(5, 3, 4)
    bottom[0].data[...] = 1.5
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (5, 12)
    np.testing.assert_array_equal(top[0].data, 1.5)


@pytest.mark.parametrize(
    ("dims", "extra", "shape", "message"),
    [
        ([-1, -1], "", (2, 3), "more than one -1"),
        ([4, -1], "", (2, 3, 5), r"bottom count 30 \(shape \(2, 3, 5\)\) is not divisible.*\(4\)"),
        ([0, 0, 0, 0], "", (2, 3, 5), r"no axis 3 to copy"),
        (
            [7],
            "",
            (2, 3),
            r"new shape \(7,\) has 7 elements but the bottom of shape \(2, 3\) has 6",
        ),
        ([1], "axis: 4", (2, 3), r"axis 4 is out of range for a 2-axis bottom"),
        ([1], "axis: -4", (2, 3), r"axis -4 is out of range"),
        ([1], "num_axes: -2", (2, 3), "num_axes must be >= 0"),
        ([6], "axis: 1 num_axes: 2", (2, 3), r"1 \+ 2 = 3 is beyond the 2 axes"),
        ([2, -2], "", (2, 3), "a dim below -1"),
    ],
)
def test_errors(dims, extra, shape, message):
    with pytest.raises(CaffeliteError, match=message):
        build_layer(_text(dims, extra), [np.zeros(shape)])


def test_no_in_place():
    from caffelite.blob import Blob
    from caffelite.layer import create_layer
    from caffelite.testing import layer_param_from_text

    layer = create_layer(layer_param_from_text(_text([-1])))
    blob = Blob(2, 3)
    with pytest.raises(CaffeliteError, match="in-place"):
        layer.setup_layer([blob], [blob])
