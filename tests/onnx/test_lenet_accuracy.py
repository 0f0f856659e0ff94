"""A LeNet trained by caffelite, exported, classifies the MNIST test set through ONNX
Runtime with the same accuracy (and the same predictions) as caffelite itself.

CI trains a short run here; the slow test takes ``./tools/train_lenet.sh``'s final
snapshot when it exists.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import REPO  # noqa: E402

import caffelite as caffe  # noqa: E402
from caffelite.mnist import load_mnist  # noqa: E402
from caffelite.net import load_net_param  # noqa: E402
from caffelite.onnx import export  # noqa: E402
from caffelite.onnx.verify import runtime_session  # noqa: E402

DEPLOY = REPO / "models" / "lenet" / "lenet.prototxt"


def mnist(shared_mnist, split: str):
    prefix = "train" if split == "train" else "t10k"
    images, labels = load_mnist(
        shared_mnist / f"{prefix}-images-idx3-ubyte.gz",
        shared_mnist / f"{prefix}-labels-idx1-ubyte.gz",
    )
    # lenet_train_test.prototxt's transform: scale 0.00390625
    return images.reshape(-1, 1, 28, 28).astype(np.float32) * 0.00390625, labels


def short_trained_lenet(shared_mnist, iterations: int = 60, batch: int = 64):
    from caffelite.proto import caffe_pb2
    from caffelite.solver import get_solver

    train = load_net_param(DEPLOY)
    train.layer[0].input_param.shape[0].dim[0] = batch
    label = train.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.extend([batch])
    train.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["ip2", "label"], top=["loss"])
    for layer in train.layer:
        if layer.type == "Softmax":
            train.layer.remove(layer)
            break
    param = caffe_pb2.SolverParameter(
        base_lr=0.01,
        momentum=0.9,
        weight_decay=0.0005,
        lr_policy="inv",
        gamma=0.0001,
        power=0.75,
        max_iter=iterations,
        display=0,
        snapshot_after_train=False,
        random_seed=1,
    )
    param.net_param.CopyFrom(train)
    solver = get_solver(param)
    images, labels = mnist(shared_mnist, "train")
    for i in range(iterations):
        start = (i * batch) % len(images)
        solver.net.blobs["data"].data[...] = images[start : start + batch]
        solver.net.blobs["label"].data[...] = labels[start : start + batch]
        solver.step(1)
    net = caffe.Net(str(DEPLOY), caffe.TEST)
    for name, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            net.params[name][i].data[...] = blob.data
    return net


def accuracies(net, shared_mnist, batch: int = 500):
    """(caffelite accuracy, ONNX Runtime accuracy, predictions equal) on the 10,000 tests."""
    session = runtime_session(export(net))
    images, labels = mnist(shared_mnist, "test")
    ours, theirs = [], []
    net.blobs["data"].reshape(batch, 1, 28, 28)
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        ours.append(np.array(net.forward(data=x)["prob"]).argmax(axis=1))
        theirs.append(session.run(None, {"data": x})[0].argmax(axis=1))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    return float(np.mean(ours == labels)), float(np.mean(theirs == labels)), ours, theirs


def test_short_trained_lenet_same_accuracy_through_runtime(shared_mnist):
    net = short_trained_lenet(shared_mnist)
    ours, theirs, a, b = accuracies(net, shared_mnist)
    assert ours > 0.8  # it did learn
    assert ours == theirs
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_fully_trained_lenet_same_accuracy_through_runtime(shared_mnist):
    weights = REPO / "snapshots" / "lenet_iter_10000.caffemodel"
    if not weights.exists():
        pytest.skip("run ./tools/train_lenet.sh first (it writes snapshots/lenet_iter_10000)")
    net = caffe.Net(str(DEPLOY), caffe.TEST, weights=str(weights))
    ours, theirs, a, b = accuracies(net, shared_mnist)
    print(f"MNIST test accuracy: caffelite {ours:.4f}, ONNX Runtime {theirs:.4f}")
    assert ours > 0.98
    assert ours == theirs
    np.testing.assert_array_equal(a, b)
