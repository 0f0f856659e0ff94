import numpy as np
import pytest

from caffelite.errors import CaffeliteError
from caffelite.testing import build_layer, check_gradient


def test_no_tops_and_zero_gradients():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(4)
    layer, bottom, top = build_layer('type: "Silence"', [a, b], num_top=0)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(bottom[0].data, a)
    bottom[0].diff[...] = 5.0
    bottom[1].diff[...] = 5.0
    layer.backward([], [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)
    np.testing.assert_array_equal(bottom[1].diff, 5.0)  # not asked for: untouched


def test_gradient_check_agrees_the_gradient_is_zero():
    rng = np.random.default_rng(1)
    layer, bottom, top = build_layer('type: "Silence"', [rng.standard_normal((2, 2))], num_top=0)
    bottom[0].diff[...] = 3.0
    check_gradient(layer, bottom, top)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)


def test_blob_counts():
    with pytest.raises(CaffeliteError, match="exactly 0 top"):
        build_layer('type: "Silence"', [np.zeros(2)], num_top=1)
    with pytest.raises(CaffeliteError, match="at least 1 bottom"):
        build_layer('type: "Silence"', [], num_top=0)
