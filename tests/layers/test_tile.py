import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def tile_reference(axis, tiles):
    """Loops: top index j along ``axis`` reads bottom index j mod size (whole-block repeat)."""

    def reference(x):
        shape = list(x.shape)
        size = shape[axis]
        shape[axis] *= tiles
        out = np.empty(shape)
        for idx in np.ndindex(*shape):
            src = list(idx)
            src[axis] = idx[axis] % size
            out[idx] = x[tuple(src)]
        return out

    return reference


@pytest.mark.parametrize(
    ("extra", "shape", "axis", "tiles"),
    [
        ("tiles: 3", (2, 3, 2), 1, 3),
        ("axis: 0 tiles: 2", (2, 3), 0, 2),
        ("axis: -1 tiles: 4", (2, 2, 3), 2, 4),
        ("axis: 2 tiles: 1", (2, 2, 3), 2, 1),
    ],
)
def test_forward_and_gradient(extra, shape, axis, tiles):
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer(
        f'type: "Tile" tile_param {{ {extra} }}', [x], reference=tile_reference(axis, tiles)
    )


def test_gradient_sums_the_copies():
    layer, bottom, top = build_layer('type: "Tile" tile_param { tiles: 3 }', [np.zeros((1, 2))])
    layer.forward(bottom, top)
    top[0].diff[...] = [[1, 2, 3, 4, 5, 6]]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[1 + 3 + 5, 2 + 4 + 6]])


def test_tiles_must_be_given_and_positive():
    with pytest.raises(CaffeliteError, match="tiles must be given"):
        build_layer('type: "Tile"', [np.zeros((2, 2))])
    with pytest.raises(CaffeliteError, match="tiles must be positive; got 0"):
        build_layer('type: "Tile" tile_param { tiles: 0 }', [np.zeros((2, 2))])
    with pytest.raises(CaffeliteError, match=r"axis 2 is out of range.*\(2, 2\)"):
        build_layer('type: "Tile" tile_param { axis: 2 tiles: 2 }', [np.zeros((2, 2))])
