"""Legacy V0/V1 nets: upgrade to the current format, in memory, via Net, and the tools."""

import importlib.util

import numpy as np
import pytest
from conftest import REPO

import caffelite as caffe
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text, read_binary, read_text, write_binary_atomic
from caffelite.upgrade import upgrade_net
from caffelite.upgrade_v1 import upgrade_v1_layer_type, upgrade_v1_net

V1_LENET = """
name: "LeNet"
layers { name: "mnist" type: DATA top: "data" top: "label"
         data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64
                      scale: 0.00390625 }
         include: { phase: TRAIN } }
layers { name: "mnist" type: DATA top: "data" top: "label"
         data_param { source: "mnist_test_lmdb" backend: LMDB batch_size: 100
                      scale: 0.00390625 }
         include: { phase: TEST } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 20 kernel_size: 5 stride: 1
                             weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "accuracy" type: ACCURACY bottom: "ip1" bottom: "label" top: "accuracy"
         include: { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss" }
"""

MODERN_LENET = """
name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        data_param { source: "mnist_test_lmdb" backend: LMDB batch_size: 100 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 1
                            weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def net_param(text):
    return parse_text(text, caffe_pb2.NetParameter())


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def needs_types(*types):
    missing = sorted(set(types) - set(caffe.layer_type_list()))
    if missing:
        pytest.skip(f"layer types not registered yet: {', '.join(missing)}")


def test_v1_lenet_upgrades_to_the_modern_layers():
    param = net_param(V1_LENET)
    upgrade_v1_net(param, "v1_lenet")
    expected = net_param(MODERN_LENET)
    assert len(param.layers) == 0
    for mine, theirs in zip(param.layer, expected.layer, strict=True):
        assert mine == theirs, f"layer {theirs.name}:\n{mine}\n!=\n{theirs}"
    assert param == expected
    ip1 = param.layer[4]
    assert [p.lr_mult for p in ip1.param] == [1.0, 2.0]
    assert not param.layer[0].data_param.HasField("scale")  # moved to transform_param


def test_param_names_share_modes_loss_weights_and_excludes():
    param = net_param("""
        layers { name: "a" type: INNER_PRODUCT bottom: "x" top: "a"
                 param: "w" param: "" blob_share_mode: PERMISSIVE blobs_lr: 0
                 loss_weight: 0.5 exclude { phase: TEST stage: "deploy" }
                 inner_product_param { num_output: 3 } }
        layers { name: "b" type: EUCLIDEAN_LOSS bottom: "a" bottom: "y" top: "l"
                 loss_param { normalize: false } }
    """)
    upgrade_v1_net(param)
    a, b = param.layer
    assert [s.name for s in a.param] == ["w", ""]
    assert a.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert a.param[0].lr_mult == 0 and a.param[0].HasField("lr_mult")
    assert not a.param[1].HasField("lr_mult") and not a.param[1].HasField("share_mode")
    assert list(a.loss_weight) == [0.5]
    assert a.exclude[0].phase == caffe.TEST and list(a.exclude[0].stage) == ["deploy"]
    assert b.type == "EuclideanLoss" and b.loss_param.normalize is False


def test_every_v1_type_has_its_type_string():
    v1 = caffe_pb2.V1LayerParameter
    assert upgrade_v1_layer_type(v1.SOFTMAX_LOSS) == "SoftmaxWithLoss"
    assert upgrade_v1_layer_type(v1.TANH) == "TanH"
    assert upgrade_v1_layer_type(v1.HDF5_DATA) == "HDF5Data"
    assert upgrade_v1_layer_type(v1.NONE) == ""
    for value in v1.LayerType.values():
        upgrade_v1_layer_type(value)  # all known
    with pytest.raises(CaffeliteError, match="unknown V1 layer type 99"):
        upgrade_v1_layer_type(99)


def test_v1_net_builds_through_net_and_its_input_fields():
    text = """
        name: "v1" input: "x" input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
        input: "y" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
        layers { name: "flat" type: FLATTEN bottom: "x" top: "f" }
        layers { name: "relu" type: RELU bottom: "f" top: "f" }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "f" bottom: "y" top: "loss" }
    """
    net = caffe.Net(net_param(text), caffe.TRAIN)
    assert net._layer_names == ["input", "flat", "relu", "loss"]
    assert [layer.type for layer in net.layers] == ["Input", "Flatten", "ReLU", "SoftmaxWithLoss"]
    out = net.forward(x=np.zeros((2, 3, 1, 1)), y=np.array([[[[0.0]]], [[[2.0]]]]))
    np.testing.assert_allclose(out["loss"], np.log(3), rtol=1e-6)


def _v1_caffemodel():
    rng = np.random.default_rng(3)
    weight, bias = rng.standard_normal((4, 6)), rng.standard_normal(4)
    param = caffe_pb2.NetParameter(name="v1")
    ip = param.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    ip.bottom.append("x")
    ip.top.append("ip")
    ip.blobs_lr.extend([1, 2])
    ip.inner_product_param.num_output = 4
    for values in (weight, bias):
        blob = ip.blobs.add()
        blob.shape.dim.extend(values.shape)
        blob.data.extend(values.ravel().tolist())
    legacy = param.layers.add(name="legacy", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    blob = legacy.blobs.add(num=1, channels=1, height=2, width=3)  # the legacy 4-d form
    blob.data.extend([1, 2, 3, 4, 5, 6])
    return param, weight.astype(np.float32), bias.astype(np.float32)


def test_v1_caffemodel_blobs_survive_the_upgrade(tmp_path):
    param, weight, bias = _v1_caffemodel()
    path = tmp_path / "v1.caffemodel"
    write_binary_atomic(path, param)
    loaded = read_binary(path, caffe_pb2.NetParameter())
    upgrade_net(loaded, str(path))
    ip = loaded.layer[0]
    assert ip.type == "InnerProduct" and [p.lr_mult for p in ip.param] == [1, 2]
    np.testing.assert_array_equal(np.asarray(ip.blobs[0].data).reshape(4, 6), weight)
    np.testing.assert_array_equal(np.asarray(ip.blobs[1].data), bias)
    assert loaded.layer[1].blobs[0].height == 2 and loaded.layer[1].blobs[0].width == 3

    tool = load_tool("upgrade_net_proto_binary")
    out = tmp_path / "new.caffemodel"
    assert tool.main([str(path), str(out)]) == 0
    assert read_binary(out, caffe_pb2.NetParameter()) == loaded


def test_v1_caffemodel_weights_load_into_a_net(tmp_path):
    needs_types("InnerProduct")
    param, weight, bias = _v1_caffemodel()
    path = tmp_path / "v1.caffemodel"
    write_binary_atomic(path, param)
    net = caffe.Net(
        net_param("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
                inner_product_param { num_output: 4 } }
    """),
        caffe.TEST,
        weights=str(path),
    )
    np.testing.assert_array_equal(net.params["ip"][0].data, weight)
    np.testing.assert_array_equal(net.params["ip"][1].data, bias)


def test_upgrade_text_tool_writes_the_modern_prototxt(tmp_path, capsys):
    old, new = tmp_path / "old.prototxt", tmp_path / "new.prototxt"
    old.write_text(V1_LENET)
    tool = load_tool("upgrade_net_proto_text")
    assert tool.main([str(old), str(new)]) == 0
    assert read_text(new, caffe_pb2.NetParameter()) == net_param(MODERN_LENET)
    assert "layers {" not in new.read_text()
    # Already-current nets are copied through with a note.
    again = tmp_path / "again.prototxt"
    assert tool.main([str(new), str(again)]) == 0
    assert "already in the current format" in capsys.readouterr().err
    assert read_text(again, caffe_pb2.NetParameter()) == net_param(MODERN_LENET)
    assert tool.main([str(tmp_path / "missing.prototxt"), str(again)]) == 1


def test_v0_net_upgrades_padding_and_fields():
    param = net_param("""
        name: "v0" input: "data"
        layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
        layers { layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 3 stride: 2
                         biasterm: false weight_filler { type: "gaussian" std: 0.01 }
                         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
                 bottom: "pad1" top: "conv1" }
        layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
                 bottom: "conv1" top: "pool1" }
        layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 }
                 bottom: "pool1" top: "pool1" }
        layers { layer { name: "norm" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.25 }
                 bottom: "pool1" top: "norm" }
        layers { layer { name: "src" type: "data" source: "db" batchsize: 32 scale: 0.5
                         cropsize: 20 mirror: true meanfile: "mean.binaryproto" }
                 top: "d2" top: "l2" }
    """)
    upgrade_v1_net(param, "v0")
    assert [layer.name for layer in param.layer] == ["conv1", "pool1", "drop", "norm", "src"]
    conv, pool, drop, norm, src = param.layer
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    c = conv.convolution_param
    assert (c.num_output, list(c.kernel_size), list(c.stride), list(c.pad)) == (8, [3], [2], [2])
    assert c.bias_term is False and c.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    p = pool.pooling_param
    assert (pool.type, p.pool, p.kernel_size, p.stride) == (
        "Pooling",
        caffe_pb2.PoolingParameter.AVE,
        3,
        2,
    )
    assert drop.dropout_param.dropout_ratio == pytest.approx(0.3)
    assert (norm.lrn_param.local_size, norm.lrn_param.alpha) == (3, 0.5)
    assert src.type == "Data" and src.data_param.source == "db"
    assert src.data_param.batch_size == 32
    t = src.transform_param
    assert (t.scale, t.crop_size, t.mirror, t.mean_file) == (0.5, 20, True, "mean.binaryproto")


def test_v0_errors_are_clear():
    with pytest.raises(CaffeliteError, match="unknown V0 type 'warp'"):
        upgrade_v1_net(net_param('layers { layer { name: "w" type: "warp" } }'), "v0")
    padded_relu = """
        input: "x"
        layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }
        layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }
    """
    with pytest.raises(CaffeliteError, match="only conv and pool layers may be padded"):
        upgrade_v1_net(net_param(padded_relu), "v0")
    with pytest.raises(CaffeliteError, match="reads blob 'nowhere'"):
        upgrade_v1_net(
            net_param('layers { layer { name: "r" type: "relu" } bottom: "nowhere" }'), "v0"
        )


def test_mixed_formats_are_refused_as_caffe_refuses_them():
    param = net_param("""
        layer { name: "modern" type: "ReLU" bottom: "x" top: "y" }
        layers { name: "old" type: RELU bottom: "x" top: "z" }
    """)
    with pytest.raises(CaffeliteError, match="mixed: refusing to upgrade .* both V1 'layers'"):
        upgrade_v1_net(param, "mixed")
    assert [layer.name for layer in param.layer] == ["modern"]  # nothing was dropped


def test_upgrade_text_tool_applies_every_upgrade_not_only_v1(tmp_path, capsys):
    """A modern net with an old BatchNorm (learnable statistics) still needs upgrading."""
    old, new = tmp_path / "bn.prototxt", tmp_path / "bn_new.prototxt"
    old.write_text(
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
        "param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }"
    )
    assert load_tool("upgrade_net_proto_text").main([str(old), str(new)]) == 0
    assert "already in the current format" not in capsys.readouterr().err
    upgraded = read_text(new, caffe_pb2.NetParameter())
    assert [p.lr_mult for p in upgraded.layer[0].param] == [0, 0, 0]
