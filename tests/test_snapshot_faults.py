"""A full disk or an I/O error while snapshotting: a clear error, no temporary file
left, and the previous snapshot exactly as it was."""

from __future__ import annotations

import errno
import io
import os

import pytest
import solver_nets as sn

from caffelite import prototxt
from caffelite.errors import CaffeliteError
from caffelite.solvers import SGDSolver


class _DiskFillsUp(io.BufferedWriter):
    """A writer that stores half of what it is given, then fails as a full disk does."""

    def write(self, data):
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_writes(monkeypatch):
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return _DiskFillsUp(handle.detach()) if "w" in mode else handle

    monkeypatch.setattr(prototxt.os, "fdopen", fdopen)


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.mark.parametrize("which", ["weights", "state"])
def test_a_full_disk_during_a_snapshot(tmp_path, monkeypatch, which):
    solver = sn.make_solver(SGDSolver, f"snapshot: 1 snapshot_prefix: '{tmp_path}/lsq'")
    solver.step(1)
    before = _files(tmp_path)
    assert sorted(before) == ["lsq_iter_1.caffemodel", "lsq_iter_1.solverstate"]
    if which == "state":  # the weights are written, then the disk fills up
        real = solver.snapshot_solver_state

        def state_on_full_disk(model_filename):
            _fail_writes(monkeypatch)
            return real(model_filename)

        monkeypatch.setattr(solver, "snapshot_solver_state", state_on_full_disk)
    else:
        _fail_writes(monkeypatch)
    with pytest.raises(
        CaffeliteError,
        match=rf"cannot write {tmp_path}/lsq_iter_2\.\w+: No space "
        "left on device; nothing was left half-written",
    ):
        solver.step(1)
    after = _files(tmp_path)
    assert not [name for name in after if name.endswith(".tmp")]
    for name, payload in before.items():
        assert after[name] == payload  # the previous snapshot, byte for byte
    if which == "state":
        assert "lsq_iter_2.solverstate" not in after


def test_an_io_error_during_an_hdf5_snapshot(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    from caffelite import hdf5

    solver = sn.make_solver(
        SGDSolver, f"snapshot: 1 snapshot_format: HDF5 snapshot_prefix: '{tmp_path}/lsq'"
    )
    solver.step(1)
    before = _files(tmp_path)

    def replace(source, target):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(hdf5.os, "replace", replace)
    with pytest.raises(CaffeliteError, match=r"lsq_iter_2\.caffemodel\.h5: Input/output error"):
        solver.step(1)
    assert _files(tmp_path) == before


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(CaffeliteError, match=r"cannot write .*file/sub/x\.bin"):
        prototxt.write_bytes_atomic(blocker / "sub" / "x.bin", b"payload")
