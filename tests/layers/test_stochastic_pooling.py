"""STOCHASTIC pooling: Caffe's GPU semantics (unpadded windows clipped to the image; TRAIN
draws an element by activation, TEST takes sum(x^2) / sum(x)), gradients, sampling
frequencies and the ONNX refusal."""

import math

import numpy as np
import pytest

from caffelite import kernels, rng
from caffelite.backend import to_numpy
from caffelite.errors import CaffeliteError
from caffelite.layer import TEST
from caffelite.testing import build_layer, check_gradient

FLT_MIN = float(np.finfo(np.float32).tiny)


def sto_text(body: str) -> str:
    return f'type: "Pooling" pooling_param {{ pool: STOCHASTIC {body} }}'


def windows(x_shape, top_shape, kernel, stride):
    """(n, c, py, px, rows, cols) of every window, Caffe's way: start ``p * stride``,
    no padding, clipped to the image."""
    _, _, h, w = x_shape
    n, c, oh, ow = top_shape
    for b in range(n):
        for ch in range(c):
            for py in range(oh):
                for px in range(ow):
                    r0, q0 = py * stride[0], px * stride[1]
                    rows, cols = (
                        range(r0, min(r0 + kernel[0], h)),
                        range(q0, min(q0 + kernel[1], w)),
                    )
                    yield b, ch, py, px, rows, cols


def positive_input(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, size=shape)  # Caffe's test filler


def test_output_shape_as_caffe():
    layer, _, top = build_layer(
        sto_text("kernel_size: 3 stride: 2"), [positive_input((2, 3, 6, 5))]
    )
    assert top[0].shape == (2, 3, 3, 2)


# ---- the kernels on hand-picked uniforms -------------------------------------------------
def test_train_kernel_hand_computed():
    # Two 2x2 windows of one 2x4 plane, stride 2. Window 0 reads 1, 2, 3, 4 (sum 10):
    # u = 0.35 gives the threshold 3.5, first reached by the running sum 1, 3, 6 at
    # the third element (value 3, position 1 * 4 + 0). Window 1 reads 0, 6, 0, 2 (sum 8):
    # u = 0.75 gives 6, reached at the second element exactly (value 6, position 3).
    x = np.array([[[[1.0, 2.0, 0.0, 6.0], [3.0, 4.0, 0.0, 2.0]]]])
    y = np.zeros((1, 1, 1, 2))
    sampled = np.zeros((1, 1, 1, 2), np.int32)
    kernels.stochastic_pool_forward_train(
        x, y, np.array([[[[0.35, 0.75]]]]), sampled, (2, 2), (2, 2)
    )
    np.testing.assert_array_equal(y, [[[[3.0, 6.0]]]])
    np.testing.assert_array_equal(sampled, [[[[4, 3]]]])


def test_train_kernel_never_draws_a_zero_before_the_mass():
    # u = 1 (the top of Caffe's (0, 1] range) takes the element that completes the sum:
    # the last non-zero one, never the zeros after it.
    x = np.array([[[[0.0, 5.0], [0.0, 0.0]]]])
    y, sampled = np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int32)
    kernels.stochastic_pool_forward_train(x, y, np.ones((1, 1, 1, 1)), sampled, (2, 2), (2, 2))
    assert (y[0, 0, 0, 0], sampled[0, 0, 0, 0]) == (5.0, 1)


def test_train_kernel_negative_window_falls_back_to_last_element():
    # sum -2, threshold 0.25 * -2 = -0.5: the running sums -1, -2 never reach it.
    x = np.array([[[[-1.0, -1.0]]]])
    y, sampled = np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int32)
    kernels.stochastic_pool_forward_train(
        x, y, np.full((1, 1, 1, 1), 0.25), sampled, (1, 2), (1, 2)
    )
    assert (y[0, 0, 0, 0], sampled[0, 0, 0, 0]) == (-1.0, 1)


# ---- the layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["kernel_size: 3 stride: 2", "kernel_h: 2 kernel_w: 3 stride: 1"])
def test_train_picks_an_element_of_its_window(body):
    rng.set_random_seed(1701)
    x = positive_input((2, 3, 6, 5))
    layer, bottom, top = build_layer(sto_text(body), [x])
    layer.forward(bottom, top)
    sampled = layer.argmax
    for b, ch, py, px, rows, cols in windows(x.shape, top[0].shape, layer.kernel, layer.stride):
        where = int(sampled[b, ch, py, px])
        r, q = divmod(where, x.shape[3])
        assert r in rows and q in cols, f"window ({py}, {px}) drew ({r}, {q})"
        assert top[0].data[b, ch, py, px] == x[b, ch, r, q]


def test_train_draws_from_the_shared_stream_reproducibly():
    x = positive_input((2, 3, 6, 5), seed=1)
    rng.set_random_seed(5)
    layer, bottom, top = build_layer(sto_text("kernel_size: 3 stride: 2"), [x])
    layer.forward(bottom, top)
    first = top[0].data.copy()
    state = rng.get_state()
    layer.forward(bottom, top)
    second = top[0].data.copy()
    assert not np.array_equal(first, second)  # a new draw each forward
    rng.set_state(state)  # what a resumed run does
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, second)


def test_sampling_frequencies_match_the_activations():
    # One 2x2 window with activations 1, 2, 3, 4 repeated over 40000 channels: each
    # element's count is Binomial(N, x / 10). Five standard deviations per cell bound
    # the chance of a false failure by 4 * 5.7e-7 (normal approximation, N p >= 4000).
    n = 40000
    probabilities = np.array([0.1, 0.2, 0.3, 0.4])
    x = np.broadcast_to(np.array([[1.0, 2.0], [3.0, 4.0]]), (1, n, 2, 2)).copy()
    rng.set_random_seed(2024)
    layer, bottom, top = build_layer(sto_text("kernel_size: 2 stride: 2"), [x])
    layer.forward(bottom, top)
    counts = np.bincount(to_numpy(layer.argmax).ravel(), minlength=4)
    expected = n * probabilities
    sd = np.sqrt(n * probabilities * (1 - probabilities))
    assert np.all(np.abs(counts - expected) < 5 * sd), (counts, expected)


def test_train_mean_is_the_test_value():
    # Averaged over many draws the TRAIN output tends to the TEST output (its expectation):
    # 2000 draws per window, 5 standard errors of the window's own spread.
    x = positive_input((1, 2, 5, 5), seed=3)
    text = sto_text("kernel_size: 3 stride: 2")
    rng.set_random_seed(11)
    layer, bottom, top = build_layer(text, [x])
    draws = []
    for _ in range(2000):
        layer.forward(bottom, top)
        draws.append(top[0].data.copy())
    draws = np.array(draws)
    test_layer, test_bottom, test_top = build_layer(text, [x], phase=TEST)
    test_layer.forward(test_bottom, test_top)
    error = np.abs(draws.mean(axis=0) - test_top[0].data)
    assert np.all(error < 5 * draws.std(axis=0) / math.sqrt(len(draws)) + 1e-12)


@pytest.mark.parametrize(
    "shape, body",
    [
        ((2, 3, 6, 5), "kernel_size: 3 stride: 2"),
        ((1, 2, 7, 7), "kernel_size: 3 stride: 2 pad: 1"),  # pad adds cells, shifts nothing
        ((1, 1, 4, 6), "kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3"),
    ],
)
def test_test_phase_is_the_probability_weighted_average(shape, body):
    x = positive_input(shape, seed=4)
    x[0, 0, :3, :3] = 0.0  # window (0, 0) is all zero: 0 (FLT_MIN in the denominator)
    layer, bottom, top = build_layer(sto_text(body), [x], phase=TEST)
    layer.forward(bottom, top)
    expected = np.zeros(top[0].shape)
    for b, ch, py, px, rows, cols in windows(x.shape, top[0].shape, layer.kernel, layer.stride):
        window = x[b, ch][np.ix_(rows, cols)]
        expected[b, ch, py, px] = (window**2).sum() / (FLT_MIN + window.sum())
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-14, atol=0)
    assert top[0].data[0, 0, 0, 0] == 0.0
    # The TEST value lies between the window's mean and its maximum.
    for b, ch, py, px, rows, cols in windows(x.shape, top[0].shape, layer.kernel, layer.stride):
        window = x[b, ch][np.ix_(rows, cols)]
        assert window.mean() - 1e-12 <= top[0].data[b, ch, py, px] <= window.max() + 1e-12


def test_gradient_with_the_draws_held_fixed(monkeypatch):
    # The checker re-runs forward for every finite difference; reseeding the shared stream
    # before each forward keeps the same uniforms, so (away from a threshold, which is
    # asserted below) the same elements are drawn and the layer is linear in x.
    x = positive_input((2, 3, 6, 5), seed=6)
    layer, bottom, top = build_layer(sto_text("kernel_size: 3 stride: 2"), [x])
    forward = layer.forward

    def forward_with_fixed_draws(bottom, top):
        rng.set_random_seed(1701)
        forward(bottom, top)

    monkeypatch.setattr(layer, "forward", forward_with_fixed_draws)
    layer.forward(bottom, top)
    drawn = to_numpy(layer.argmax).copy()
    check_gradient(layer, bottom, top)
    np.testing.assert_array_equal(to_numpy(layer.argmax), drawn)


def test_backward_routes_to_the_drawn_elements_and_sums_overlaps():
    x = positive_input((1, 1, 5, 5), seed=7)
    rng.set_random_seed(8)
    layer, bottom, top = build_layer(sto_text("kernel_size: 3 stride: 1"), [x])
    layer.forward(bottom, top)
    dy = np.random.default_rng(9).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    expected = np.zeros(25)
    np.add.at(expected, to_numpy(layer.argmax).ravel(), dy.ravel())
    np.testing.assert_allclose(bottom[0].diff.ravel(), expected, rtol=1e-15)


# ---- refusals ----------------------------------------------------------------------------
def test_test_phase_backward_is_refused():
    layer, bottom, top = build_layer(
        sto_text("kernel_size: 2"), [positive_input((1, 1, 4, 4))], phase=TEST
    )
    layer.forward(bottom, top)
    with pytest.raises(CaffeliteError, match="only after a TRAIN forward"):
        layer.backward(top, [True], bottom)


def test_window_starting_past_the_image_is_refused():
    # pad 1 on 6 rows gives 4 outputs; unshifted, the last window would start at row 6.
    with pytest.raises(CaffeliteError, match="starts outside the input.*use less pad"):
        build_layer(sto_text("kernel_size: 3 stride: 2 pad: 1"), [positive_input((1, 1, 6, 6))])


def test_mask_top_is_refused():
    with pytest.raises(CaffeliteError, match="only MAX pooling has a second"):
        build_layer(sto_text("kernel_size: 2"), [positive_input((1, 1, 4, 4))], num_top=2)


def test_onnx_export_is_refused():
    pytest.importorskip("onnx")
    from google.protobuf import text_format

    import caffelite as caffe
    from caffelite.onnx import export
    from caffelite.proto import caffe_pb2

    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
    layer { name: "pool" type: "Pooling" bottom: "x" top: "y"
            pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }
    """
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)
    with pytest.raises(CaffeliteError, match=r"layer 'pool'.*STOCHASTIC pooling has no ONNX"):
        export(net)
