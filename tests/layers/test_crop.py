import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def crop_reference(axis, offsets):
    """Plain loops: copy every top position from its offset position in the bottom."""

    def reference(x, like):
        n = x.ndim
        per_axis = [0] * n
        for i in range(axis, n):
            per_axis[i] = offsets[0] if len(offsets) == 1 else offsets[i - axis] if offsets else 0
        shape = tuple(like.shape[i] if i >= axis else x.shape[i] for i in range(n))
        out = np.empty(shape)
        for idx in np.ndindex(shape):
            out[idx] = x[tuple(j + o for j, o in zip(idx, per_axis, strict=True))]
        return out

    return reference


@pytest.mark.parametrize(
    ("extra", "axis", "offsets", "shape", "like_shape"),
    [
        ("", 2, [], (2, 3, 5, 5), (1, 1, 3, 2)),
        ("crop_param { offset: 1 }", 2, [1], (2, 3, 5, 4), (2, 3, 3, 3)),
        (
            "crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }",
            1,
            [1, 2, 0],
            (2, 3, 5, 4),
            (7, 2, 3, 4),
        ),
        ("crop_param { axis: 0 offset: 1 }", 0, [1], (4, 3, 3), (2, 2, 2)),
        ("crop_param { axis: -1 offset: 2 }", 2, [2], (2, 3, 6), (9, 9, 3)),
    ],
)
def test_forward_and_gradient(extra, axis, offsets, shape, like_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    like = rng.standard_normal(like_shape)
    check_layer(
        f'type: "Crop" {extra}',
        [x, like],
        reference=crop_reference(axis, offsets),
        bottom_indices=[0],
    )


def test_backward_zero_outside_the_window():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer, bottom, top = build_layer(
        'type: "Crop" crop_param { offset: 1 }', [x, np.zeros((1, 1, 2, 2))]
    )
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[5, 6], [9, 10]])
    bottom[0].diff[...] = 9.0
    bottom[1].diff[...] = 9.0
    top[0].diff[...] = [[[[1, 2], [3, 4]]]]
    layer.backward(top, [True, True], bottom)
    expected = np.zeros((4, 4))
    expected[1:3, 1:3] = [[1, 2], [3, 4]]
    np.testing.assert_array_equal(bottom[0].diff[0, 0], expected)
    np.testing.assert_array_equal(bottom[1].diff, 0.0)  # a shape-only input
    assert layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1)


def test_out_of_bounds_names_shapes():
    with pytest.raises(
        CaffeliteError,
        match=r"axis 3 is out of bounds: size 3 at offset 2.*\(1, 1, 5, 4\).*\(1, 1, 2, 3\)",
    ):
        build_layer(
            'type: "Crop" crop_param { offset: 2 }',
            [np.zeros((1, 1, 5, 4)), np.zeros((1, 1, 2, 3))],
        )


def test_wrong_offset_count():
    with pytest.raises(
        CaffeliteError, match=r"has 3 offsets; give one, or one per cropped axis \(2"
    ):
        build_layer(
            'type: "Crop" crop_param { offset: 0 offset: 0 offset: 0 }',
            [np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))],
        )


def test_axis_count_mismatch():
    with pytest.raises(CaffeliteError, match=r"same number of axes.*\(1, 1, 4, 4\).*\(2, 2\)"):
        build_layer('type: "Crop"', [np.zeros((1, 1, 4, 4)), np.zeros((2, 2))])
