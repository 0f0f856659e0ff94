"""One measurement of benchmarks/speed_table.py in a fresh process; prints one JSON line.

    python benchmarks/speed_worker.py IMPL CASE ITERATIONS [WEIGHTS]

IMPL is caffelite, torch or opencv. CASE is ``lenet_train`` (forward + backward + SGD
update with lenet_solver's settings, batch 64, real MNIST batches in order),
``lenet_test`` (TEST forward, batch 100, real MNIST test batches in order),
``NET:forward:BATCH`` or ``NET:backward:BATCH`` (a models/NET/deploy.prototxt with the
weights in the WEIGHTS .caffemodel, on a fixed seeded input; "backward" is forward +
backward), or ``lenet_full`` (PyTorch only: the whole 10,000-iteration lenet_solver
schedule with its 21 test passes; caffelite's is benchmarks/lenet_full_run.py). Times are
milliseconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SCALE = 0.00390625  # lenet_train_test.prototxt's transform_param scale


def mnist(split: str):
    from caffelite.mnist import load_mnist

    images, labels = load_mnist(
        MNIST / f"{split}-images-idx3-ubyte.gz", MNIST / f"{split}-labels-idx1-ubyte.gz"
    )
    return (images.reshape(-1, 1, 28, 28) * np.float32(SCALE)).astype(np.float32), labels


def batches(images, labels, size: int):
    """Batches in order, wrapping around as Caffe's Data layer does."""
    start = 0
    while True:
        if start + size > len(images):
            start = 0
        yield images[start : start + size], labels[start : start + size]
        start += size


def timed(function, iterations: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def zoo_input(batch: int, shape) -> np.ndarray:
    """The same seeded input in every process (random, not constant: no denormals)."""
    rng = np.random.default_rng(1234)
    return rng.standard_normal((batch,) + tuple(shape[1:])).astype(np.float32)


# ---- LeNet ----------------------------------------------------------------------------
def _lenet_param(batch: int):
    """lenet_train_test.prototxt with its Data layers replaced by an Input layer."""
    from caffelite.net import load_net_param
    from caffelite.proto import caffe_pb2

    param = load_net_param(REPO / "models/lenet/lenet_train_test.prototxt")
    layers = [layer for layer in param.layer if layer.type != "Data"]
    source = caffe_pb2.LayerParameter(name="data", type="Input", top=["data", "label"])
    source.input_param.shape.add().dim.extend([batch, 1, 28, 28])
    source.input_param.shape.add().dim.extend([batch])
    del param.layer[:]
    param.layer.extend([source] + layers)
    return param


def caffelite_lenet_train(iterations: int, _weights=None) -> list[float]:
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import read_text
    from caffelite.solver import get_solver

    solver_param = read_text(
        REPO / "models/lenet/lenet_solver.prototxt", caffe_pb2.SolverParameter()
    )
    solver_param.ClearField("net")
    solver_param.net_param.CopyFrom(_lenet_param(64))
    del solver_param.test_iter[:]
    solver_param.test_interval = 0
    solver_param.display = 0
    solver_param.snapshot = 0
    solver = get_solver(solver_param)
    feed = batches(*mnist("train"), 64)
    data, label = solver.net.blobs["data"].data, solver.net.blobs["label"].data

    def step():
        images, labels = next(feed)
        data[...] = images
        label[...] = labels
        solver.step(1)

    return timed(step, iterations)


def caffelite_lenet_test(iterations: int, _weights=None) -> list[float]:
    from caffelite.layer import TEST
    from caffelite.net import Net

    net = Net(_lenet_param(100), TEST)
    feed = batches(*mnist("t10k"), 100)

    def forward():
        images, labels = next(feed)
        net.blobs["data"].data[...] = images
        net.blobs["label"].data[...] = labels
        net.forward()

    return timed(forward, iterations)


def _torch_lenet():
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x):
            f = torch.nn.functional
            x = f.max_pool2d(self.conv1(x), 2, 2)
            x = f.max_pool2d(self.conv2(x), 2, 2)
            return self.ip2(f.relu(self.ip1(x.flatten(1))))

    return LeNet()


def _torch_lr(iteration: int) -> float:
    """lenet_solver's "inv" policy: base_lr * (1 + gamma * iter) ^ -power."""
    return 0.01 * (1 + 0.0001 * iteration) ** -0.75


def torch_lenet_train(iterations: int, _weights=None) -> list[float]:
    import torch

    model = _torch_lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    feed = batches(*mnist("train"), 64)
    counter = [0]

    def step():
        images, labels = next(feed)
        x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
        for group in optimizer.param_groups:
            group["lr"] = _torch_lr(counter[0])
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        counter[0] += 1

    return timed(step, iterations)


def torch_lenet_test(iterations: int, _weights=None) -> list[float]:
    import torch

    model = _torch_lenet().eval()
    feed = batches(*mnist("t10k"), 100)

    def forward():
        images, labels = next(feed)
        with torch.no_grad():
            out = model(torch.from_numpy(images))
            (out.argmax(1) == torch.from_numpy(labels.astype(np.int64))).float().mean()

    return timed(forward, iterations)


# ---- zoo nets ---------------------------------------------------------------------------
def _zoo_net(net_name: str, batch: int, weights: str, backward: bool = False):
    """The deploy net at ``batch``; ``backward``: with force_backward, as a net run backward
    is (the gradient reaches the input; TEST-phase folding is then off)."""
    from caffelite.layer import TEST
    from caffelite.net import Net, load_net_param

    param = load_net_param(REPO / "models" / net_name / "deploy.prototxt")
    param.force_backward = backward
    for layer in param.layer:
        if layer.type == "Input":
            layer.input_param.shape[0].dim[0] = batch
    net = Net(param, TEST, weights=weights)
    return net


def caffelite_zoo(net_name, mode, batch, iterations, weights) -> list[float]:
    net = _zoo_net(net_name, batch, weights, backward=mode == "backward")
    name = net.inputs[0]
    net.blobs[name].data[...] = zoo_input(batch, net.blobs[name].shape)
    top = net.blobs[net.outputs[0]]
    seed = np.random.default_rng(5).standard_normal(top.shape).astype(np.float32)
    if mode == "forward":
        return timed(net.forward, iterations, warmup=1)

    def forward_backward():
        net.forward()
        top.diff[...] = seed
        net.backward()

    return timed(forward_backward, iterations, warmup=1)


def torch_zoo(net_name, mode, batch, iterations, weights) -> list[float]:
    import torch
    from torch_net import TorchNet, max_difference

    net = _zoo_net(net_name, batch, weights)
    name = net.inputs[0]
    x = zoo_input(batch, net.blobs[name].shape)
    model = TorchNet(net)
    difference = max_difference(net, model, {name: x})
    if difference > 1e-3:
        raise SystemExit(f"{net_name}: PyTorch output differs from caffelite's by {difference}")
    tensor = torch.from_numpy(x).requires_grad_(True)  # force_backward: the input too
    seed = torch.from_numpy(
        np.random.default_rng(5).standard_normal(net.blobs[net.outputs[0]].shape).astype(np.float32)
    )
    del net
    if mode == "forward":

        def forward():
            with torch.no_grad():
                model.forward(**{name: tensor})

        return timed(forward, iterations, warmup=1)

    def forward_backward():
        model.zero_grad()
        tensor.grad = None
        out = model.forward(**{name: tensor})[model.outputs[0]]
        out.backward(seed)

    return timed(forward_backward, iterations, warmup=1)


def opencv_zoo(net_name, mode, batch, iterations, weights) -> list[float]:
    import cv2

    net = _zoo_net(net_name, batch, weights)
    name = net.inputs[0]
    x = zoo_input(batch, net.blobs[name].shape)
    net.blobs[name].data[...] = x
    net.forward()
    expected = net.blobs[net.outputs[0]].data.copy()
    del net
    dnn = cv2.dnn.readNetFromCaffe(str(REPO / "models" / net_name / "deploy.prototxt"), weights)
    dnn.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    dnn.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def forward():
        dnn.setInput(x)
        return dnn.forward()

    out = forward().reshape(expected.shape)
    difference = float(np.abs(out - expected).max() / max(np.abs(expected).max(), 1e-30))
    if difference > 1e-3:
        raise SystemExit(f"{net_name}: OpenCV output differs from caffelite's by {difference}")
    return timed(forward, iterations, warmup=1)


# ---- the full LeNet run -------------------------------------------------------------------
def torch_lenet_full(_iterations=None, _weights=None) -> dict:
    import torch

    torch.manual_seed(0)
    start = time.perf_counter()
    model = _torch_lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    train, test = batches(*mnist("train"), 64), mnist("t10k")

    def test_pass() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(100):
                images = torch.from_numpy(test[0][i * 100 : (i + 1) * 100])
                labels = torch.from_numpy(test[1][i * 100 : (i + 1) * 100].astype(np.int64))
                correct += int((model(images).argmax(1) == labels).sum())
        model.train()
        return correct / 10000

    accuracy = None
    for iteration in range(10001):
        if iteration % 500 == 0:
            accuracy = test_pass()
        if iteration == 10000:
            break
        images, labels = next(train)
        for group in optimizer.param_groups:
            group["lr"] = _torch_lr(iteration)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))
        )
        loss.backward()
        optimizer.step()
    return {"wall_s": time.perf_counter() - start, "final_accuracy": accuracy}


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    impl, case, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
    weights = sys.argv[4] if len(sys.argv) > 4 else None
    threads = int(__import__("os").environ.get("OMP_NUM_THREADS", "0") or 0)
    if impl == "torch" and threads:
        import torch

        torch.set_num_threads(threads)
    if impl == "opencv" and threads:
        import cv2

        cv2.setNumThreads(threads)
    if ":" in case:
        net_name, mode, batch = case.split(":")
        result = globals()[f"{impl}_zoo"](net_name, mode, int(batch), iterations, weights)
    else:
        result = globals()[f"{impl}_{case}"](iterations, weights)
    report = {"impl": impl, "case": case, "peak_rss_mib": peak_rss_mib()}
    report.update(result if isinstance(result, dict) else {"times_ms": result})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
