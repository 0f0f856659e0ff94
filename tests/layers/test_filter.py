import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer


def filter_reference(*arrays):
    *data, selector = arrays
    keep = [i for i in range(selector.shape[0]) if selector.reshape(-1)[i] != 0]
    return [np.array([a[i] for i in keep]).reshape((len(keep),) + a.shape[1:]) for a in data]


@pytest.mark.parametrize(
    ("shapes", "selector"),
    [
        ([(5, 3)], [1.0, 0.0, 1.0, 1.0, 0.0]),
        ([(4, 2, 2), (4,)], [0.0, 2.5, 0.0, -1.0]),  # any non-zero keeps
        ([(3, 2), (3, 1, 2)], [[[1.0]], [[1.0]], [[1.0]]]),
        ([(3, 2)], [0.0, 0.0, 1.0]),
    ],
)
def test_forward_and_gradient(shapes, selector):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes] + [np.array(selector)]
    num = len(shapes)
    layer, _, _ = check_layer(
        'type: "Filter"',
        arrays,
        num_top=num,
        reference=filter_reference,
        bottom_indices=list(range(num)),
    )
    assert not layer.allow_force_backward(num)
    assert layer.allow_force_backward(0)


def test_first_reshape_keeps_all_items_then_follows_the_selector():
    """At net setup the selector holds no data yet: Caffe sizes the tops with all N."""
    x = np.arange(8.0).reshape(4, 2)
    layer, bottom, top = build_layer('type: "Filter"', [x, np.array([0.0, 1.0, 0.0, 1.0])])
    assert top[0].shape == (4, 2)
    layer.reshape(bottom, top)
    assert top[0].shape == (2, 2)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [[2, 3], [6, 7]])


def test_backward_zeroes_dropped_items():
    x = np.ones((4, 2))
    layer, bottom, top = build_layer('type: "Filter"', [x, np.array([0.0, 1.0, 0.0, 1.0])])
    layer.forward(bottom, top)
    top[0].diff[...] = [[1, 2], [3, 4]]
    bottom[0].diff[...] = 9.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0, 0], [1, 2], [0, 0], [3, 4]])
    with pytest.raises(CaffeliteError, match="cannot backpropagate to the selector"):
        layer.backward(top, [True, True], bottom)


def test_nothing_selected():
    layer, bottom, top = build_layer('type: "Filter"', [np.ones((3, 2)), np.zeros(3)])
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (0, 2)


def test_errors():
    with pytest.raises(CaffeliteError, match="one top per filtered bottom: 1 bottoms.*2 tops"):
        build_layer('type: "Filter"', [np.zeros((2, 2)), np.ones(2)], num_top=2)
    with pytest.raises(CaffeliteError, match=r"selector.*\(N,\) or \(N, 1, ...\); got \(2, 2\)"):
        build_layer('type: "Filter"', [np.zeros((2, 2)), np.ones((2, 2))])
    with pytest.raises(
        CaffeliteError, match=r"bottom\[0\] of shape \(3, 2\).*selector of shape \(2,\)"
    ):
        build_layer('type: "Filter"', [np.zeros((3, 2)), np.ones(2)])
