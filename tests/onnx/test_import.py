"""ONNX -> caffelite: caffelite -> ONNX -> caffelite round trips (every exported layer case
and every deploy net), a PyTorch CNN (PyTorch as an optional oracle), fine-tuning the
imported net, and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import REPO  # noqa: E402
from onnx_cases import net_from_snippet, random_inputs, randomize  # noqa: E402
from test_export_models import FAST, SLOW  # noqa: E402
from test_export_ops import CASES, X, one  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite.cli import main  # noqa: E402
from caffelite.errors import CaffeliteError  # noqa: E402
from caffelite.onnx import export, import_onnx  # noqa: E402
from caffelite.onnx.importer import split_weights  # noqa: E402


def imported_net(model, batch: int = 1):
    prototxt, weights = split_weights(import_onnx(model, batch))
    net = caffe.Net(prototxt, caffe.TEST)
    net.copy_trained_layers(weights)
    return net


def outputs(net, inputs):
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    return {k: np.array(v) for k, v in net.forward(**inputs).items()}


def round_trip_errors(net, integers=None):
    """(output, batch, max relative difference) of the original and the re-imported net."""
    back = imported_net(export(net))
    rng = np.random.default_rng(3)
    result = []
    for batch in (1, 4):
        inputs = random_inputs(net, batch, rng, integers)
        ours, theirs = outputs(net, inputs), outputs(back, inputs)
        assert set(ours) == set(theirs)
        for name in ours:
            assert ours[name].shape == theirs[name].shape, name
            scale = max(float(np.max(np.abs(ours[name]))), 1e-30)
            result.append((name, batch, float(np.max(np.abs(ours[name] - theirs[name]))) / scale))
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_round_trip(case):
    layers, inputs = CASES[case]
    net = net_from_snippet(layers, inputs)
    randomize(net, np.random.default_rng(0))
    for name, batch, error in round_trip_errors(net):
        assert error == 0, f"{name} at batch {batch}: {error:.3g}"


def test_embed_round_trip():
    net = net_from_snippet(
        one("Embed", "embed_param { num_output: 5 input_dim: 7 }"), {"x": (2, 3)}
    )
    randomize(net, np.random.default_rng(0))
    assert all(error == 0 for _, _, error in round_trip_errors(net, integers=7))


CHAIN = """
layer { name: "c" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "s" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }
layer { name: "r" type: "ReLU" bottom: "c" top: "c" }
layer { name: "p" type: "Pooling" bottom: "c" top: "y" pooling_param { kernel_size: 2 } }
"""


def in_place_layers(net) -> list[str]:
    return [
        name
        for name, bottoms, tops in zip(net._layer_names, net.bottom_vecs, net.top_vecs, strict=True)
        if len(bottoms) == 1 and len(tops) == 1 and bottoms[0] is tops[0]
    ]


def test_conv_batchnorm_scale_relu_comes_back_in_place_and_folded():
    """ONNX names every value; the import runs the chain in place again, under the
    Caffe blob name, with Scale's bias kept in the Scale, so TEST folding fuses it as
    in the exported net and the outputs are bitwise equal."""
    from caffelite import fold

    net = net_from_snippet(CHAIN, X)
    randomize(net, np.random.default_rng(0))
    back = imported_net(export(net))
    assert [layer.type for layer in back.layers] == [
        "Input", "Convolution", "BatchNorm", "Scale", "ReLU", "Pooling"
    ]  # fmt: skip
    assert len(in_place_layers(back)) == 3 and "c" in back.blobs
    assert back.layers[3].bias_term
    assert [e.layer_ids for e in fold.plan(back).values()] == [[2, 3, 4]]
    assert all(error == 0 for _, _, error in round_trip_errors(net))


def test_a_value_read_twice_is_not_overwritten_in_place():
    text = """
layer { name: "c" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "n" }
layer { name: "r" type: "ReLU" bottom: "n" top: "n" }
layer { name: "raw" type: "Pooling" bottom: "c" top: "y" pooling_param { kernel_size: 2 } }
layer { name: "p" type: "Pooling" bottom: "n" top: "z" pooling_param { kernel_size: 2 } }
"""
    net = net_from_snippet(text, X)
    randomize(net, np.random.default_rng(0))
    back = imported_net(export(net))
    types = [layer.type for layer in back.layers]
    bn, relu = types.index("BatchNorm"), types.index("ReLU")
    assert back.bottom_vecs[bn][0] is not back.top_vecs[bn][0]  # "raw" still reads c
    assert back.bottom_vecs[relu][0] is back.top_vecs[relu][0]  # n has one reader
    assert all(error == 0 for _, _, error in round_trip_errors(net))


def deploy_round_trip(relative, spatial=None):
    from caffelite.net import load_net_param

    param = load_net_param(REPO / "models" / relative)
    if spatial is not None:
        dims = param.layer[0].input_param.shape[0].dim
        dims[2], dims[3] = spatial
    net = caffe.Net(param, caffe.TEST)
    randomize(net, np.random.default_rng(0))
    for name, batch, error in round_trip_errors(net):
        assert error == 0, f"{name} at batch {batch}: {error:.3g}"


@pytest.mark.parametrize("relative", FAST)
def test_deploy_net_round_trip(relative):
    deploy_round_trip(relative)


@pytest.mark.slow
@pytest.mark.parametrize("relative", sorted(SLOW))
def test_big_deploy_net_round_trip(relative):
    deploy_round_trip(relative, SLOW[relative])


def test_command_line(tmp_path):
    net = net_from_snippet(CASES["conv"][0], X)
    randomize(net, np.random.default_rng(0))
    path = tmp_path / "m.onnx"
    export(net, path)
    proto, weights = tmp_path / "net.prototxt", tmp_path / "w.caffemodel"
    argv = [
        "import-onnx",
        str(path),
        "--output-model",
        str(proto),
        "--output-weights",
        str(weights),
    ]
    assert main([*argv, "--batch", "2"]) == 0
    back = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    assert back.blobs["x"].shape == (2, 4, 9, 9)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(outputs(net, {"x": x})["y"], outputs(back, {"x": x})["y"])


def test_first_unexpressible_node_is_named():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="fine"),
            helper.make_node("Transpose", ["r"], ["t"], name="swap", perm=[0, 1, 3, 2]),
            helper.make_node("Erf", ["t"], ["y"], name="later"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CaffeliteError, match=r"ONNX node #1 'swap' \(Transpose\) cannot be"):
        import_onnx(model)


def test_pad_not_before_a_pool_is_refused():
    from onnx import TensorProto, helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 6])],
        initializer=[pads],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CaffeliteError, match=r"'pad' \(Pad\).*only expressible before a pool"):
        import_onnx(model)


# ---- a CNN from PyTorch ---------------------------------------------------------------
def torch_cnn(torch):
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(6, 8, 3, stride=1, padding=1, groups=2),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 32),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.Linear(32, 10),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        bn = model[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def mnist_batch(shared_mnist, n: int, offset: int = 0):
    from caffelite.mnist import load_mnist

    images, labels = load_mnist(
        shared_mnist / "t10k-images-idx3-ubyte.gz", shared_mnist / "t10k-labels-idx1-ubyte.gz"
    )
    x = images[offset : offset + n].reshape(n, 1, 28, 28).astype(np.float32) / 256.0
    return x, labels[offset : offset + n].astype(np.float32)


def export_torch(torch, model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.zeros(1, 1, 28, 28),
            str(path),
            input_names=["data"],
            output_names=["logits"],
            dynamic_axes={"data": {0: "N"}, "logits": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )


def test_pytorch_cnn_imports_matches_and_fine_tunes(tmp_path, shared_mnist):
    torch = pytest.importorskip("torch")
    model = torch_cnn(torch)
    path = tmp_path / "cnn.onnx"
    export_torch(torch, model, path)
    x, labels = mnist_batch(shared_mnist, 16)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    param = import_onnx(path, batch=16)
    prototxt, weights = split_weights(param)
    net = caffe.Net(prototxt, caffe.TEST)
    net.copy_trained_layers(weights)
    got = outputs(net, {"data": x})["logits"]
    error = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
    assert error <= 1e-4, error

    # fine-tune: the imported net plus a label input and a loss, trained by a caffelite solver
    from caffelite.proto import caffe_pb2
    from caffelite.solver import get_solver

    train = caffe_pb2.NetParameter()
    train.CopyFrom(prototxt)
    label = train.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.extend([16])
    train.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["logits", "label"], top=["loss"])
    solver_param = caffe_pb2.SolverParameter(
        base_lr=0.1,
        lr_policy="fixed",
        momentum=0.9,
        max_iter=40,
        display=0,
        snapshot_after_train=False,
        random_seed=1,
    )
    solver_param.net_param.CopyFrom(train)
    solver = get_solver(solver_param)
    solver.net.copy_trained_layers(weights)
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = labels
    start = solver.net.forward_from_to()
    solver.step(40)
    end = solver.net.forward_from_to()
    assert end < 0.5 * start, (start, end)
