"""Damaged data sources give a CaffeliteError naming the source and the record, raised
by the forward that needs it (the training thread), not lost in a reader thread."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from caffelite import mnist
from caffelite.errors import CaffeliteError
from caffelite.net import Net
from caffelite.proto import caffe_pb2


def _data_net(source, batch_size: int = 10) -> Net:
    text = (
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
        f'data_param {{ source: "{source}" batch_size: {batch_size} }} }}'
    )
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), 1)


@pytest.fixture
def database(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "db"
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    mnist.write_lmdb(path, images, rng.integers(0, 10, size=300))
    return path


def test_a_record_that_does_not_parse_is_named_in_the_forward_that_reads_it(database):
    env = lmdb.open(str(database), map_size=64 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"%08d" % 25, b"\x0a\xff\xff\xff")  # a length running past the end
    env.close()
    net = _data_net(database)
    try:
        net.forward()
        net.forward()  # records 0-19 are fine
        with pytest.raises(CaffeliteError) as info:
            net.forward()
        message = str(info.value)
        assert "layer 'd' (type Data)" in message
        assert str(database) in message
        assert "record b'00000025' is not a Datum (4 bytes that do not parse)" in message
    finally:
        net.close()


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.05])
def test_a_truncated_lmdb_is_refused_instead_of_crashing_the_process(database, fraction):
    """Reading a page past the end of a cut-short memory map is a SIGBUS: the
    length is checked against LMDB's metadata before a record is read."""
    copy = database.parent / "cut"
    shutil.copytree(database, copy)
    data = copy / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(int(size * fraction))
    with pytest.raises(
        CaffeliteError,
        match=rf"LMDB '{copy}' is (truncated: .* but its "
        rf"metadata counts {size}|unreadable)|cannot open LMDB",
    ):
        _data_net(copy)


_WRITER = """
import sys, lmdb
env = lmdb.open(sys.argv[1], map_size=64 << 20)
txn = env.begin(write=True)
for i in range(300, 400):
    txn.put(b"%08d" % i, b"half-written")  # never committed: never to be read
print("writing", flush=True)
sys.stdin.readline()
txn.abort()
"""


def test_records_committed_while_another_process_writes_are_read(database):
    """A database another process is still writing: the reader sees the last commit."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        net = _data_net(database, batch_size=100)
        try:
            for _ in range(4):  # wraps over the 300 committed records
                net.forward()
            assert net.blobs["data"].shape == (100, 1, 28, 28)
        finally:
            net.close()
    finally:
        writer.communicate("done\n", timeout=30)
    assert writer.returncode == 0


def _hdf5_net(tmp_path, path) -> Net:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{path}\n")
    text = (
        f'layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" '
        f'hdf5_data_param {{ source: "{listing}" batch_size: 4 }} }}'
    )
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), 1)


def _write_h5(path, rows: int = 64) -> None:
    with h5py.File(path, "w") as handle:
        handle["data"] = np.arange(rows * 50, dtype=np.float32).reshape(rows, 50)
        handle["label"] = np.arange(rows, dtype=np.float32)


@pytest.mark.parametrize("keep", [0.95, 0.6, 0.2, 0.01])
def test_a_cut_short_hdf5_file_names_the_file(tmp_path, keep):
    path = tmp_path / "data.h5"
    _write_h5(path)
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep)])
    with pytest.raises(CaffeliteError, match=rf"layer 'h' \(type HDF5Data\): .*{path}"):
        _hdf5_net(tmp_path, path)


def test_an_hdf5_dataset_declaring_more_than_fits_is_refused_before_reading(tmp_path):
    from caffelite import limits

    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:  # declared 2^40 rows; no bytes written
        handle.create_dataset("data", shape=(2**40, 8), dtype="f4", chunks=(1, 8))
        handle.create_dataset("label", shape=(2**40,), dtype="f4", chunks=(1,))
    with limits.memory_limit("1G"):
        with pytest.raises(
            CaffeliteError,
            match=r"dataset 'data' of shape \(1099511627776, 8\) "
            r"needs 32\.0 TiB",
        ):
            _hdf5_net(tmp_path, path)
