"""GPU mode on CuPy and a real GPU (marked gpu; skipped without them, with the reason).

The same contract as tests/test_gpu_mode.py checks on the fake device, here on the
device itself: pycaffe code unchanged, results equal to the CPU's to float32 tolerance
(the device's GEMMs and reductions add in another order), snapshots interchangeable.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cupy_device
from test_gpu_mode import LENET, _cpu_mode, lenet_deploy, lenet_solver, mnist_images

import caffelite as caffe
from caffelite import backend

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy():
    device = cupy_device()
    with backend.gpu_mode_on(device):
        yield device


def test_pycaffe_forward_on_the_gpu_equals_the_cpu(cupy):
    images, _ = mnist_images(64)
    with _cpu_mode():
        cpu = lenet_deploy()
    net = lenet_deploy()
    assert net.device is cupy
    for model in (cpu, net):
        model.blobs["data"].reshape(*images.shape)
        model.blobs["data"].data[...] = images
        model.forward()
    assert isinstance(net.blobs["prob"].data, np.ndarray)
    np.testing.assert_allclose(net.blobs["prob"].data, cpu.blobs["prob"].data, atol=1e-5)


def test_training_on_the_gpu_follows_the_cpu(tmp_path, cupy):
    with _cpu_mode():
        cpu = lenet_solver(tmp_path / "cpu", 20)
        cpu.step(20)
    solver = lenet_solver(tmp_path / "gpu", 20)
    solver.step(20)
    assert solver.loss == pytest.approx(cpu.loss, rel=1e-3)
    for name in cpu.net.params:
        for i, blob in enumerate(cpu.net.params[name]):
            np.testing.assert_allclose(
                solver.net.params[name][i].data, blob.data, rtol=1e-3, atol=1e-4, err_msg=name
            )


def test_gpu_snapshots_load_on_the_cpu(tmp_path, cupy):
    solver = lenet_solver(tmp_path, 3)
    solver.step(3)
    model, _ = solver.snapshot()
    with _cpu_mode():
        net = caffe.Net(str(LENET / "lenet.prototxt"), caffe.TEST, weights=model)
    np.testing.assert_array_equal(net.params["conv1"][0].data, solver.net.params["conv1"][0].data)
