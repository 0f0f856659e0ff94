"""Net weights and solver states in Caffe's HDF5 layouts."""

import os

import h5py
import numpy as np
import pytest

import caffelite as caffe
from caffelite import hdf5
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.proto import caffe_pb2
from caffelite.prototxt import parse_text

NET = """
name: "mlp"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        param { name: "w" } param { name: "b1" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "out"
        param { name: "w" } param { name: "b2" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "ip3" type: "InnerProduct" bottom: "out" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
"""


@pytest.fixture(autouse=True)
def _needs_inner_product(request):
    if "net" in request.fixturenames and "InnerProduct" not in caffe.layer_type_list():
        pytest.skip("InnerProduct is not registered yet")


def make_net(text=NET):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)


@pytest.fixture
def net():
    net = make_net()
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape)
    return net


def test_round_trip_uses_caffes_layout(net, tmp_path):
    path = tmp_path / "w.caffemodel.h5"
    hdf5.save_net_hdf5(net, path)
    with h5py.File(path, "r") as f:
        assert list(f) == ["data"]
        assert sorted(f["data"]) == ["ip1", "ip2", "ip3", "relu", "x"]  # every layer
        assert len(f["data/x"]) == 0 and len(f["data/relu"]) == 0
        assert sorted(f["data/ip1"]) == ["0", "1"]
        assert sorted(f["data/ip2"]) == ["1"]  # blob 0 is shared from ip1: only the owner saves
        assert f["data/ip1/0"].shape == (3, 3) and f["data/ip1/0"].dtype == np.float32
        np.testing.assert_array_equal(f["data/ip3/0"][()], net.params["ip3"][0].data)
    fresh = make_net()
    hdf5.load_net_hdf5(fresh, path)
    for name, blobs in net.params.items():
        for mine, theirs in zip(fresh.params[name], blobs, strict=True):
            np.testing.assert_array_equal(mine.data, theirs.data)
    assert fresh.params["ip2"][0] is fresh.params["ip1"][0]  # still shared after loading


def test_copy_from_dispatches_h5_and_diffs_are_written(net, tmp_path):
    for blobs in net.params.values():
        for blob in blobs:
            blob.diff[...] = 0.25
    path = tmp_path / "w.h5"
    hdf5.save_net_hdf5(net, path, write_diff=True)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["data", "diff"]
        assert sorted(f["diff/ip2"]) == ["0", "1"]  # diffs are written for shared blobs too
        np.testing.assert_array_equal(f["diff/ip3/1"][()], np.full(2, 0.25, np.float32))
    fresh = make_net()
    fresh.copy_from(str(path))
    np.testing.assert_array_equal(fresh.params["ip3"][0].data, net.params["ip3"][0].data)


def test_reads_files_written_the_caffe_way_and_ignores_unknown_layers(tmp_path):
    if "InnerProduct" not in caffe.layer_type_list():
        pytest.skip("InnerProduct is not registered yet")
    target = make_net()
    before = target.params["ip3"][0].data.copy()
    path = tmp_path / "caffe.h5"
    weight = np.arange(9, dtype=np.float64).reshape(3, 3)
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip1/0", data=weight)  # doubles, converted on load
        f.create_dataset("data/ip1/1", data=np.array([1, 2, 3], dtype=np.int32))
        f.create_dataset("data/other/0", data=np.zeros(5))
    hdf5.load_net_hdf5(target, path)
    np.testing.assert_array_equal(target.params["ip1"][0].data, weight.astype(np.float32))
    np.testing.assert_array_equal(target.params["ip1"][1].data, [1, 2, 3])
    np.testing.assert_array_equal(target.params["ip3"][0].data, before)  # not in the file


def test_load_errors_name_the_problem(net, tmp_path):
    with pytest.raises(CaffeliteError, match=r"missing\.h5 does not exist"):
        hdf5.load_net_hdf5(net, tmp_path / "missing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(CaffeliteError, match="not a readable HDF5 file"):
        hdf5.load_net_hdf5(net, garbage)
    cases = {
        "nodata.h5": ({"weights/ip1/0": np.zeros((3, 3))}, "has no 'data' group"),
        "shape.h5": (
            {"data/ip3/0": np.zeros((3, 2))},
            r"param 0 of layer 'ip3'.*shape \(3, 2\) in the file, \(2, 3\) in the net",
        ),
        "many.h5": (
            {f"data/ip3/{i}": np.zeros(2) for i in range(3)},
            "layer 'ip3' has 3 parameter blobs in the file, 2 in the net",
        ),
        "missing.h5": ({"data/ip3/1": np.zeros(2)}, "layer 'ip3' has no parameter blob 0"),
        "text.h5": ({"data/ip3/0": np.array([b"ab", b"cd"])}, "expected numbers"),
    }
    for name, (datasets, message) in cases.items():
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for key, values in datasets.items():
                f.create_dataset(key, data=values)
        with pytest.raises(CaffeliteError, match=message):
            hdf5.load_net_hdf5(net, path)


def test_write_is_atomic(net, tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    hdf5.save_net_hdf5(net, path)
    original = path.read_bytes()

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hdf5.backend, "to_numpy", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        hdf5.save_net_hdf5(net, path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["w.h5"]  # no temporary left behind


def test_solver_state_round_trip_in_caffes_layout(tmp_path):
    path = tmp_path / "s.solverstate.h5"
    history = [np.arange(6, dtype=np.float32).reshape(2, 3), np.full(4, 0.5, np.float32)]
    hdf5.save_solver_state_hdf5(path, 1200, "snap_iter_1200.caffemodel.h5", 3, history)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["current_step", "history", "iter", "learned_net"]
        assert f["iter"].shape == (1,) and f["iter"].dtype == np.int32 and f["iter"][0] == 1200
        assert f["current_step"][0] == 3
        string_type = f["learned_net"].id.get_type()
        assert string_type.get_strpad() == h5py.h5t.STR_NULLTERM  # as H5LTmake_dataset_string
        assert f["learned_net"][()] == b"snap_iter_1200.caffemodel.h5"
        assert sorted(f["history"]) == ["0", "1"]
    targets = [Blob(2, 3), np.zeros(4, np.float32)]
    state = hdf5.load_solver_state_hdf5(path, targets)
    assert (state.iter, state.learned_net, state.current_step) == (
        1200,
        "snap_iter_1200.caffemodel.h5",
        3,
    )
    np.testing.assert_array_equal(targets[0].data, history[0])
    np.testing.assert_array_equal(targets[1], history[1])
    np.testing.assert_array_equal(state.history[1], history[1])

    blobs = [Blob(3)]
    blobs[0].data[...] = [1, 2, 3]
    hdf5.save_solver_state_hdf5(path, 5, "", 0, blobs)  # Blobs are saved by their data
    assert hdf5.load_solver_state_hdf5(path).history[0].tolist() == [1, 2, 3]


def test_solver_state_errors(tmp_path):
    path = tmp_path / "s.h5"
    hdf5.save_solver_state_hdf5(path, 1, "w.h5", 0, [np.zeros(3, np.float32)])
    with pytest.raises(CaffeliteError, match="holds 1 history blobs, the solver has 2"):
        hdf5.load_solver_state_hdf5(path, [np.zeros(3), np.zeros(3)])
    with pytest.raises(CaffeliteError, match=r"history blob 0 has shape \(3,\) in the file"):
        hdf5.load_solver_state_hdf5(path, [np.zeros(4)])
    with pytest.raises(CaffeliteError, match="does not exist"):
        hdf5.load_solver_state_hdf5(tmp_path / "none.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("iter", data=[1])
    with pytest.raises(CaffeliteError, match="no 'current_step' dataset"):
        hdf5.load_solver_state_hdf5(tmp_path / "bad.h5")


def test_net_save_hdf5_and_load_hdf5_methods(net, tmp_path):
    """pycaffe's Net.save_hdf5 / Net.load_hdf5 write and read Caffe's HDF5 weights."""
    path = tmp_path / "net.caffemodel.h5"
    net.save_hdf5(str(path))
    other = make_net()
    other.load_hdf5(str(path))
    for mine, theirs in zip(net.learnable_params, other.learnable_params, strict=True):
        np.testing.assert_array_equal(mine.data, theirs.data)
    with h5py.File(path, "r") as handle:
        assert "data" in handle and "diff" not in handle
    net.save_hdf5(str(path), write_diff=True)
    with h5py.File(path, "r") as handle:
        assert "diff" in handle
