"""A loss top's diff as in Caffe (Layer::SetLossWeights): the loss weight is written
into it once, at setup; backward reads whatever it holds; the forward loss is
dot(top data, top diff). A reshape that changes a loss top's shape writes the weight
again."""

import numpy as np
import pytest

import caffelite as caffe
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text

SOFTMAX_NET = """
name: "softmax"
input: "x" input_shape { dim: 6 dim: 4 }
input: "label" input_shape { dim: 6 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "score"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        loss_weight: LOSS_WEIGHT }
"""


def make_net(loss_weight=1.0):
    text = SOFTMAX_NET.replace("LOSS_WEIGHT", str(loss_weight))
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    rng = np.random.default_rng(4)
    net.params["ip"][0].data[...] = rng.normal(size=(3, 4))
    net.blobs["x"].data[...] = rng.normal(size=(6, 4))
    net.blobs["label"].data[...] = [0, 1, 2, 0, 1, 2]
    return net


def gradient(net):
    net.clear_param_diffs()
    loss = net.forward_backward()
    return loss, net.params["ip"][0].diff.copy()


def test_setup_writes_the_loss_weight_into_the_diff():
    net = make_net(loss_weight=2.5)
    assert net.blobs["loss"].diff == pytest.approx(2.5)
    assert not net.blobs["score"].has_diff  # only loss tops


def test_backward_reads_what_the_user_wrote():
    """pycaffe's net.backward(loss=...) sets the diff; it is used, and stays."""
    net = make_net()
    loss_1, grad_1 = gradient(net)
    net.forward()
    net.clear_param_diffs()
    net.backward(loss=np.float32(0.4415))
    np.testing.assert_allclose(net.params["ip"][0].diff, 0.4415 * grad_1, rtol=1e-5)
    loss_kept, grad_kept = gradient(net)  # the diff still holds 0.4415
    np.testing.assert_allclose(grad_kept, 0.4415 * grad_1, rtol=1e-5)
    assert loss_kept == pytest.approx(0.4415 * loss_1, rel=1e-6)  # dot(data, diff)


def test_zeroing_the_diff_switches_the_loss_off():
    net = make_net()
    net.blobs["loss"].diff[...] = 0
    loss, grad = gradient(net)
    assert loss == 0.0
    assert not grad.any()


def test_loss_weight_scales_as_before():
    base_loss, base_grad = gradient(make_net(1.0))
    loss, grad = gradient(make_net(3.0))
    assert loss == pytest.approx(3 * base_loss, rel=1e-6)
    np.testing.assert_allclose(grad, 3 * base_grad, rtol=1e-5)


WEIGHTED_TOP_NET = """
name: "weighted_top"
input: "x" input_shape { dim: 2 dim: 3 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out" loss_weight: 2
        inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }
"""


def test_a_reshaped_loss_top_gets_its_weight_again():
    """A non-scalar loss top that grows (a bigger batch) holds the weight everywhere:
    gradient and loss are those of loss weight 2 (Caffe would leave zeros here)."""
    net = caffe.Net(parse_text(WEIGHTED_TOP_NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    np.testing.assert_array_equal(net.blobs["out"].diff, np.full((2, 2), 2.0))
    net.blobs["x"].reshape(5, 3)
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    net.blobs["x"].data[...] = x
    net.clear_param_diffs()
    loss = net.forward_backward()
    np.testing.assert_array_equal(net.blobs["out"].diff, np.full((5, 2), 2.0))
    assert loss == pytest.approx(2 * x.sum() * 2, rel=1e-6)  # each output is sum(x_i), two
    np.testing.assert_allclose(net.params["ip"][0].diff, np.tile(2 * x.sum(0), (2, 1)))
    # a reshape to the same shape keeps a diff the user wrote
    net.blobs["out"].diff[...] = 0.5
    net.forward()
    np.testing.assert_array_equal(net.blobs["out"].diff, np.full((5, 2), 0.5))
