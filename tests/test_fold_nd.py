"""TEST-phase folding after a 3-D Convolution: exact as in 2-D, and a Scale over the depth
axis (axis -3 of a 5-D blob, which is the channel axis only in 4-D) is left alone."""

import numpy as np
import pytest
from test_fold import make_net, plain_forward

CHAIN_3D = """
name: "folds3d"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { AXIS bias_term: true filler { type: "gaussian" std: 1 }
    bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv1" top: "bn3" }
"""


@pytest.mark.parametrize("axis, folded", [(1, ["bn1", "scale1", "relu1"]), (-3, ["bn1"])])
def test_3d_chain_folds_exactly_over_the_channel_axis_only(axis, folded):
    net = make_net(text=CHAIN_3D.replace("AXIS", f"axis: {axis}"))
    assert net.blobs["conv1"].shape == (2, 4, 4, 5, 6)  # depth 4 == channels 4
    names = net._layer_names
    assert {names[c]: [names[i] for i in e.layer_ids] for c, e in net._folds().items()} == {
        "conv1": folded
    }
    expected = plain_forward(net)
    net.forward()
    assert net._forward_was_folded
    for name, blob in net.blobs.items():
        np.testing.assert_allclose(blob.data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
