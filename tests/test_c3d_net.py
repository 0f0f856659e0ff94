"""A C3D-style 3-D net (tests/c3d_tiny.prototxt) through caffelite.Net: shapes, a
net-level gradient check in float64, and SGD steps that learn a task that needs depth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

import caffelite as caffe
from caffelite import backend
from caffelite.proto import caffe_pb2

NET = REPO / "tests" / "c3d_tiny.prototxt"


def clips(rng, count: int):
    """Noise clips (1 x 4 x 8 x 8) with one bright 2x2x2 cube; the label says whether the
    cube lies in the first two frames or the last two: only depth tells them apart."""
    x = 0.1 * rng.standard_normal((count, 1, 4, 8, 8))
    labels = rng.integers(0, 2, count)
    for i, label in enumerate(labels):
        r, c = rng.integers(0, 7, 2)
        depth = 0 if label else 2
        x[i, 0, depth : depth + 2, r : r + 2, c : c + 2] += 1.0
    return x, labels.astype(np.float64)


def test_builds_with_3d_blobs_and_runs_forward_and_backward():
    net = caffe.Net(str(NET), caffe.TRAIN)
    assert net.blobs["conv1a"].shape == (16, 4, 4, 8, 8)
    assert net.blobs["conv2a"].shape == (16, 8, 2, 4, 4)
    assert net.params["conv1a"][0].shape == (4, 1, 3, 3, 3)
    assert net.params["conv2a"][0].shape == (8, 4, 3, 3, 3)
    assert net.params["fc"][0].shape == (2, 8 * 2 * 4 * 4)
    x, labels = clips(np.random.default_rng(0), 16)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = labels
    net.clear_param_diffs()
    loss = net.forward_backward()
    assert np.isfinite(loss) and loss > 0
    for name, blobs in net.params.items():
        for j, blob in enumerate(blobs):
            assert np.isfinite(blob.diff).all() and np.abs(blob.diff).max() > 0, (name, j)


def test_net_gradient_of_the_3d_weights_matches_finite_differences():
    """d loss / d conv weights along random directions, the whole net in float64."""
    with backend.precision(np.float64):
        net = caffe.Net(str(NET), caffe.TRAIN)
    rng = np.random.default_rng(1)
    x, labels = clips(rng, 16)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = labels
    net.clear_param_diffs()
    net.forward_backward()
    eps = 1e-6
    for name in ("conv1a", "conv2a"):
        for blob in net.params[name]:
            analytic = blob.diff.copy()
            for _ in range(3):
                direction = rng.standard_normal(blob.shape)
                original = blob.data.copy()
                blob.data[...] = original + eps * direction
                plus = float(net.forward()["loss"])
                blob.data[...] = original - eps * direction
                minus = float(net.forward()["loss"])
                blob.data[...] = original
                numeric = (plus - minus) / (2 * eps)
                assert np.vdot(analytic, direction) == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_sgd_steps_learn_the_depth_task(tmp_path):
    param = caffe_pb2.SolverParameter(
        net=str(NET),
        type="SGD",
        base_lr=0.05,
        momentum=0.9,
        lr_policy="fixed",
        max_iter=1000,
        display=0,
        snapshot_after_train=False,
        random_seed=3,
        snapshot_prefix=str(tmp_path / "c3d"),
    )
    solver = caffe.get_solver(param)
    rng = np.random.default_rng(2)
    losses = []
    for _ in range(60):
        x, labels = clips(rng, 16)  # a fresh batch every step: learning, not memorising
        solver.net.blobs["data"].data[...] = x
        solver.net.blobs["label"].data[...] = labels
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    # and it generalises: fresh clips are classified by depth
    x, labels = clips(np.random.default_rng(9), 16)
    solver.net.blobs["data"].data[...] = x
    solver.net.forward()
    predicted = solver.net.blobs["fc"].data.argmax(axis=1)
    assert (predicted == labels).mean() >= 0.9
