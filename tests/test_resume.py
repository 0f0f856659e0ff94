"""Exact resume on real data, through the ``caffelite train`` command: N iterations
straight versus N/2, ``--snapshot``, N/2 more give bitwise identical weights and
update history -- LeNet on an LMDB, a net with mirror + crop_size + Dropout, an
HDF5Data net with shuffle, ImageData with shuffle, and a run stopped by SIGINT.

The CI versions run a few iterations on small databases made from the real MNIST
(small enough that every source wraps around, and a batch straddles the wrap);
the 200-iteration LeNet run of the issue is marked slow.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from caffelite.cli import main
from caffelite.errors import CaffeliteError
from caffelite.mnist import load_mnist, write_lmdb
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_binary, write_binary_atomic
from caffelite.solver import get_solver

SOLVER = """net: "{net}"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75
display: {display} max_iter: {max_iter} snapshot: {snapshot} random_seed: 1
snapshot_prefix: "{prefix}"
"""

CROP_MIRROR_DROPOUT = """name: "crop_mirror_dropout"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 mirror: true crop_size: 24 }
  data_param { source: "data/train_lmdb" batch_size: 16 rand_skip: 50 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 5 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv" top: "ip1"
  inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

HDF5_SHUFFLE = """name: "hdf5_shuffle"
layer { name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "data/h5_list.txt" batch_size: 24 shuffle: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

IMAGE_SHUFFLE = """name: "image_shuffle"
layer { name: "images" type: "ImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 mirror: true crop_size: 26 }
  image_data_param { source: "data/images.txt" root_folder: "data/png" batch_size: 8
                     shuffle: true is_color: false } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Small sources made from the real MNIST: LMDBs (LeNet's paths and one more), two
    HDF5 files, PNG images; the models directory."""
    from conftest import SHARED_MNIST

    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found in {SHARED_MNIST}")
    root = tmp_path_factory.mktemp("resume")
    images, labels = load_mnist(
        SHARED_MNIST / "train-images-idx3-ubyte.gz", SHARED_MNIST / "train-labels-idx1-ubyte.gz"
    )
    write_lmdb(str(root / "data/mnist/mnist_train_lmdb"), images[:300], labels[:300])
    write_lmdb(str(root / "data/mnist/mnist_test_lmdb"), images[300:500], labels[300:500])
    write_lmdb(str(root / "data/train_lmdb"), images[500:620], labels[500:620])
    _write_hdf5_sources(root / "data", images, labels)
    _write_png_sources(root / "data", images, labels)
    shutil.copytree(REPO / "models/lenet", root / "models/lenet")
    for name, text in (
        ("crop_mirror_dropout", CROP_MIRROR_DROPOUT),
        ("hdf5_shuffle", HDF5_SHUFFLE),
        ("image_shuffle", IMAGE_SHUFFLE),
    ):
        (root / f"{name}.prototxt").write_text(text)
    return root


def _write_hdf5_sources(data: Path, images, labels) -> None:
    h5py = pytest.importorskip("h5py")
    names = []
    for k, (start, stop) in enumerate(((1000, 1070), (1070, 1120))):  # rows 70 and 50
        name = data / f"part{k}.h5"
        with h5py.File(name, "w") as f:
            f["data"] = images[start:stop].reshape(-1, 784).astype(np.float32) / 255
            f["label"] = labels[start:stop].astype(np.float32)
        names.append(str(name))
    (data / "h5_list.txt").write_text("\n".join(names) + "\n")


def _write_png_sources(data: Path, images, labels) -> None:
    image_module = pytest.importorskip("PIL.Image")
    (data / "png").mkdir(parents=True)
    lines = []
    for k in range(2000, 2036):
        image_module.fromarray(images[k].reshape(28, 28)).save(data / "png" / f"{k}.png")
        lines.append(f"{k}.png {int(labels[k])}")
    (data / "images.txt").write_text("\n".join(lines) + "\n")


def _solver_file(workdir, tag, net, max_iter, snapshot, extra="", display=0) -> Path:
    (workdir / tag).mkdir(exist_ok=True)
    path = workdir / f"{tag}_solver.prototxt"
    text = SOLVER.format(
        net=net, display=display, max_iter=max_iter, snapshot=snapshot, prefix=f"{tag}/run"
    )
    path.write_text(text + extra)
    return path


def _train(*args) -> None:
    assert main(["train", *map(str, args)]) == 0


def _final(workdir, tag, iteration):
    """(per-layer weights, history) of ``tag``'s snapshot at ``iteration``."""
    weights = read_binary(
        workdir / f"{tag}/run_iter_{iteration}.caffemodel", caffe_pb2.NetParameter()
    )
    state = read_binary(
        workdir / f"{tag}/run_iter_{iteration}.solverstate", caffe_pb2.SolverState()
    )
    params = [np.asarray(b.data) for layer in weights.layer for b in layer.blobs]
    return params, [np.asarray(h.data) for h in state.history]


def _assert_identical(a, b) -> None:
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        np.testing.assert_array_equal(x, y)


def straight_and_resumed(workdir, monkeypatch, name, net, iters, extra=""):
    """Train ``iters`` straight and ``iters/2`` + resume + ``iters/2``, through the CLI."""
    monkeypatch.chdir(workdir)
    half = iters // 2
    straight = _solver_file(workdir, f"{name}_straight", net, iters, iters, extra)
    first = _solver_file(workdir, f"{name}_first", net, half, half, extra)
    resumed = _solver_file(workdir, f"{name}_resumed", net, iters, iters, extra)
    _train("--solver", straight)
    _train("--solver", first)
    _train("--solver", resumed, "--snapshot", f"{name}_first/run_iter_{half}.solverstate")
    return _final(workdir, f"{name}_straight", iters), _final(workdir, f"{name}_resumed", iters)


LENET = "models/lenet/lenet_train_test.prototxt"
LENET_TESTS = "test_iter: 1 test_interval: 4\n"


def test_lenet_on_lmdb_resumes_exactly(workdir, monkeypatch):
    straight, resumed = straight_and_resumed(workdir, monkeypatch, "lenet", LENET, 8, LENET_TESTS)
    _assert_identical(straight, resumed)


@pytest.mark.slow
def test_lenet_on_lmdb_200_iterations_resume_exactly(workdir, monkeypatch):
    extra = "test_iter: 2 test_interval: 50\n"
    straight, resumed = straight_and_resumed(workdir, monkeypatch, "lenet200", LENET, 200, extra)
    _assert_identical(straight, resumed)


def test_crop_mirror_dropout_resumes_exactly(workdir, monkeypatch):
    net = "crop_mirror_dropout.prototxt"
    straight, resumed = straight_and_resumed(workdir, monkeypatch, "cmd", net, 16)
    _assert_identical(straight, resumed)


def test_hdf5_shuffle_resumes_exactly(workdir, monkeypatch):
    # 120 rows in files of 70 and 50, batches of 24: batches straddle files and epochs
    straight, resumed = straight_and_resumed(
        workdir, monkeypatch, "h5", "hdf5_shuffle.prototxt", 14
    )
    _assert_identical(straight, resumed)


def test_image_data_shuffle_resumes_exactly(workdir, monkeypatch):
    straight, resumed = straight_and_resumed(
        workdir, monkeypatch, "img", "image_shuffle.prototxt", 14
    )
    _assert_identical(straight, resumed)


def test_without_the_record_a_resume_drifts(workdir, monkeypatch):
    """A Caffe-written state (no caffelite record) resumes as Caffe does: data from the
    start, fresh random numbers; the weights then differ, which the tests above rule out."""
    net = "crop_mirror_dropout.prototxt"
    straight, _ = straight_and_resumed(workdir, monkeypatch, "drift", net, 16)
    path = workdir / "drift_first/run_iter_8.solverstate"
    state = read_binary(path, caffe_pb2.SolverState())
    assert state.caffelite_resume  # present in what caffelite writes...
    state.ClearField("caffelite_resume")
    caffe_like = workdir / "drift_first/caffe_like.solverstate"
    write_binary_atomic(caffe_like, state)
    solver = _solver_file(workdir, "drift_caffe", net, 16, 16)
    _train("--solver", solver, "--snapshot", caffe_like)
    drifted = _final(workdir, "drift_caffe", 16)
    assert any(not np.array_equal(x, y) for x, y in zip(straight[0], drifted[0], strict=True))


def _caffe_solver_state_class():
    """SolverState as Caffe's schema has it: fields 1-4 only (history kept as raw bytes)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file_proto = descriptor_pb2.FileDescriptorProto(name="caffe_only.proto", package="caffe_only")
    message = file_proto.message_type.add(name="SolverState")
    for name, number, kind, label in (
        ("iter", 1, field.TYPE_INT32, field.LABEL_OPTIONAL),
        ("learned_net", 2, field.TYPE_STRING, field.LABEL_OPTIONAL),
        ("history", 3, field.TYPE_BYTES, field.LABEL_REPEATED),
        ("current_step", 4, field.TYPE_INT32, field.LABEL_OPTIONAL),
    ):
        message.field.add(name=name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe_only.SolverState"))


def test_state_stays_readable_with_caffes_schema(workdir, monkeypatch):
    """Caffe's parser skips the record as an unknown field and reads its four fields."""
    straight_and_resumed(workdir, monkeypatch, "schema", "hdf5_shuffle.prototxt", 2)
    raw = (workdir / "schema_first/run_iter_1.solverstate").read_bytes()
    caffe_state = _caffe_solver_state_class().FromString(raw)
    ours = caffe_pb2.SolverState.FromString(raw)
    assert ours.caffelite_resume
    assert caffe_state.iter == ours.iter == 1
    assert caffe_state.learned_net == ours.learned_net
    assert caffe_state.current_step == ours.current_step
    assert list(caffe_state.history) == [h.SerializeToString() for h in ours.history]
    assert len(ours.history) == 4


def test_hdf5_solverstate_resumes_exactly(workdir, monkeypatch):
    pytest.importorskip("h5py")
    net = "crop_mirror_dropout.prototxt"
    extra = "snapshot_format: HDF5\n"
    monkeypatch.chdir(workdir)
    straight = _solver_file(workdir, "h5state_straight", net, 8, 8, extra)
    first = _solver_file(workdir, "h5state_first", net, 4, 4, extra)
    resumed = _solver_file(workdir, "h5state_resumed", net, 8, 8, extra)
    _train("--solver", straight)
    _train("--solver", first)
    _train("--solver", resumed, "--snapshot", "h5state_first/run_iter_4.solverstate.h5")
    for tag in ("h5state_straight", "h5state_resumed"):
        solver = get_solver(str(workdir / f"{tag}_solver.prototxt"))
        solver.restore(workdir / f"{tag}/run_iter_8.solverstate.h5")
        if tag == "h5state_straight":
            expected = [b.data.copy() for b in solver.net.learnable_params + solver.history]
        else:
            got = [b.data for b in solver.net.learnable_params + solver.history]
            for x, y in zip(expected, got, strict=True):
                np.testing.assert_array_equal(x, y)


def test_record_for_another_net_is_a_clear_error(workdir, monkeypatch):
    import json

    straight_and_resumed(workdir, monkeypatch, "other", "hdf5_shuffle.prototxt", 2)
    path = workdir / "other_first/run_iter_1.solverstate"
    state = read_binary(path, caffe_pb2.SolverState())
    record = json.loads(state.caffelite_resume)
    record["nets"][0][0][1] = "renamed"  # the HDF5Data layer's name
    state.caffelite_resume = json.dumps(record).encode()
    write_binary_atomic(path, state)
    solver = get_solver(str(workdir / "other_resumed_solver.prototxt"))
    with pytest.raises(CaffeliteError, match=r"run_iter_1.solverstate.*'renamed'.*another net"):
        solver.restore(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_interrupted_run_resumes_exactly(workdir, monkeypatch):
    """Stop ``caffelite train`` with SIGINT at an iteration K it picks itself, resume
    from its snapshot to K + 4, and compare with K + 4 straight."""
    monkeypatch.chdir(workdir)
    net = "crop_mirror_dropout.prototxt"
    interrupted = _solver_file(workdir, "sigint_run", net, 100000, 0, display=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "caffelite", "train", "--solver", str(interrupted)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=workdir,
    )
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "] Iteration 3 (" in line:
                break
        else:
            pytest.fail("training never reached iteration 3:\n" + "".join(seen))
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(seen) + rest
    states = list((workdir / "sigint_run").glob("run_iter_*.solverstate"))
    assert len(states) == 1, states
    stopped_at = int(states[0].name.split("_")[-1].split(".")[0])
    assert stopped_at >= 3
    end = stopped_at + 4
    straight = _solver_file(workdir, "sigint_straight", net, end, end)
    resumed = _solver_file(workdir, "sigint_resumed", net, end, end)
    _train("--solver", straight)
    _train("--solver", resumed, "--snapshot", states[0])
    _assert_identical(
        _final(workdir, "sigint_straight", end), _final(workdir, "sigint_resumed", end)
    )
