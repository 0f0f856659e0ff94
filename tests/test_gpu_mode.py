"""GPU mode's host/device discipline, checked on the CPU through the fake device.

caffelite.fake_device stands where CuPy goes: its arrays refuse to mix with numpy
arrays and count every copy between host and device. A net built in GPU mode on it must
compute as the CPU does, honour pycaffe's blob contract (write ``blob.data`` on the
host, forward, read the result on the host), and train without a round trip to the
host per iteration. The same tests on CuPy are in tests/test_gpu_cupy.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import REPO

import caffelite as caffe
from caffelite import backend, fake_device
from caffelite.blob import Blob
from caffelite.mnist import load_mnist, write_lmdb
from caffelite.solver import get_solver, load_solver_param
from caffelite.syncedmem import HEAD_AT_CPU, HEAD_AT_GPU, SYNCED, UNINITIALIZED, SyncedMemory

LENET = REPO / "models" / "lenet"


@pytest.fixture
def gpu_mode():
    """GPU mode on the fake device for one test; transfers counted from zero."""
    with backend.gpu_mode_on(fake_device):
        fake_device.reset_transfers()
        yield fake_device


# ---- the fake device keeps host and device apart --------------------------------------
def test_device_arrays_refuse_numpy_arrays():
    x = fake_device.asarray(np.arange(6.0))
    with pytest.raises(TypeError, match="mixed with a device array"):
        x + np.ones(6)
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(x)
    host = np.zeros(6)
    with pytest.raises(TypeError, match="implicit conversion"):
        host[...] = x
    assert isinstance(x * 2.0 + 1, fake_device.ndarray)  # scalars mix, as in CuPy
    assert float((x * 2.0).sum()) == 30.0


def test_transfers_are_counted():
    fake_device.reset_transfers()
    x = fake_device.asarray(np.ones(3))
    y = fake_device.exp(x)  # on the device: no copy
    y.get()
    float(y[0])
    assert fake_device.transfers == {"h2d": 1, "d2h": 2}


# ---- SyncedMemory: Caffe's head states -------------------------------------------------
def test_synced_memory_copies_only_a_stale_side():
    fake_device.reset_transfers()
    memory = SyncedMemory(4, np.float32, fake_device)
    assert memory.head == UNINITIALIZED
    memory.mutable_cpu_data()[:] = [1, 2, 3, 4]
    assert memory.head == HEAD_AT_CPU
    gpu = memory.gpu_data()
    assert memory.head == SYNCED and fake_device.transfers == {"h2d": 1, "d2h": 0}
    memory.gpu_data()
    memory.cpu_data()  # synced: neither read copies
    assert fake_device.transfers == {"h2d": 1, "d2h": 0}
    gpu *= 10.0  # through the mutable form, below, the head moves
    memory.mutable_gpu_data()
    assert memory.head == HEAD_AT_GPU
    np.testing.assert_array_equal(memory.cpu_data(), [10, 20, 30, 40])
    assert memory.head == SYNCED and fake_device.transfers == {"h2d": 1, "d2h": 1}


def test_first_use_on_the_device_allocates_zeros_there():
    fake_device.reset_transfers()
    memory = SyncedMemory(3, np.float64, fake_device)
    assert float(memory.mutable_gpu_data().sum()) == 0.0
    assert memory.head == HEAD_AT_GPU
    np.testing.assert_array_equal(memory.cpu_data(), np.zeros(3))


def test_host_only_memory_has_no_device_side():
    memory = SyncedMemory(2, np.float32)
    assert memory.mutable_cpu_data() is memory.cpu_data()
    with pytest.raises(RuntimeError, match="CPU mode"):
        memory.gpu_data()


# ---- Blob: numpy outside a layer, device arrays inside --------------------------------
def test_a_gpu_mode_blob_is_numpy_outside_and_device_inside_a_device_scope(gpu_mode):
    blob = Blob(2, 3)
    blob.data[...] = np.arange(6).reshape(2, 3)  # pycaffe's way, on the host
    with backend.device_scope(gpu_mode):
        assert isinstance(blob.data, fake_device.ndarray)
        blob.data *= 2.0
    assert isinstance(blob.data, np.ndarray)
    np.testing.assert_array_equal(blob.data, np.arange(6).reshape(2, 3) * 2.0)
    assert gpu_mode.transfers == {"h2d": 1, "d2h": 1}


def test_cpu_data_is_read_only_and_moves_no_head(gpu_mode):
    blob = Blob(3)
    with backend.device_scope(gpu_mode):
        blob.data[...] = 5.0
    values = blob.cpu_data()
    assert not values.flags.writeable
    assert blob.data_memory.head == SYNCED
    np.testing.assert_array_equal(values, [5, 5, 5])


def test_shared_blobs_share_the_head(gpu_mode):
    a, b = Blob(4), Blob(2, 2)
    b.share_data(a)
    a.data[...] = 1.0
    with backend.device_scope(gpu_mode):
        b.data[...] = 7.0
    np.testing.assert_array_equal(a.data, [7, 7, 7, 7])


def test_cpu_and_gpu_blobs_do_not_share():
    with backend.gpu_mode_on(fake_device):
        device_blob = Blob(2)
    with pytest.raises(caffe.CaffeliteError, match="GPU mode"):
        Blob(2).share_data(device_blob)


# ---- a net on the device ----------------------------------------------------------------
def lenet_deploy(seed: int = 3):
    net = caffe.Net(str(LENET / "lenet.prototxt"), caffe.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.1, blob.shape)
    return net


def mnist_images(n: int):
    mnist = REPO.parent / "shared" / "data" / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found in {mnist}")
    images, labels = load_mnist(
        mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz"
    )
    return images[:n].reshape(n, 1, 28, 28).astype(np.float32) / 255, labels[:n]


def test_pycaffe_code_runs_unchanged_in_gpu_mode(gpu_mode):
    images, _ = mnist_images(64)
    with _cpu_mode():
        cpu = lenet_deploy()
    net = lenet_deploy()
    assert net.device is gpu_mode
    for model in (cpu, net):
        model.blobs["data"].reshape(*images.shape)
        model.blobs["data"].data[...] = images
        model.forward()
    prob = net.blobs["prob"].data
    assert isinstance(prob, np.ndarray)
    np.testing.assert_allclose(prob, cpu.blobs["prob"].data, rtol=1e-6, atol=1e-7)


class _cpu_mode:
    """CPU mode inside a GPU-mode test, then back."""

    def __enter__(self):
        self._was = backend.is_gpu_mode()
        backend.set_mode_cpu()

    def __exit__(self, *exc):
        if self._was:
            backend.set_mode_gpu()


def test_backward_on_the_device_equals_the_cpu(gpu_mode):
    images, _ = mnist_images(16)
    with _cpu_mode():
        cpu = lenet_deploy()
    net = lenet_deploy()
    for model in (cpu, net):
        model.blobs["data"].reshape(*images.shape)
        model.forward(data=images)
        model.backward(prob=np.ones((16, 10), np.float32) / 10)
    for name in cpu.params:
        for i, blob in enumerate(cpu.params[name]):
            np.testing.assert_allclose(
                net.params[name][i].diff, blob.diff, rtol=1e-5, atol=1e-7, err_msg=name
            )


# ---- training: the same weights, no per-iteration round trip ---------------------------
def lenet_solver(root, iters: int, display: int = 0):
    images, labels = mnist_images(640)
    images = (images * 255).astype(np.uint8)
    write_lmdb(root / "train_lmdb", images[:512], labels[:512])
    write_lmdb(root / "test_lmdb", images[512:], labels[512:])
    net = (LENET / "lenet_train_test.prototxt").read_text()
    net = net.replace("data/mnist/mnist_train_lmdb", str(root / "train_lmdb"))
    net = net.replace("data/mnist/mnist_test_lmdb", str(root / "test_lmdb"))
    (root / "net.prototxt").write_text(net)
    param = load_solver_param(LENET / "lenet_solver.prototxt")
    param.net = str(root / "net.prototxt")
    param.max_iter = iters
    param.display = display
    param.test_interval = 10**9
    param.test_initialization = False
    param.snapshot = 0
    param.snapshot_after_train = False
    param.random_seed = 1
    param.snapshot_prefix = str(root / "lenet")
    return get_solver(param)


def test_training_on_the_device_matches_the_cpu_without_round_trips(tmp_path, gpu_mode):
    with _cpu_mode():
        cpu = lenet_solver(tmp_path / "cpu", 12)
        cpu.step(12)
    solver = lenet_solver(tmp_path / "gpu", 12)
    assert solver.net.device is gpu_mode
    gpu_mode.reset_transfers()
    solver.step(12)
    # the Data layer's prefetch thread copies each batch (data and labels) up, as Caffe's
    # does; the net's thread copies nothing up, and the 12 losses come down once, with
    # the label check, when the step ends
    mine = gpu_mode.transfers_by_thread.pop(threading.current_thread().name)
    assert mine == {"h2d": 0, "d2h": 2}
    assert all(name.startswith("caffelite-prefetch:") for name in gpu_mode.transfers_by_thread)
    uploads = gpu_mode.transfers_by_thread[f"caffelite-prefetch:{tmp_path / 'gpu/train_lmdb'}"]
    ahead = 2 * solver.net.param.layer[0].data_param.prefetch  # read ahead, before or after
    assert uploads["d2h"] == 0 and abs(uploads["h2d"] - 2 * 12) <= ahead
    assert solver.loss == pytest.approx(cpu.loss, rel=1e-5)
    assert solver.smoothed_loss == pytest.approx(cpu.smoothed_loss, rel=1e-5)
    for name in cpu.net.params:
        for i, blob in enumerate(cpu.net.params[name]):
            np.testing.assert_allclose(
                solver.net.params[name][i].data, blob.data, rtol=1e-4, atol=1e-6, err_msg=name
            )


def test_snapshots_in_gpu_mode_load_in_cpu_mode(tmp_path, gpu_mode):
    solver = lenet_solver(tmp_path, 3)
    solver.step(3)
    model, _ = solver.snapshot()
    with _cpu_mode():
        net = caffe.Net(str(LENET / "lenet.prototxt"), caffe.TEST, weights=model)
    np.testing.assert_array_equal(net.params["conv1"][0].data, solver.net.params["conv1"][0].data)


# ---- Python layers ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, array_type",
    [("SeesArrays", np.ndarray), ("SeesDeviceArrays", fake_device.ndarray)],
)
def test_python_layers_see_numpy_unless_they_declare_device_arrays(gpu_mode, layer, array_type):
    import pylayers

    from caffelite.proto import caffe_pb2
    from caffelite.prototxt import parse_text

    text = f"""
    input: "x" input_shape {{ dim: 2 dim: 3 }}
    layer {{ name: "relu" type: "ReLU" bottom: "x" top: "r" }}
    layer {{ name: "py" type: "Python" bottom: "r" top: "y"
            python_param {{ module: "pylayers" layer: "{layer}" }} }}
    layer {{ name: "scale" type: "Power" bottom: "y" top: "z" power_param {{ scale: 2 }} }}
    """
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    pylayers.SeesArrays.seen = []
    x = np.array([[-1, 0, 1], [2, 3, -4]], np.float32)
    out = net.forward(x=x)
    assert pylayers.SeesArrays.seen == [array_type]
    np.testing.assert_array_equal(out["z"], 2 * (np.maximum(x, 0) + 1))


# ---- checks on the device wait for the next display ------------------------------------
def test_a_bad_label_on_the_device_is_reported_at_the_next_display(tmp_path, gpu_mode):
    solver = lenet_solver(tmp_path, 4, display=2)
    solver.step(1)
    data_layer = solver.net.layers[0]
    data_layer.forward = _with_bad_label(data_layer.forward)
    with pytest.raises(caffe.CaffeliteError, match=r"layer 'loss'.*labels must be finite"):
        solver.step(2)  # the iteration that displays (iteration 2) reads the check


def _with_bad_label(forward):
    def run(bottom, top):
        forward(bottom, top)
        top[1].data[0] = 10.0  # a label: LeNet's classes are 0..9

    return run


# ---- the command line: Caffe's -gpu flag ------------------------------------------------
@pytest.fixture
def cupy_is_the_fake_device(monkeypatch):
    """set_mode_gpu() finds the fake device where it looks for CuPy; mode restored after."""
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_device)
    monkeypatch.setattr(backend, "_device", None)
    monkeypatch.setattr(backend, "_gpu_mode", False)


def write_solver(root, extra: str = "") -> str:
    from google.protobuf import text_format

    solver = lenet_solver(root, 2)
    path = root / "solver.prototxt"
    path.write_text(text_format.MessageToString(solver.param) + extra)
    return str(path)


def test_train_gpu_flag_trains_on_the_device(tmp_path, cupy_is_the_fake_device):
    from caffelite import cli

    built = []
    original = caffe.Net._init

    def spy(net, param):
        original(net, param)
        built.append(net.device)

    solver = write_solver(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caffe.Net, "_init", spy)
        assert cli.main(["train", "--solver", solver, "--gpu", "0"]) == 0
    assert built and all(device is fake_device for device in built)


def test_solver_mode_gpu_is_honoured_by_train_without_the_flag(tmp_path, cupy_is_the_fake_device):
    from caffelite import cli

    assert cli.main(["train", "--solver", write_solver(tmp_path, "solver_mode: GPU\n")]) == 0
    assert backend.is_gpu_mode()


def test_several_gpus_train_as_an_mpi_job_or_say_what_is_missing(
    tmp_path, cupy_is_the_fake_device, capsys, monkeypatch
):
    """``train --gpu 0,1`` starts one rank per device under mpiexec (the run itself is
    tests/parallel's); without a launcher it says how to get one; ``test`` and ``time``
    take one device."""
    from caffelite import cli
    from caffelite.parallel import mpi

    launched = []
    monkeypatch.setattr("subprocess.call", lambda command: launched.append(command) or 0)
    monkeypatch.setattr(mpi, "launcher", lambda: "/opt/mpi/bin/mpiexec")
    solver = write_solver(tmp_path)
    assert cli.main(["train", "-gpu", "0,1", "--solver", solver, "--progress", "off"]) == 0
    (command,) = launched
    assert command[:3] == ["/opt/mpi/bin/mpiexec", "-n", "2"]
    assert command[4:] == ["-m", "caffelite", "train", "--solver", solver, "--progress", "off",
                           "--gpu", "0,1"]  # fmt: skip

    monkeypatch.setattr(mpi, "launcher", lambda: None)
    assert cli.main(["train", "--solver", solver, "--gpu", "0,1"]) == 1
    assert "no mpiexec was found" in capsys.readouterr().err
    model = str(LENET / "lenet.prototxt")
    assert cli.main(["time", "--model", model, "--gpu", "0,1"]) == 1
    assert "run on one GPU; name one device" in capsys.readouterr().err


def test_device_query_without_cupy_says_how_to_get_it(capsys):
    import importlib.util

    from caffelite import cli

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    assert cli.main(["device_query", "--gpu", "0"]) == 1
    assert "GPU mode needs CuPy" in capsys.readouterr().err


def test_a_rank_takes_its_local_ranks_device_from_the_list(cupy_is_the_fake_device):
    from caffelite import cli
    from caffelite.errors import CaffeliteError

    cli._use_gpu("0,1", local_rank=1)
    assert backend.device_id() == 1 and backend.is_gpu_mode()
    cli._use_gpu("3", local_rank=1)  # one id: every rank of the host uses it
    assert backend.device_id() == 3
    with pytest.raises(CaffeliteError, match="lists 2 devices, but this host runs more ranks"):
        cli._use_gpu("0,1", local_rank=2)
    backend.set_device(0)


def test_the_environment_can_name_the_fake_device(monkeypatch):
    from caffelite.errors import CaffeliteError

    monkeypatch.setenv(backend.DEVICE_ENV_VAR, "fake")
    assert backend._device_module() is fake_device
    monkeypatch.setenv(backend.DEVICE_ENV_VAR, "tpu")
    with pytest.raises(CaffeliteError, match="CAFFELITE_DEVICE='tpu': expected 'cupy'"):
        backend._device_module()
