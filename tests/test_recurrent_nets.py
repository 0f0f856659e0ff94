"""Recurrent layers inside nets: an LSTM learns a task that needs memory, and the
LRCN shape (an LSTM over per-frame CNN features, Caffe's lrcn.prototxt) builds and trains."""

import numpy as np
from google.protobuf import text_format

import caffelite as caffe
from caffelite.proto import caffe_pb2

ECHO_NET = """
name: "echo"
layer { name: "input" type: "Input" top: "data" top: "cont" top: "target"
  input_param { shape { dim: 8 dim: 16 dim: 1 } shape { dim: 8 dim: 16 }
                shape { dim: 8 dim: 16 dim: 1 } } }
layer { name: "lstm" type: "LSTM" bottom: "data" bottom: "cont" top: "h"
  recurrent_param { num_output: 12 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                    bias_filler { type: "constant" value: 0 } } }
layer { name: "predict" type: "InnerProduct" bottom: "h" top: "predict"
  inner_product_param { num_output: 1 axis: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "predict" bottom: "target" top: "loss" }
"""


def solver(net_text: str, **settings):
    param = caffe_pb2.SolverParameter(random_seed=5, display=0, **settings)
    text_format.Merge(net_text, param.net_param)
    return caffe.get_solver(param)


def echo_batch(rng):
    """Random +-1 inputs; the target at step t is the input at step t - 1 (0 at t = 0)."""
    x = rng.choice([-1.0, 1.0], size=(8, 16, 1))
    target = np.zeros_like(x)
    target[1:] = x[:-1]
    cont = np.ones((8, 16))
    cont[0] = 0
    return x, cont, target


def test_lstm_learns_to_echo_the_previous_input():
    """A memoryless model can do no better than a mean squared error of 7/8 here."""
    s = solver(ECHO_NET, base_lr=0.05, lr_policy="fixed", type="Adam", max_iter=1000)
    rng = np.random.default_rng(0)
    blobs = s.net.blobs
    for _ in range(250):
        blobs["data"].data[...], blobs["cont"].data[...], blobs["target"].data[...] = echo_batch(
            rng
        )
        s.step(1)
    x, cont, target = echo_batch(rng)
    out = s.net.forward(data=x, cont=cont, target=target)
    mse = float(np.mean((blobs["predict"].data - target) ** 2))
    assert mse < 0.05, f"mean squared error {mse:.3f} (loss {float(out['loss']):.3f})"


LRCN_NET = """
name: "lrcn_small"
layer { name: "input" type: "Input" top: "data" top: "label" top: "cont"
  input_param { shape { dim: 24 dim: 1 dim: 8 dim: 8 } shape { dim: 24 } shape { dim: 24 } } }
layer { name: "reshape-label" type: "Reshape" bottom: "label" top: "reshape-label"
  reshape_param { shape { dim: 6 dim: 4 } } }
layer { name: "reshape-cm" type: "Reshape" bottom: "cont" top: "reshape-cm"
  reshape_param { shape { dim: 6 dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "reshape-fc6" type: "Reshape" bottom: "fc6" top: "fc6-reshape"
  reshape_param { shape { dim: 6 dim: 4 dim: 16 } } }
layer { name: "lstm1" type: "LSTM" bottom: "fc6-reshape" bottom: "reshape-cm" top: "lstm1"
  recurrent_param { num_output: 16 weight_filler { type: "uniform" min: -0.08 max: 0.08 }
                    bias_filler { type: "constant" value: 0 } } }
layer { name: "lstm1-drop" type: "Dropout" bottom: "lstm1" top: "lstm1-drop"
  dropout_param { dropout_ratio: 0.2 } }
layer { name: "fc8-final" type: "InnerProduct" bottom: "lstm1-drop" top: "fc8-final"
  inner_product_param { num_output: 3 axis: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8-final" bottom: "reshape-label"
  top: "loss" softmax_param { axis: 2 } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc8-final" bottom: "reshape-label"
  top: "accuracy" accuracy_param { axis: 2 } }
"""


def clip_batch(rng):
    """4 clips of 6 frames, time-major; a clip's label is where its bright square sits,
    and frames are noisy, so averaging over time (the LSTM's job) helps."""
    labels = rng.integers(0, 3, size=4)
    frames = rng.standard_normal((6, 4, 1, 8, 8)) * 0.8
    for n, label in enumerate(labels):
        frames[:, n, 0, 1 + 2 * label : 3 + 2 * label, 2:6] += 1.5
    cont = np.ones((6, 4))
    cont[0] = 0
    return frames.reshape(24, 1, 8, 8), np.tile(labels, 6).astype(float), cont.reshape(24)


def test_lrcn_shaped_net_builds_and_trains():
    s = solver(LRCN_NET, base_lr=0.01, lr_policy="fixed", type="Adam", max_iter=1000)
    net = s.net
    assert net.blobs["lstm1"].shape == (6, 4, 16)
    assert [b.shape for b in net.params["lstm1"]] == [(64, 16), (64,), (64, 16)]
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(60):
        net.blobs["data"].data[...], net.blobs["label"].data[...], net.blobs["cont"].data[...] = (
            clip_batch(rng)
        )
        s.step(1)
        losses.append(float(net.blobs["loss"].data))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses


def test_a_test_net_shares_the_trained_lstm_weights():
    """Solver's test nets share weights by layer name; the unrolled net must follow."""
    s = solver(ECHO_NET, base_lr=0.05, lr_policy="fixed", type="Adam", max_iter=10)
    param = caffe_pb2.NetParameter()
    text_format.Merge(ECHO_NET, param)
    test_net = caffe.Net(param, caffe.TEST)
    test_net.share_with(s.net)
    rng = np.random.default_rng(8)
    x, cont, target = echo_batch(rng)
    for _ in range(3):
        s.net.blobs["data"].data[...], s.net.blobs["cont"].data[...] = x, cont
        s.net.blobs["target"].data[...] = target
        s.step(1)
    train_out = s.net.forward(data=x, cont=cont, target=target)["loss"].copy()
    test_out = test_net.forward(data=x, cont=cont, target=target)["loss"]
    np.testing.assert_allclose(test_out, train_out, rtol=1e-6)
