"""Weights and solver states in Caffe's HDF5 layouts (``snapshot_format: HDF5``).

Net weights (Caffe's Net::ToHDF5 / CopyTrainedLayersFromHDF5)::

    /data/<layer name>/0, /1, ...   one float dataset per parameter blob, blob-shaped
    /diff/<layer name>/0, ...       only when diffs are written

Every layer gets a group, even without parameters; a parameter shared from an
earlier layer is written only by its owner (and may be absent when loading).

Solver state (Caffe's SGDSolver::SnapshotSolverStateToHDF5)::

    /iter           int dataset of shape (1,)
    /learned_net    string dataset: the weights file the state belongs to
    /current_step   int dataset of shape (1,)
    /history/0, ... one dataset per solver history blob

Files are written to a temporary file next to the target and renamed over it, so a
crash never leaves a half-written snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffelite import backend
from caffelite.blob import Blob
from caffelite.errors import CaffeliteError
from caffelite.prototxt import write_error

logger = logging.getLogger("caffelite")


def require_h5py():
    """The h5py module, or a CaffeliteError that says how to install it."""
    try:
        import h5py
    except ImportError:
        raise CaffeliteError(
            "HDF5 files need h5py: pip install h5py (or pip install caffelite[hdf5])"
        ) from None
    return h5py


@contextlib.contextmanager
def atomic_h5_file(path):
    """An h5py File open for writing on a temporary file renamed to ``path`` on success."""
    h5py = require_h5py()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    try:
        with h5py.File(temp, "w") as handle:
            yield handle
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # h5py reports a full disk as OSError too
            raise write_error(path, exc) from None
        raise


def open_h5_for_reading(path, what: str):
    """Open ``path`` read-only; a missing or non-HDF5 file is a clear CaffeliteError."""
    h5py = require_h5py()
    path = str(path)
    if not os.path.isfile(path):
        raise CaffeliteError(f"cannot read {what}: {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CaffeliteError(
            f"cannot read {what}: {path} is not a readable HDF5 file ({exc})"
        ) from None


# ---- strings and ints as Caffe's H5LT helpers write them ------------------------------


def _write_int(group, name: str, value: int) -> None:
    group.create_dataset(name, data=np.array([int(value)], dtype=np.int32))


def _read_int(group, name: str, path) -> int:
    if name not in group:
        raise CaffeliteError(f"{path}: HDF5 solver state has no {name!r} dataset")
    return int(np.asarray(group[name][()]).reshape(-1)[0])


def _write_string(group, name: str, value: str) -> None:
    """A scalar, NUL-terminated fixed-length string (H5LTmake_dataset_string's form)."""
    h5py = require_h5py()
    encoded = value.encode() + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(encoded))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dataset = h5py.h5d.create(group.id, name.encode(), string_type, space)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(encoded, dtype=f"S{len(encoded)}"))


def _read_string(group, name: str) -> str:
    value = group[name][()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode()
    return str(value)


# ---- net weights -----------------------------------------------------------------------


def _param_ids(net) -> list[list[int]]:
    """For each layer, the net-wide parameter id of each of its blobs."""
    ids: list[list[int]] = [[] for _ in net.layers]
    for net_id, (layer_id, _j) in enumerate(net.param_layer_indices):
        ids[layer_id].append(net_id)
    return ids


def save_net_hdf5(net, path, write_diff: bool = False) -> None:
    """Write ``net``'s parameters (and diffs) to ``path`` in Caffe's HDF5 layout."""
    ids = _param_ids(net)
    with atomic_h5_file(path) as handle:
        data = handle.create_group("data")
        diff = handle.create_group("diff") if write_diff else None
        for layer_id, (name, layer) in enumerate(zip(net._layer_names, net.layers, strict=True)):
            layer_data = data.require_group(name)
            layer_diff = diff.require_group(name) if diff is not None else None
            for j, blob in enumerate(layer.blobs):
                if net.param_owners[ids[layer_id][j]] == -1:  # shared copies are not saved
                    layer_data.create_dataset(str(j), data=backend.to_numpy(blob.data))
                if layer_diff is not None:
                    layer_diff.create_dataset(str(j), data=backend.to_numpy(blob.diff))


def load_net_hdf5(net, path) -> None:
    """Copy parameters from Caffe's HDF5 layout into ``net``, matching layers by name.

    Layers of the file that the net lacks are ignored; a layer's blobs must match in
    number (a shared parameter may be missing) and shape.
    """
    ids = _param_ids(net)
    with open_h5_for_reading(path, "weights") as handle:
        if "data" not in handle:
            raise CaffeliteError(f"{path} has no 'data' group; it is not a Caffe HDF5 weights file")
        data = handle["data"]
        h5py = require_h5py()
        known = 0
        for layer_id, (name, layer) in enumerate(zip(net._layer_names, net.layers, strict=True)):
            group = data.get(name)
            if not isinstance(group, h5py.Group):
                continue
            known += 1
            datasets = {key for key, item in group.items() if isinstance(item, h5py.Dataset)}
            if len(datasets) > len(layer.blobs):
                raise CaffeliteError(
                    f"{path}: layer {name!r} has {len(datasets)} parameter blobs in the file, "
                    f"{len(layer.blobs)} in the net"
                )
            for j, blob in enumerate(layer.blobs):
                key = str(j)
                if key not in datasets:
                    if net.param_owners[ids[layer_id][j]] != -1:
                        continue  # shared with an earlier layer, which carries the values
                    raise CaffeliteError(
                        f"{path}: layer {name!r} has no parameter blob {j} in the file "
                        f"({len(datasets)} found, the net needs {len(layer.blobs)})"
                    )
                _load_dataset(group[key], blob, f"{path}: param {j} of layer {name!r}")
        if not known:
            logger.warning("%s: no layer of the file matches a layer of net %r", path, net.name)


def _load_dataset(dataset, blob, where: str) -> None:
    if dataset.dtype.kind not in "fiu":
        raise CaffeliteError(f"{where}: dataset has type {dataset.dtype}; expected numbers")
    shape = tuple(dataset.shape)
    if shape != blob.shape:
        raise CaffeliteError(
            f"{where}: cannot copy, shape {shape} in the file, {blob.shape} in the net. "
            "To learn this layer from scratch instead, rename it."
        )
    blob.data[...] = backend.xp().asarray(np.asarray(dataset[()], dtype=blob.dtype))


# ---- solver state ------------------------------------------------------------------------


RESUME_DATASET = "caffelite_resume"


@dataclass
class SolverStateHDF5:
    """What ``load_solver_state_hdf5`` reads back."""

    iter: int
    learned_net: str
    current_step: int
    history: list
    #: caffelite's resume record (``caffelite.resume``); empty in Caffe's files.
    caffelite_resume: bytes = b""


def save_solver_state_hdf5(
    path, iter: int, learned_net: str, current_step: int, history_arrays, resume: bytes = b""
) -> None:
    """Write a solver state in Caffe's HDF5 layout (history: arrays or Blobs), plus
    caffelite's resume record as a uint8 dataset Caffe does not read."""
    with atomic_h5_file(path) as handle:
        if resume:
            handle.create_dataset(RESUME_DATASET, data=np.frombuffer(resume, dtype=np.uint8))
        _write_int(handle, "iter", iter)
        _write_string(handle, "learned_net", str(learned_net))
        _write_int(handle, "current_step", current_step)
        history = handle.create_group("history")
        for i, item in enumerate(history_arrays):
            values = item.data if isinstance(item, Blob) else item
            history.create_dataset(str(i), data=backend.to_numpy(values))


def load_solver_state_hdf5(path, history=None) -> SolverStateHDF5:
    """Read a solver state written in Caffe's HDF5 layout.

    With ``history`` (the solver's history Blobs or arrays), the file must hold as many
    blobs of the same shapes; their values are copied in place. The returned
    ``history`` lists the file's arrays in order either way.
    """
    h5py = require_h5py()
    with open_h5_for_reading(path, "solver state") as handle:
        iteration = _read_int(handle, "iter", path)
        learned_net = _read_string(handle, "learned_net") if "learned_net" in handle else ""
        current_step = _read_int(handle, "current_step", path)
        resume = bytes(handle[RESUME_DATASET][()]) if RESUME_DATASET in handle else b""
        group = handle.get("history")
        if not isinstance(group, h5py.Group):
            raise CaffeliteError(f"{path}: HDF5 solver state has no 'history' group")
        count = len(group)
        arrays = []
        for i in range(count):
            if str(i) not in group:
                raise CaffeliteError(f"{path}: history blob {i} is missing ({count} stored)")
            arrays.append(np.asarray(group[str(i)][()]))
    if history is not None:
        history = list(history)
        if len(history) != len(arrays):
            raise CaffeliteError(
                f"{path}: holds {len(arrays)} history blobs, the solver has {len(history)}"
            )
        for i, (target, values) in enumerate(zip(history, arrays, strict=True)):
            array = target.data if isinstance(target, Blob) else target
            if tuple(array.shape) != values.shape:
                raise CaffeliteError(
                    f"{path}: history blob {i} has shape {values.shape} in the file, "
                    f"{tuple(array.shape)} in the solver"
                )
            array[...] = backend.get_array_module(array).asarray(values, dtype=array.dtype)
    return SolverStateHDF5(iteration, learned_net, current_step, arrays, resume)
