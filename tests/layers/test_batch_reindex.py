import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def reindex_reference(x, indices):
    return np.stack([x[int(i)] for i in indices]) if len(indices) else np.zeros((0,) + x.shape[1:])


@pytest.mark.parametrize(
    ("shape", "indices"),
    [
        ((4, 3), [3.0, 0.0, 1.0, 2.0]),  # permutation
        ((5, 2, 2), [1.0, 1.0, 4.0]),  # repeats and omissions
        ((3, 2, 1, 2), [2.0, 0.0, 2.0, 2.0, 1.0, 0.0]),  # more items than the bottom
        ((2,), [1.0, 1.0, 0.0]),
    ],
)
def test_forward_and_gradient(shape, indices):
    x = np.random.default_rng(0).standard_normal(shape)
    check_layer(
        'type: "BatchReindex"',
        [x, np.array(indices)],
        reference=reindex_reference,
        bottom_indices=[0],
    )


def test_backward_scatter_adds():
    x = np.zeros((3, 2))
    layer, bottom, top = build_layer('type: "BatchReindex"', [x, np.array([2.0, 2.0, 0.0])])
    layer.forward(bottom, top)
    top[0].diff[...] = [[1, 2], [10, 20], [100, 200]]
    bottom[0].diff[...] = 5.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[100, 200], [0, 0], [11, 22]])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(CaffeliteError, match="cannot backpropagate to the indices"):
        layer.backward(top, [True, True], bottom)


@pytest.mark.parametrize("bad", [3.0, -1.0, np.nan])
def test_index_out_of_range(bad):
    layer, bottom, top = build_layer(
        'type: "BatchReindex"', [np.zeros((3, 2)), np.array([0.0, bad])]
    )
    with pytest.raises(
        CaffeliteError, match=r"out of range for bottom\[0\] of shape \(3, 2\).*\[0, 3\)"
    ):
        layer.forward(bottom, top)


def test_indices_must_be_1d():
    with pytest.raises(CaffeliteError, match=r"must be 1-d; got shape \(2, 1\)"):
        build_layer('type: "BatchReindex"', [np.zeros((3, 2)), np.zeros((2, 1))])
