"""convert_cifar_data on files in CIFAR-10's binary format, and cifar10_quick trained on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffelite import db
from caffelite.datasets.cifar import RECORD_BYTES, convert_cifar_data, read_cifar_batch
from caffelite.errors import CaffeliteError
from caffelite.net import load_net_param
from caffelite.proto import caffe_pb2
from caffelite.rng import set_random_seed
from caffelite.solver import get_solver, load_solver_param

REPO = Path(__file__).resolve().parents[2]


def cifar_images(rng, labels) -> np.ndarray:
    """32 x 32 RGB images whose colour and stripe direction depend on the label."""
    n = len(labels)
    base = np.stack([(labels * 25) % 256, 255 - labels * 20, (labels * 70) % 256], axis=1)
    rows = np.arange(32)[:, None] + 0 * np.arange(32)[None, :]
    stripes = np.where(labels[:, None, None] % 2 == 0, rows, rows.T) % 8 * 8
    images = base[:, :, None, None] + stripes[:, None] + rng.integers(-20, 20, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8)


def write_cifar(folder: Path, per_file: int, rng):
    """data_batch_1..5.bin and test_batch.bin with ``per_file`` records each, in CIFAR-10's
    layout: per record the label byte, then the red, green and blue 32 x 32 planes."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, per_file)
        images = cifar_images(rng, labels)
        records = np.concatenate(
            [labels[:, None].astype(np.uint8), images.reshape(per_file, -1)], 1
        )
        (folder / name).write_bytes(records.tobytes())
        written[name] = images, labels
    return written


def test_records_keys_and_rgb_planes(tmp_path):
    rng = np.random.default_rng(0)
    written = write_cifar(tmp_path / "bin", 3, rng)
    counts = convert_cifar_data(str(tmp_path / "bin"), str(tmp_path / "out"), "lmdb")
    train, test = (
        str(tmp_path / "out" / "cifar10_train_lmdb"),
        str(tmp_path / "out" / "cifar10_test_lmdb"),
    )
    assert counts == {train: 15, test: 3}
    records = list(db.read_records(train))
    assert [k for k, _ in records][:4] == [b"00000", b"00001", b"00002", b"10000"]
    datum = caffe_pb2.Datum.FromString(records[3][1])  # data_batch_2.bin's first record
    images, labels = written["data_batch_2.bin"]
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 32, 32, labels[0])
    assert datum.data == images[0].tobytes()  # planes as stored: R, G, B
    test_keys = [k for k, _ in db.read_records(test)]
    assert test_keys == [b"00000", b"00001", b"00002"]


def test_errors(tmp_path):
    folder = tmp_path / "bin"
    write_cifar(folder, 1, np.random.default_rng(1))
    (folder / "data_batch_3.bin").write_bytes(bytes(RECORD_BYTES + 5))
    with pytest.raises(CaffeliteError, match=r"data_batch_3.bin: 3078 bytes is not a whole number"):
        convert_cifar_data(str(folder), str(tmp_path / "out"), "lmdb")
    (folder / "data_batch_3.bin").write_bytes(b"\x0c" + bytes(RECORD_BYTES - 1))
    with pytest.raises(CaffeliteError, match="record 0 has label 12"):
        read_cifar_batch(str(folder / "data_batch_3.bin"))
    (folder / "test_batch.bin").unlink()
    with pytest.raises(CaffeliteError, match="missing: .*test_batch.bin"):
        convert_cifar_data(str(folder), str(tmp_path / "other"), "lmdb")


def test_cifar10_quick_trains_on_converted_data(tmp_path, monkeypatch, load_tool):
    """The documented recipe (convert, then compute the mean) feeds models/cifar10 as is."""
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "cifar-10-batches-bin", 40, np.random.default_rng(2))
    assert (
        load_tool("convert_cifar_data").main(["cifar-10-batches-bin", "data/cifar10", "lmdb"]) == 0
    )
    mean_tool = load_tool("compute_image_mean")
    assert mean_tool.main(["data/cifar10/cifar10_train_lmdb", "data/cifar10/mean.binaryproto"]) == 0
    param = load_solver_param(REPO / "models/cifar10/cifar10_quick_solver.prototxt")
    net_param = load_net_param(REPO / param.net)  # the model as shipped, but 10 per batch
    for layer in net_param.layer:
        if layer.type == "Data":
            layer.data_param.batch_size = 10
    param.ClearField("net")
    param.net_param.CopyFrom(net_param)
    param.test_interval, param.display, param.snapshot = 10000, 0, 0
    param.test_initialization = False
    param.snapshot_prefix = str(tmp_path / "snap")
    set_random_seed(4)
    solver = get_solver(param)
    solver.step(15)
    accuracy = np.mean([float(solver.test_nets[0].forward()["accuracy"]) for _ in range(10)])
    assert accuracy > 0.25  # on the 100 test records; chance is 0.1
