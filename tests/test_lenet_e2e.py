"""LeNet on real MNIST, end to end, with Caffe's lenet_solver.prototxt settings.

The short run (500 iterations) is part of every test run; the full 10,000-iteration run
(Caffe reaches about 0.99) needs --runslow. Both go through the prototxt files, the LMDB
conversion and the Data layer exactly as a user's run does.
"""

import shutil

import pytest
from conftest import REPO

from caffelite.mnist import load_mnist, write_lmdb
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_text
from caffelite.solver import get_solver


@pytest.fixture(scope="module")
def mnist_workdir(tmp_path_factory, request):
    """A directory holding data/mnist/mnist_{train,test}_lmdb made from the shared MNIST."""
    from conftest import SHARED_MNIST

    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found in {SHARED_MNIST}")
    root = tmp_path_factory.mktemp("lenet")
    for split, name in (("train", "train"), ("t10k", "test")):
        images, labels = load_mnist(
            SHARED_MNIST / f"{split}-images-idx3-ubyte.gz",
            SHARED_MNIST / f"{split}-labels-idx1-ubyte.gz",
        )
        write_lmdb(str(root / "data/mnist" / f"mnist_{name}_lmdb"), images, labels)
    shutil.copytree(REPO / "models", root / "models")
    yield root


def _train(workdir, monkeypatch, max_iter: int):
    monkeypatch.chdir(workdir)
    param = read_text(workdir / "models/lenet/lenet_solver.prototxt", caffe_pb2.SolverParameter())
    param.max_iter = max_iter
    param.random_seed = 1701
    param.snapshot_prefix = str(workdir / "snapshots/lenet")
    solver = get_solver(param)
    solver.solve()
    return solver


def test_lenet_500_iterations_reaches_097(mnist_workdir, monkeypatch):
    solver = _train(mnist_workdir, monkeypatch, 500)
    accuracy = float(solver.test_results[0]["accuracy"])
    assert solver.iter == 500
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f} after 500 iterations"
    assert (mnist_workdir / "snapshots/lenet_iter_500.caffemodel").exists()
    assert (mnist_workdir / "snapshots/lenet_iter_500.solverstate").exists()


@pytest.mark.slow
def test_lenet_full_10000_iterations_reaches_099(mnist_workdir, monkeypatch):
    solver = _train(mnist_workdir, monkeypatch, 10000)
    accuracy = float(solver.test_results[0]["accuracy"])
    assert accuracy >= 0.990, f"test accuracy {accuracy:.4f} after 10,000 iterations"
