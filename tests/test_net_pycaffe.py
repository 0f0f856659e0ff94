"""Net's pycaffe-only surface (caffelite/net_pycaffe.py): _caffe.Net's underscore names,
the layer hooks, and pycaffe's constructor keywords."""

import numpy as np
import pytest

import caffelite as caffe
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text

MLP = """
name: "mlp"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


@pytest.fixture
def mlp_file(tmp_path):
    path = tmp_path / "mlp.prototxt"
    path.write_text(MLP)
    return path


@pytest.fixture
def net(mlp_file):
    net = caffe.Net(mlp_file, caffe.TRAIN)
    rng = np.random.default_rng(1)
    net.blobs["x"].data[...] = rng.random((4, 3))
    net.blobs["y"].data[...] = rng.random((4, 2))
    return net


def test_pycaffes_constructor_keywords(mlp_file, tmp_path, net):
    weights = tmp_path / "mlp.caffemodel"
    net.save(weights)
    keyword = caffe.Net(network_file=str(mlp_file), phase=caffe.TEST, weights=str(weights))
    assert keyword.phase == caffe.TEST
    np.testing.assert_array_equal(keyword.params["ip1"][0].data, net.params["ip1"][0].data)
    legacy = caffe.Net(str(mlp_file), str(weights), caffe.TEST)
    np.testing.assert_array_equal(legacy.params["ip2"][0].data, net.params["ip2"][0].data)


def test_index_names_match_the_named_views(net):
    names = list(net.blobs)
    assert [names[i] for i in net._inputs] == net.inputs == ["x", "y"]
    assert [names[i] for i in net._outputs] == net.outputs == ["loss"]
    relu = net._layer_names.index("relu")
    assert net._bottom_ids(relu) == net._top_ids(relu) == [names.index("h")]
    loss = net._layer_names.index("loss")
    assert [names[i] for i in net._bottom_ids(loss)] == net.bottom_names["loss"]
    assert net._blob_loss_weights[names.index("loss")] == 1.0


def test_underscore_forward_and_backward_run_layer_ranges(net):
    full_loss = net._forward(0, len(net.layers) - 1)
    assert full_loss == pytest.approx(float(net.blobs["loss"].data))
    out = net.blobs["out"].data.copy()
    net.blobs["out"].data[...] = 0
    net._forward(net._layer_names.index("ip2"), net._layer_names.index("ip2"))
    np.testing.assert_array_equal(net.blobs["out"].data, out)
    net._backward(len(net.layers) - 1, 0)
    # EuclideanLoss: d loss / d out = (out - y) / N.
    expected = (out - net.blobs["y"].data) / 4
    np.testing.assert_allclose(net.blobs["out"].diff, expected, rtol=1e-5)


def test_batch_pads_the_last_batch_with_zeros(net):
    xs = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    batches = list(net._batch({"x": xs}))
    assert [b["x"].shape for b in batches] == [(4, 3), (4, 3)]
    np.testing.assert_array_equal(batches[0]["x"], xs[:4])
    np.testing.assert_array_equal(batches[1]["x"][:2], xs[4:])
    np.testing.assert_array_equal(batches[1]["x"][2:], 0)


def test_set_input_arrays_underscore_feeds_memory_data():
    text = """
    layer { name: "data" type: "MemoryData" top: "data" top: "label"
            memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }
    """
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    data = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    labels = np.array([3, 5], dtype=np.float32).reshape(2, 1, 1, 1)
    net._set_input_arrays(data, labels)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data)
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [3, 5])


def test_hooks_run_around_each_layer_in_caffes_order(net):
    calls = []
    net.before_forward(lambda i: calls.append(("before_forward", i)))
    net.after_forward(lambda i: calls.append(("after_forward", i)))
    net.before_backward(lambda i: calls.append(("before_backward", i)))
    net.after_backward(lambda i: calls.append(("after_backward", i)))
    n = len(net.layers)
    net.forward()
    assert calls == [(k, i) for i in range(n) for k in ("before_forward", "after_forward")]
    calls.clear()
    net.backward()
    # Backward hooks run for every layer, the Input layers too, which need no backward.
    assert not net.layer_need_backward[0]
    order = [(k, i) for i in reversed(range(n)) for k in ("before_backward", "after_backward")]
    assert calls == order


def test_hooks_see_each_layer_between_its_inputs_and_outputs(net):
    """An after_forward hook sees the layer's top already computed; a before_forward
    hook sees it not yet computed (pycaffe users read activations this way)."""
    ip2 = net._layer_names.index("ip2")
    seen = {}
    net.blobs["out"].data[...] = -7
    net.before_forward(lambda i: seen.setdefault(("before", i), net.blobs["out"].data.copy()))
    net.after_forward(lambda i: seen.setdefault(("after", i), net.blobs["out"].data.copy()))
    net.forward()
    assert (seen[("before", ip2)] == -7).all()
    np.testing.assert_array_equal(seen[("after", ip2)], net.blobs["out"].data)


def test_hooks_belong_to_one_net_and_run_during_solver_steps(tmp_path, mlp_file, net):
    other = caffe.Net(mlp_file, caffe.TRAIN)
    counts = []
    net.after_backward(counts.append)
    other.forward()
    other.backward()
    assert counts == []
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{mlp_file}" base_lr: 0.1 lr_policy: "fixed" max_iter: 2\n')
    solver = caffe.SGDSolver(str(solver_file))
    forwards = []
    solver.net.before_forward(forwards.append)
    solver.step(2)
    assert forwards == list(range(len(solver.net.layers))) * 2
