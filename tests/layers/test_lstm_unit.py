"""LSTMUnit: one timestep against the numpy reference, gradients, Caffe's shape checks."""

import numpy as np
import pytest
from recurrent_reference import lstm_unit

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_layer

TEXT = 'type: "LSTMUnit"'


def bottoms(num=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    cont = np.array([[1.0, 0.0, 1.0][:num]])
    return [rng.standard_normal((1, num, hidden)), rng.standard_normal((1, num, 4 * hidden)), cont]


def test_forward_and_gradients():
    def reference(c_prev, gates, cont):
        c, h = lstm_unit(c_prev[0], gates[0], cont[0])
        return [c[None], h[None]]

    check_layer(TEXT, bottoms(), reference=reference, num_top=2, bottom_indices=[0, 1])


def test_cont_zero_forgets_the_cell():
    c_prev, gates, cont = bottoms()
    _, bottom, top = layer_run(c_prev, gates, np.zeros_like(cont))
    changed = c_prev + 100.0
    _, _, top2 = layer_run(changed, gates, np.zeros_like(cont))
    np.testing.assert_array_equal(top[0].data, top2[0].data)
    np.testing.assert_array_equal(top[1].data, top2[1].data)


def layer_run(*arrays):
    layer, bottom, top = build_layer(TEXT, list(arrays), num_top=2)
    layer.forward(bottom, top)
    return layer, bottom, top


def test_no_gradient_to_cont():
    layer, bottom, top = layer_run(*bottoms())
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(1)
    with pytest.raises(CaffeliteError, match="sequence indicators"):
        layer.backward(top, [True, True, True], bottom)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((1, 2, 3), (1, 2, 11), (1, 2)), "1 x N x 4H"),
        (((2, 2, 3), (2, 2, 12), (2, 2)), "c_prev"),
        (((1, 2, 3), (1, 2, 12), (1, 3)), "cont"),
    ],
)
def test_shape_errors(shapes, message):
    with pytest.raises(CaffeliteError, match=message):
        build_layer(TEXT, [np.zeros(s) for s in shapes], num_top=2)
