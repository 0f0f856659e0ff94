"""NetSpec: layer functions, naming, parameter routing, to_proto, and nets that build."""

import numpy as np
import pytest

import caffelite as caffe
from caffelite import net_spec
from caffelite.errors import CaffeliteError
from caffelite.net_spec import NetSpec
from caffelite.net_spec import layers as L
from caffelite.net_spec import params as P
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text


def needs_types(*types):
    missing = sorted(set(types) - set(caffe.layer_type_list()))
    if missing:
        pytest.skip(f"layer types not registered yet: {', '.join(missing)}")


def lenet(source, batch_size):
    """Caffe's examples/01-learning-lenet net, plus lr multipliers and a TEST accuracy."""
    n = NetSpec()
    n.data, n.label = L.Data(
        batch_size=batch_size,
        backend=P.Data.LMDB,
        source=source,
        transform_param=dict(scale=1.0 / 256),
        ntop=2,
    )
    learn = [dict(lr_mult=1), dict(lr_mult=2)]
    n.conv1 = L.Convolution(
        n.data, kernel_size=5, num_output=20, param=learn, weight_filler=dict(type="xavier")
    )
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(
        n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier")
    )
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.score, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


LENET_EXPECTED = """
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 }
        data_param { source: "mnist_train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
        inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_lenet_matches_the_handwritten_prototxt():
    got = lenet("mnist_train_lmdb", 64)
    expected = parse_text(LENET_EXPECTED, caffe_pb2.NetParameter())
    assert [layer.name for layer in got.layer] == [layer.name for layer in expected.layer]
    for mine, theirs in zip(got.layer, expected.layer, strict=True):
        assert mine == theirs, f"layer {theirs.name}:\n{mine}\n!=\n{theirs}"
    assert got == expected
    data = got.layer[0]
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert not data.HasField("convolution_param")  # only the type's own param is touched
    assert list(got.layer[1].convolution_param.kernel_size) == [5]  # scalar -> repeated


def test_lenet_with_input_layers_builds_a_net():
    needs_types("Convolution", "Pooling", "InnerProduct")
    net_param = lenet("unused", 4)
    data = net_param.layer[0]
    data.Clear()
    data.name, data.type = "data", "Input"
    data.top.extend(["data", "label"])
    data.input_param.shape.add().dim.extend([4, 1, 28, 28])
    data.input_param.shape.add().dim.extend([4])
    text = str(net_param)  # the prototxt, read back as a user's file would be
    for phase, last in ((caffe.TRAIN, "loss"), (caffe.TEST, "loss")):
        net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase)
        assert net._layer_names[0] == "data" and net._layer_names[-1] == last
        assert ("accuracy" in net._layer_names) == (phase == caffe.TEST)
        assert [b.shape for b in net.params["conv1"]] == [(20, 1, 5, 5), (20,)]
        assert net.blobs["score"].shape == (4, 10)
        net.blobs["data"].data[...] = np.random.default_rng(0).random((4, 1, 28, 28))
        net.blobs["label"].data[...] = [0, 1, 2, 3]
        assert np.isfinite(net.forward()["loss"])


def test_small_net_with_available_layers_builds_and_runs():
    n = NetSpec()
    n.x, n.y = L.Input(ntop=2, shape=[dict(dim=[3, 2, 2, 2]), dict(dim=[3])])
    n.flat = L.Flatten(n.x)
    n.act = L.ReLU(n.flat, in_place=True)
    n.acc = L.Accuracy(n.act, n.y, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.act, n.y, loss_weight=2)
    proto = n.to_proto()
    assert [layer.name for layer in proto.layer] == ["x", "flat", "act", "acc", "loss"]
    assert list(proto.layer[0].top) == ["x", "y"]
    assert len(proto.layer[0].input_param.shape) == 2  # routed into input_param
    assert list(proto.layer[2].top) == ["flat"] and list(proto.layer[2].bottom) == ["flat"]
    assert list(proto.layer[4].loss_weight) == [2.0]  # not a SoftmaxWithLoss param field
    train = caffe.Net(proto, caffe.TRAIN)
    test = caffe.Net(proto, caffe.TEST)
    assert "acc" not in train._layer_names and "acc" in test._layer_names
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 2))
    out = train.forward(x=x, y=np.array([0.0, 3.0, 7.0]))
    logits = np.maximum(x.reshape(3, 8), 0)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -log_probs[[0, 1, 2], [0, 3, 7]].mean()
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-5)
    assert train.blob_loss_weights["loss"] == 2.0
    np.testing.assert_allclose(train.forward_from_to(), 2 * expected, rtol=1e-5)


def test_python_layer_from_netspec_runs():
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3]))
    n.y = L.Python(n.x, module="pylayers", layer="ScaleByParam", param_str="3")
    proto = n.to_proto()
    assert proto.layer[1].python_param.param_str == "3"
    net = caffe.Net(proto, caffe.TEST)
    out = net.forward(x=np.ones((2, 3)))
    np.testing.assert_allclose(out["y"], 3 * np.ones((2, 3)))


def test_automatic_names_follow_caffe():
    x = L.Input(shape=dict(dim=[1]))
    y = L.ReLU(x)
    z = L.ReLU(y)
    proto = net_spec.to_proto(z)  # nothing named: every top and layer is <Type><n>
    assert [(lay.name, list(lay.top)) for lay in proto.layer] == [
        ("Input1", ["Input1"]),
        ("ReLU1", ["ReLU1"]),
        ("ReLU2", ["ReLU2"]),
    ]
    assert list(proto.layer[2].bottom) == ["ReLU1"]

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2]))
    hidden = L.ReLU(n.data)  # not assigned: auto-named
    n.out = L.ReLU(hidden)
    n.silence = L.Silence(n.out, ntop=0)  # a Function, named by its attribute
    unnamed = L.Silence(n.data, ntop=0)
    n.also = unnamed
    proto = n.to_proto()
    assert [lay.name for lay in proto.layer] == ["data", "ReLU1", "out", "silence", "also"]
    assert list(proto.layer[3].top) == [] and list(proto.layer[3].bottom) == ["out"]
    assert net_spec.to_proto(L.Silence(L.Input(shape=dict(dim=[1])), ntop=0)).layer[1].name == (
        "Silence1"
    )


def test_ntop_returns_tuples_functions_and_named_multiple_tops():
    tops = L.Slice(L.Input(shape=dict(dim=[4, 3])), ntop=3, axis=1)
    assert isinstance(tops, tuple) and len(tops) == 3
    assert all(isinstance(t, net_spec.Top) for t in tops)
    fn = L.Silence(tops[0], ntop=0)
    assert isinstance(fn, net_spec.Function)
    n = NetSpec()
    n.a, n.b, _ = tops
    proto = n.to_proto()
    assert list(proto.layer[1].top) == ["a", "b", "Slice1"]
    assert proto.layer[1].name == "a"  # a layer is named after its first top
    assert proto.layer[1].slice_param.axis == 1


def test_repeated_nested_and_message_values():
    shape = caffe_pb2.BlobShape(dim=[2, 3])
    n = NetSpec()
    n.d = L.DummyData(
        shape=[dict(dim=[2, 3]), shape],  # a dict and a message in one repeated field
        data_filler=[dict(type="constant", value=1.5)],
        include=[dict(phase=caffe.TRAIN), dict(stage=["x", "y"])],
        propagate_down=[],
        ntop=1,
    )
    n.c = L.Convolution(
        n.d,
        kernel_size=[3, 1],
        pad=1,
        num_output=4,
        bias_filler=caffe_pb2.FillerParameter(type="constant", value=0.1),
        param=dict(lr_mult=0),
        exclude=dict(phase=caffe.TEST, min_level=2),
    )
    proto = n.to_proto()
    d, c = proto.layer
    assert [list(s.dim) for s in d.dummy_data_param.shape] == [[2, 3], [2, 3]]
    assert d.dummy_data_param.data_filler[0].value == 1.5
    assert [r.phase for r in d.include] == [caffe.TRAIN, caffe.TRAIN]
    assert list(d.include[1].stage) == ["x", "y"] and not d.include[1].HasField("phase")
    assert list(c.convolution_param.kernel_size) == [3, 1]
    assert list(c.convolution_param.pad) == [1]
    assert c.convolution_param.bias_filler.value == pytest.approx(0.1)
    assert len(c.param) == 1 and c.param[0].lr_mult == 0 and c.param[0].HasField("lr_mult")
    assert c.exclude[0].phase == caffe.TEST and c.exclude[0].min_level == 2


def test_param_name_dict_maps_types_to_param_fields():
    names = net_spec.param_name_dict()
    assert names["InnerProduct"] == "inner_product"
    assert names["Convolution"] == "convolution"
    assert names["HDF5Data"] == "hdf5_data"
    assert names["ReLU"] == "relu"
    assert names["Python"] == "python"
    assert names["Transformation"] == "transform"
    assert "SoftmaxWithLoss" not in names  # its options go in loss_param=dict(...)


def test_params_constants():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError, match="PoolingParameter has no constant 'MEDIAN'"):
        _ = P.Pooling.MEDIAN
    with pytest.raises(AttributeError, match="no message NopeParameter"):
        _ = P.Nope.X


def test_netspec_mapping_methods_and_update():
    n = NetSpec()
    n["x"] = L.Input(shape=dict(dim=[1, 2]))
    n.y = L.InnerProduct(n["x"], num_output=3)
    n.update("y", dict(bias_term=False))
    assert n.keys() == ["x", "y"] and n.vals()[1] is n.y
    proto = n.to_proto()
    assert proto.layer[1].inner_product_param.bias_term is False
    assert proto.layer[1].inner_product_param.num_output == 3
    with pytest.raises(AttributeError, match="no top named 'z'"):
        _ = n.z
    del n.y
    assert n.keys() == ["x"]
    # Layers keeps its magic to public names.
    assert not hasattr(L, "__wrapped__")


def test_layer_name_keyword_overrides_the_automatic_name():
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[1]), name="inputs")
    n.y = L.ReLU(n.x)
    proto = n.to_proto()
    assert proto.layer[0].name == "inputs" and list(proto.layer[0].top) == ["x"]
    assert list(proto.layer[1].bottom) == ["x"]


def test_errors_name_the_problem():
    x = L.Input(shape=dict(dim=[1]))
    with pytest.raises(CaffeliteError, match="'kernal_size' is not a field of convolution_param"):
        net_spec.to_proto(L.Convolution(x, kernal_size=3))
    with pytest.raises(CaffeliteError, match="'bogus' is not a field of LayerParameter"):
        net_spec.to_proto(L.SoftmaxWithLoss(x, x, bogus=1))
    with pytest.raises(CaffeliteError, match="bad value for 'num_output'"):
        net_spec.to_proto(L.InnerProduct(x, num_output="ten"))
    with pytest.raises(CaffeliteError, match="weight_filler is a FillerParameter message"):
        net_spec.to_proto(L.InnerProduct(x, weight_filler="xavier"))
    with pytest.raises(CaffeliteError, match="'weight_filler': FillerParameter has no field 'typ'"):
        net_spec.to_proto(L.InnerProduct(x, weight_filler=dict(typ="xavier")))
    with pytest.raises(
        CaffeliteError, match=r"^Eltwise input 1 is not a Top \(type is <class 'str'>\)$"
    ):
        L.Eltwise(x, "data")
    with pytest.raises(CaffeliteError, match="ntop must be an integer >= 0"):
        L.ReLU(x, ntop=-1)


def test_deep_chain_does_not_hit_the_recursion_limit():
    top = L.Input(shape=dict(dim=[1]))
    for _ in range(3000):
        top = L.ReLU(top, in_place=True)
    proto = net_spec.to_proto(top)
    assert len(proto.layer) == 3001
    assert proto.layer[-1].name == "ReLU3000" and list(proto.layer[-1].top) == ["Input1"]


def test_a_bottom_that_is_not_a_top_is_a_type_error_as_in_pycaffe():
    from caffelite import layers as L

    tops = L.DummyData(ntop=2)
    with pytest.raises(
        TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"
    ):
        L.Silence(tops, ntop=0)


def test_deconvolution_keywords_go_to_convolution_param():
    x = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    layer = net_spec.to_proto(L.Deconvolution(x, num_output=3, kernel_size=4, stride=2)).layer[-1]
    assert layer.convolution_param.num_output == 3
    assert list(layer.convolution_param.kernel_size) == [4]
    assert list(layer.convolution_param.stride) == [2]
