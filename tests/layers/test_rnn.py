"""RNN: Caffe's unrolled net against a numpy recurrence, gradients and parameter order."""

import numpy as np
from recurrent_reference import rnn

from caffelite.testing import build_layer, check_layer

TEXT = (
    'type: "RNN" name: "rnn1" recurrent_param { num_output: 4 '
    'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }'
)


def sequences(steps=3, num=2, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    cont = np.ones((steps, num))
    cont[0] = 0
    cont[1, 1] = 0
    return rng.standard_normal((steps, num, dim)), cont


def test_forward_and_gradients():
    x, cont = sequences()

    def reference(x, cont, *weights):
        return rnn(x, cont, *weights)[0]

    layer, _, _ = check_layer(TEXT, [x, cont], reference=reference, bottom_indices=[0])
    # Caffe's order: W_xh, b_h, W_hh, W_ho, b_o
    assert [b.shape for b in layer.blobs] == [(4, 3), (4,), (4, 4), (4, 4), (4,)]


def test_static_input_and_exposed_hidden_state():
    x, cont = sequences()
    cont[0] = 1
    rng = np.random.default_rng(2)
    x_static, h0 = rng.standard_normal((2, 5)), rng.standard_normal((1, 2, 4))
    text = TEXT.replace("num_output: 4", "num_output: 4 expose_hidden: true")

    def reference(x, cont, x_static, h0, w_xh, b_h, w_static, w_hh, w_ho, b_o):
        out, h = rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, h0[0], x_static, w_static)
        return [out, h[None]]

    layer, _, _ = check_layer(
        text, [x, cont, x_static, h0], reference=reference, num_top=2, bottom_indices=[0, 2],
        top_indices=[0],
    )  # fmt: skip
    assert [b.shape for b in layer.blobs][2] == (4, 5)


def test_exposed_state_gets_no_gradient_as_in_caffe():
    x, cont = sequences()
    h0 = np.ones((1, 2, 4))
    text = TEXT.replace("num_output: 4", "num_output: 4 expose_hidden: true")
    layer, bottom, top = build_layer(text, [x, cont, h0], num_top=2)
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    bottom[2].diff[...] = 5
    layer.backward(top, [True, False, True], bottom)
    np.testing.assert_array_equal(bottom[2].diff, 0)
