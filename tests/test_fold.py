"""TEST-phase folding: a folded net equals the unfolded one to float32 rounding."""

import numpy as np

from caffelite import kernels
from caffelite.layer import TEST, TRAIN
from caffelite.net import Net
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text

CHAIN = """
name: "folds"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 9 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true filler { type: "gaussian" std: 1 }
    bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }
"""


def make_net(phase=TEST, text=CHAIN):
    param = parse_text(text, caffe_pb2.NetParameter())
    net = Net(param, phase)
    rng = np.random.default_rng(0)
    for name in ("bn1", "bn3"):
        mean, var, factor = net.params[name]
        factor.data[...] = 2.0
        mean.data[...] = rng.standard_normal(mean.shape) * 2.0
        var.data[...] = rng.random(var.shape) * 2.0 + 0.5
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    return net


def plain_forward(net):
    folding, net.folding = net.folding, False
    try:
        net.forward()
    finally:
        net.folding = folding
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def test_folded_forward_equals_the_unfolded_one():
    net = make_net()
    expected = plain_forward(net)
    net.forward()
    assert net._forward_was_folded
    for name, blob in net.blobs.items():
        np.testing.assert_allclose(blob.data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.abs(expected["conv1"]).max() > 0.5  # the chain did something


def test_which_layers_fold():
    net = make_net()
    folds = net._folds()
    names = net._layer_names
    assert {names[c]: [names[i] for i in e.layer_ids] for c, e in folds.items()} == {
        "conv1": ["bn1", "scale1", "relu1"],
        "conv2": ["relu2"],
    }  # bn3 writes a new blob: not folded, so "conv3" stays readable


def test_folded_layers_do_not_run(monkeypatch):
    net = make_net()
    calls = []
    bn = net.layer_dict["bn1"]
    monkeypatch.setattr(bn, "forward", lambda *a: calls.append("bn1"))
    net.forward()
    assert calls == []
    net.forward(end="relu2")  # a partial forward runs every layer
    assert calls == ["bn1"]


def test_weights_edited_after_the_first_forward_are_used():
    net = make_net()
    net.forward()
    net.params["scale1"][0].data[...] *= -1.0
    net.params["conv1"][1].data[...] += 0.25
    expected = plain_forward(net)["conv3"]
    net.forward()
    np.testing.assert_allclose(net.blobs["conv3"].data, expected, rtol=1e-5, atol=1e-5)


LOSS = """
layer { name: "target" type: "Input" top: "target"
  input_param { shape { dim: 2 dim: 2 dim: 3 dim: 2 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "bn3" bottom: "target" top: "loss" }
"""


def test_backward_after_a_folded_forward_matches_the_unfolded_gradients():
    """A TEST net with a loss backpropagates to its weights; after a folded forward the
    backward first reruns the forward unfolded (the folded layers kept nothing)."""
    net = make_net(text=CHAIN + LOSS)
    net.blobs["target"].data[...] = np.random.default_rng(1).standard_normal((2, 2, 3, 2))
    plain_forward(net)
    net.backward()
    expected = {name: net.params[name][0].diff.copy() for name in ("conv1", "scale1")}
    net.clear_param_diffs()
    net.forward()
    assert net._forward_was_folded
    net.backward()
    for name, diff in expected.items():
        np.testing.assert_allclose(net.params[name][0].diff, diff, rtol=1e-5, atol=1e-6)
    assert np.abs(expected["scale1"]).max() > 0  # the gradient reached the folded layers


def test_a_net_with_force_backward_does_not_fold():
    """force_backward says backward follows every forward (saliency, deep dream): folding
    would make each backward rerun the forward, so the net runs unfolded."""
    net = make_net(text=CHAIN.replace('name: "folds"', 'name: "folds"\nforce_backward: true'))
    assert net._folds() == {}
    net.forward()
    assert not net._forward_was_folded


def test_train_nets_never_fold():
    assert make_net(TRAIN)._folds() == {}


BIASED_RELU = """
name: "biased_relu"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 9 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


def test_a_batch_first_convolution_adds_its_bias_in_the_folded_pass():
    """A pointwise convolution runs batch-first, where the bias joins the ReLU's pass
    (``y * 1 + bias``, then the ReLU): bit-identical to the unfolded net."""
    net = Net(parse_text(BIASED_RELU, caffe_pb2.NetParameter()), TEST)
    net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((2, 3, 9, 8))
    assert net.layer_dict["conv"].layout == "batch_first"
    assert np.abs(net.params["conv"][1].data).min() > 0  # every channel has a bias
    expected = plain_forward(net)["conv"]
    net.forward()
    assert net._forward_was_folded
    np.testing.assert_array_equal(net.blobs["conv"].data, expected)
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU cut some values


def test_folding_in_gpu_mode_keeps_its_arrays_on_the_device():
    """The scale and shift are computed where the blobs are (the fake device refuses
    host arrays in its kernels), and the folded chain still equals the unfolded one."""
    from caffelite import backend, fake_device

    with backend.gpu_mode_on(fake_device):
        net = make_net()
        expected = plain_forward(net)
        net.forward()
        assert net._forward_was_folded
        for name, blob in net.blobs.items():
            np.testing.assert_allclose(
                blob.data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name
            )


WINOGRAD_CHAIN = """
name: "winograd_folds"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 16 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true filler { type: "gaussian" std: 1 }
    bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "conv3" type: "Convolution" bottom: "conv1" top: "conv3"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "bn3" }
"""


def test_a_winograd_convolution_applies_its_epilogue_in_its_output_transform(monkeypatch):
    """The folded chain (BatchNorm, Scale, leaky ReLU; a ReLU alone) inside Winograd's
    output transform equals the unfolded net, and no separate epilogue pass runs."""
    net = make_net(text=WINOGRAD_CHAIN)
    assert all(net.layer_dict[name].winograd for name in ("conv1", "conv3"))
    expected = plain_forward(net)
    passes = []
    monkeypatch.setattr(kernels, "channel_affine", lambda *args: passes.append(args))
    net.forward()
    assert net._forward_was_folded and passes == []
    for name, blob in net.blobs.items():  # to Winograd's float32 rounding (caffelite.winograd)
        bound = 1e-5 * np.abs(expected[name]).max()
        np.testing.assert_allclose(blob.data, expected[name], rtol=0, atol=bound, err_msg=name)
    assert (expected["conv1"] < 0).any() and (expected["conv3"] == 0).any()  # both ReLUs bit
