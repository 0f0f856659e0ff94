"""One benchmark measurement in a fresh process; prints one JSON line.

    python benchmarks/lenet_worker.py {caffelite,torch} {train,test} ITERATIONS THREADS
    python benchmarks/lenet_worker.py caffelite layers ITERATIONS THREADS

``train``: one LeNet training iteration at batch 64 (forward + backward + SGD update with
lenet_solver's settings), data excluded (a fixed batch of real-looking MNIST input).
``test``: TEST-phase forward at batch 100. Times are per iteration, in milliseconds.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_BATCH, TEST_BATCH = 64, 100


def _batch(n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = (rng.random((n, 1, 28, 28)) < 0.2).astype(np.float32) * rng.random((n, 1, 28, 28))
    labels = rng.integers(0, 10, n)
    return images.astype(np.float32), labels


def _caffelite_net_param(batch: int):
    """lenet_train_test.prototxt with its Data layers replaced by Input (data excluded)."""
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


def caffelite_train(iterations: int) -> list[float]:
    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import read_text
    from caffelite.solver import get_solver

    solver_param = read_text(
        REPO / "models/lenet/lenet_solver.prototxt", caffe_pb2.SolverParameter()
    )
    solver_param.ClearField("net")
    solver_param.net_param.CopyFrom(_caffelite_net_param(TRAIN_BATCH))
    del solver_param.test_iter[:]
    solver_param.test_interval = 0
    solver_param.display = 0
    solver_param.snapshot = 0
    solver = get_solver(solver_param)
    images, labels = _batch(TRAIN_BATCH)
    solver.net.blobs["data"].data[...] = images
    solver.net.blobs["label"].data[...] = labels
    return _time(lambda: solver.step(1), iterations)


def caffelite_test(iterations: int) -> list[float]:
    from caffelite.layer import TEST
    from caffelite.net import Net

    net = Net(_caffelite_net_param(TEST_BATCH), TEST)
    images, labels = _batch(TEST_BATCH)
    net.blobs["data"].data[...] = images
    net.blobs["label"].data[...] = labels
    return _time(net.forward_from_to, iterations)


def caffelite_layers(iterations: int) -> list[str]:
    """``caffelite time`` on the train net: per-layer forward and backward times."""
    from caffelite.layer import TRAIN
    from caffelite.net import Net
    from caffelite.net_timer import time_net

    net = Net(_caffelite_net_param(TRAIN_BATCH), TRAIN)
    images, labels = _batch(TRAIN_BATCH)
    net.blobs["data"].data[...] = images
    net.blobs["label"].data[...] = labels
    return time_net(net, iterations).lines()


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


def torch_train(iterations: int) -> list[float]:
    import torch

    model = _torch_lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, labels = _batch(TRAIN_BATCH)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return _time(step, iterations)


def torch_test(iterations: int) -> list[float]:
    import torch

    model = _torch_lenet().eval()
    images, _ = _batch(TEST_BATCH)
    x = torch.from_numpy(images)

    def forward():
        with torch.no_grad():
            model(x)

    return _time(forward, iterations)


def _time(function, iterations: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def peak_rss_mib() -> float:
    """This process's resident high-water mark (VmHWM).

    Not ``getrusage``: on Linux its ru_maxrss survives exec, so a child started by a
    big parent reports the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    impl, mode, iterations, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    result = globals()[f"{impl}_{mode}"](iterations)
    key = "lines" if mode == "layers" else "times_ms"
    report = {"impl": impl, "mode": mode, key: result, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
