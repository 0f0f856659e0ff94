"""Snapshots and restore: Caffe's file names and contents, atomic writes, and a
resumed run that is bitwise identical to an uninterrupted one."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import solver_nets as sn

from caffelite.errors import CaffeliteError
from caffelite.layer import TEST
from caffelite.net import Net
from caffelite.proto import caffe_pb2
from caffelite.prototxt import read_binary
from caffelite.solver import Solver
from caffelite.solvers import AdamSolver, SGDSolver

#: Multistep so that the restored current_step matters; momentum so the history does.
SGD_TEXT = (
    "momentum: 0.9 weight_decay: 0.01 lr_policy: 'multistep' base_lr: 0.05 "
    "gamma: 0.5 stepvalue: 20 stepvalue: 60 stepvalue: 150"
)
ADAM_TEXT = "type: 'Adam' momentum: 0.9 momentum2: 0.999 base_lr: 0.01"


def state_of(path) -> caffe_pb2.SolverState:
    return read_binary(path, caffe_pb2.SolverState())


@pytest.mark.parametrize(("cls", "text"), [(SGDSolver, SGD_TEXT), (AdamSolver, ADAM_TEXT)])
def test_resume_is_bitwise_identical(tmp_path, cls, text):
    prefix = tmp_path / "lsq"
    straight = sn.make_solver(cls, f"{text} snapshot_prefix: '{prefix}'")
    straight.step(200)

    first = sn.make_solver(cls, f"{text} snapshot_prefix: '{prefix}'")
    first.step(100)
    model, state = first.snapshot()
    assert model == f"{prefix}_iter_100.caffemodel"
    assert state == f"{prefix}_iter_100.solverstate"

    resumed = sn.make_solver(cls, f"{text} snapshot_prefix: '{prefix}'")
    resumed.restore(state)
    assert resumed.iter == 100
    assert resumed.current_step == first.current_step
    for a, b in zip(sn.ip_params(resumed), sn.ip_params(first), strict=True):
        np.testing.assert_array_equal(a, b)
    resumed.step(100)
    assert resumed.iter == 200
    if cls is SGDSolver:
        assert first.current_step == 2
        assert resumed.current_step == 3
    for a, b in zip(sn.ip_params(resumed), sn.ip_params(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.history, straight.history, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_solverstate_contents_and_names(tmp_path):
    prefix = tmp_path / "out" / "lsq"  # the directory is created
    solver = sn.make_solver(AdamSolver, f"{ADAM_TEXT} snapshot: 3 snapshot_prefix: '{prefix}'")
    solver.step(7)
    names = sorted(p.name for p in prefix.parent.iterdir())
    assert names == [f"lsq_iter_{n}.{ext}" for n in (3, 6) for ext in ("caffemodel", "solverstate")]
    state = state_of(f"{prefix}_iter_6.solverstate")
    assert state.iter == 6
    assert state.learned_net == f"{prefix}_iter_6.caffemodel"
    assert state.current_step == 0
    assert len(state.history) == 4  # Adam: m for W and b, then v for W and b
    assert [tuple(h.shape.dim) for h in state.history] == [(1, 3), (1,), (1, 3), (1,)]
    # the caffemodel loads into a fresh net; the state's history is float32 data
    net = Net(sn.solver_param().net_param, TEST, weights=f"{prefix}_iter_6.caffemodel")
    solver_w = solver.net.params["ip"][0]
    assert not np.array_equal(net.params["ip"][0].data, solver_w.data)  # one step older
    assert len(state.history[0].data) == 3


def test_snapshot_diff_is_written(tmp_path):
    solver = sn.make_solver(SGDSolver, f"snapshot_diff: true snapshot_prefix: '{tmp_path}/d'")
    solver.step(1)
    model, _ = solver.snapshot()
    param = read_binary(model, caffe_pb2.NetParameter())
    ip = next(layer for layer in param.layer if layer.name == "ip")
    assert len(ip.blobs[0].diff) == 3


def test_snapshot_leaves_no_temporary_files(tmp_path):
    solver = sn.make_solver(SGDSolver, f"snapshot: 1 snapshot_prefix: '{tmp_path}/lsq'")
    solver.step(3)
    solver.snapshot()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        f"lsq_iter_{n}.{ext}" for n in (1, 2, 3) for ext in ("caffemodel", "solverstate")
    ]


def test_state_is_written_after_the_weights(tmp_path, monkeypatch):
    """If writing the weights fails, no solverstate may point at a missing file."""
    solver = sn.make_solver(SGDSolver, f"snapshot_prefix: '{tmp_path}/lsq'")
    solver.step(1)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(solver, "snapshot_to_binary_proto", broken)
    with pytest.raises(OSError, match="disk full"):
        solver.snapshot()
    assert list(tmp_path.iterdir()) == []


def test_default_prefix_is_the_solver_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(sn.net_text())
    (tmp_path / "my_solver.prototxt").write_text(
        "net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed' snapshot: 2"
    )
    solver = Solver("my_solver.prototxt")
    assert solver.param.snapshot_prefix == "my_solver"
    sn.feed(solver)
    solver.step(2)
    assert (tmp_path / "my_solver_iter_2.caffemodel").exists()
    assert (tmp_path / "my_solver_iter_2.solverstate").exists()
    (tmp_path / "snaps").mkdir()
    (tmp_path / "dir_solver.prototxt").write_text(
        "net: 'net.prototxt' base_lr: 0.1 snapshot_prefix: 'snaps'"
    )
    assert Solver("dir_solver.prototxt").param.snapshot_prefix == "snaps/dir_solver"


def test_learned_net_found_beside_moved_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = sn.make_solver(SGDSolver, "momentum: 0.9 snapshot_prefix: 'snaps/lsq'")
    solver.step(5)
    _, state = solver.snapshot()
    assert state_of(state).learned_net == "snaps/lsq_iter_5.caffemodel"
    shutil.move("snaps", "moved")
    fresh = sn.make_solver(SGDSolver, "momentum: 0.9")
    fresh.restore("moved/lsq_iter_5.solverstate")
    for a, b in zip(sn.ip_params(fresh), sn.ip_params(solver), strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "moved" / "lsq_iter_5.caffemodel").unlink()
    with pytest.raises(
        CaffeliteError,
        match=r"weights file 'snaps/lsq_iter_5.caffemodel' "
        r"was not found",
    ):
        sn.make_solver(SGDSolver, "momentum: 0.9").restore("moved/lsq_iter_5.solverstate")


def test_solve_resumes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caffelite")
    text = f"momentum: 0.9 max_iter: 6 snapshot_prefix: '{tmp_path}/lsq'"
    straight = sn.make_solver(SGDSolver, text)
    straight.solve()
    first = sn.make_solver(SGDSolver, text)
    first.step(4)
    _, state = first.snapshot()
    resumed = sn.make_solver(SGDSolver, text)
    resumed.solve(state)
    assert resumed.iter == 6
    assert f"Restoring previous solver status from {state}" in caplog.text
    for a, b in zip(sn.ip_params(resumed), sn.ip_params(straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_solverstate(tmp_path):
    solver = sn.make_solver(SGDSolver, f"momentum: 0.9 snapshot_prefix: '{tmp_path}/lsq'")
    solver.step(2)
    _, state = solver.snapshot()
    payload = Path(state).read_bytes()
    broken = tmp_path / "broken.solverstate"
    broken.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(
        CaffeliteError,
        match=r"broken.solverstate is corrupt or not a binary "
        r"SolverState file",
    ):
        solver.restore(broken)
    with pytest.raises(CaffeliteError, match=r"cannot read .*missing.solverstate"):
        solver.restore(tmp_path / "missing.solverstate")


def test_history_mismatch(tmp_path):
    sgd = sn.make_solver(SGDSolver, f"momentum: 0.9 snapshot_prefix: '{tmp_path}/lsq'")
    sgd.step(1)
    _, state = sgd.snapshot()
    adam = sn.make_solver(AdamSolver, ADAM_TEXT)
    with pytest.raises(CaffeliteError, match=r"holds 2 history blobs; this Adam solver needs 4"):
        adam.restore(state)
    assert adam.iter == 0  # nothing was changed
    narrow = Solver(sn.solver_param(net=sn.net_text().replace("channels: 3", "channels: 2")))
    with pytest.raises(
        CaffeliteError,
        match=r"history blob 0 has shape \(1, 3\); the net's "
        r"parameter needs \(1, 2\)",
    ):
        narrow.restore(state)


def test_hdf5_snapshots_resume_bitwise_identical(tmp_path):
    pytest.importorskip("h5py")
    text = f"{SGD_TEXT} snapshot_format: HDF5 snapshot_prefix: '{tmp_path}/h'"
    straight = sn.make_solver(SGDSolver, text)
    straight.step(60)
    first = sn.make_solver(SGDSolver, text)
    first.step(30)
    model, state = first.snapshot()
    assert model == f"{tmp_path}/h_iter_30.caffemodel.h5"
    assert state == f"{tmp_path}/h_iter_30.solverstate.h5"
    resumed = sn.make_solver(SGDSolver, text)
    resumed.restore(state)
    assert resumed.iter == 30 and resumed.current_step == first.current_step == 1
    resumed.step(30)
    for a, b in zip(sn.ip_params(resumed), sn.ip_params(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.history, straight.history, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_weights_field_initialises_the_nets(tmp_path):
    trained = sn.make_solver(SGDSolver, f"snapshot_prefix: '{tmp_path}/t'")
    trained.step(3)
    model, _ = trained.snapshot()
    fresh = sn.make_solver(SGDSolver, f"weights: '{model}' test_iter: 1 test_interval: 10")
    for a, b in zip(sn.ip_params(fresh), sn.ip_params(trained), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        fresh.test_nets[0].params["ip"][0].data, trained.net.params["ip"][0].data
    )
    with pytest.raises(CaffeliteError, match="cannot read nowhere.caffemodel"):
        Solver(sn.solver_param("weights: 'nowhere.caffemodel'"))
    (tmp_path / "solver.prototxt").write_text(
        "net_param { name: 'x' } base_lr: 0.1 weights: 'nowhere.caffemodel'"
    )
    with pytest.raises(
        CaffeliteError,
        match="weights file 'nowhere.caffemodel' not found in "
        "the current directory nor next to the solver",
    ):
        Solver(tmp_path / "solver.prototxt")


def test_restore_accepts_legacy_4d_history_blobs(tmp_path):
    """Old solverstates store history in the num/channels/height/width form."""
    sgd = sn.make_solver(SGDSolver, f"momentum: 0.9 snapshot_prefix: '{tmp_path}/lsq'")
    sgd.step(3)
    _, state_path = sgd.snapshot()
    state = state_of(state_path)
    for proto, blob in zip(state.history, sgd.history, strict=True):
        values = list(proto.data)
        proto.Clear()
        proto.num, proto.channels = 1, 1
        proto.height, proto.width = ((1,) + blob.shape) if len(blob.shape) == 1 else blob.shape
        proto.data.extend(values)
    legacy = tmp_path / "legacy.solverstate"
    legacy.write_bytes(state.SerializeToString())
    resumed = sn.make_solver(SGDSolver, "momentum: 0.9")
    resumed.restore(legacy)
    for a, b in zip(resumed.history, sgd.history, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.data, b.data)
