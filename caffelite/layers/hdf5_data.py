"""HDF5 input and output layers (Caffe's HDF5DataLayer and HDF5OutputLayer).

``HDF5Data`` reads the files listed (one per whitespace-separated entry, paths as
written, relative to the working directory) in ``hdf5_data_param.source``. Each top
is filled from the dataset of the same name; all of a file's datasets share their
first (row) axis. A file is loaded whole, rows are served in order (or a shuffled
order), and a batch continues into the next file when one runs out; after the last
file it wraps to the first. With ``shuffle`` the file order is reshuffled on each
pass and the rows of each file on each load, as in Caffe.

``HDF5Output`` writes its two bottoms to the datasets "data" and "label" of
``hdf5_output_param.file_name`` in Caffe's 4-D num/channels/height/width form (a
(N,) label is stored (N, 1, 1, 1)), appending each batch along the first axis (Caffe
writes one batch and fails on the next; appending keeps every batch).
"""

from __future__ import annotations

import contextlib
import os
import weakref

import numpy as np

from caffelite import backend, limits
from caffelite.errors import CaffeliteError
from caffelite.layer import Layer, register_layer
from caffelite.parallel.world import record_share
from caffelite.resume import is_permutation
from caffelite.rng import get_rng


def read_source_list(source: str, what: str) -> list[str]:
    """The whitespace-separated entries of a list file (Caffe reads it with ``>>``)."""
    if not source:
        raise CaffeliteError(f"{what}: source is empty; give the path of a list file")
    try:
        with open(source) as handle:
            entries = handle.read().split()
    except OSError as exc:
        raise CaffeliteError(
            f"{what}: cannot open source list {source!r}: {exc.strerror}"
        ) from None
    if not entries:
        raise CaffeliteError(f"{what}: source list {source!r} lists no files")
    return entries


@contextlib.contextmanager
def _corruption_named(layer, path: str, name: str):
    """h5py's errors for a damaged file (a cut-short file reads as OSError, a broken
    B-tree as RuntimeError...) as one CaffeliteError naming the file and dataset."""
    try:
        yield
    except CaffeliteError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise layer.error(
            f"HDF5 file {path!r}, dataset {name!r}: the file is damaged or cut short "
            f"({type(exc).__name__}: {exc})"
        ) from None


@register_layer("HDF5Data")
class HDF5DataLayer(Layer):
    """Serves rows of HDF5 datasets named like the tops, ``batch_size`` at a time."""

    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        if self.layer_param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data; remove transform_param")
        p = self.layer_param.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error(f"hdf5_data_param.batch_size must be positive, got {self.batch_size}")
        self.shuffle = bool(p.shuffle)
        self.source = p.source
        try:
            self.filenames = read_source_list(p.source, "hdf5_data_param")
        except CaffeliteError as exc:
            raise self.error(str(exc)) from None
        self.dataset_names = list(self.layer_param.top)
        self._dtype = top[0].dtype
        self._file_order = np.arange(len(self.filenames))
        if self.shuffle:
            get_rng().shuffle(self._file_order)
        self._file_pos = 0
        self._row_shapes: list[tuple[int, ...]] | None = None
        self._load(self._file_order[0])
        self._row_shapes = [a.shape[1:] for a in self._arrays]
        self._row = 0
        # In a data-parallel job, rank r of N reads rows r, r+N, ... of the stream of
        # rows across all files (Caffe's HDF5DataLayer::Skip).
        first, self._stride = record_share(self.phase)
        self._advance(first)
        self.reshape(bottom, top)

    def _load(self, file_index: int) -> None:
        """Read every top's dataset of one file into host memory (Caffe's LoadHDF5FileData)."""
        from caffelite.hdf5 import require_h5py

        h5py = require_h5py()
        path = self.filenames[file_index]
        if not os.path.isfile(path):
            raise self.error(
                f"HDF5 file {path!r} (listed in {self.source!r}; relative paths are taken "
                "from the working directory) does not exist"
            )
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise self.error(f"cannot open HDF5 file {path!r}: {exc}") from None
        arrays = []
        with handle:
            for name in self.dataset_names:
                with _corruption_named(self, path, name):
                    arrays.append(self._read_dataset(h5py, handle, path, name))
        rows = arrays[0].shape[0]
        for name, array in zip(self.dataset_names, arrays, strict=True):
            if array.shape[0] != rows:
                raise self.error(
                    f"datasets of {path!r} differ in rows: {self.dataset_names[0]!r} has "
                    f"{rows}, {name!r} has {array.shape[0]}"
                )
            if array.shape[0] == 0:
                raise self.error(f"dataset {name!r} in {path!r} has no rows")
        if self._row_shapes is not None:
            expected = zip(self.dataset_names, arrays, self._row_shapes, strict=True)
            for name, array, shape in expected:
                if array.shape[1:] != shape:
                    raise self.error(
                        f"dataset {name!r} in {path!r} has rows of shape {array.shape[1:]}, "
                        f"but the first file's rows are {shape}"
                    )
        self._arrays = arrays
        self._rows = np.arange(rows)
        if self.shuffle:
            get_rng().shuffle(self._rows)

    def _read_dataset(self, h5py, handle, path: str, name: str):
        dataset = handle.get(name)
        if not isinstance(dataset, h5py.Dataset):
            found = ", ".join(sorted(handle)) or "none"
            raise self.error(
                f"HDF5 file {path!r} has no dataset {name!r} (tops are read from the "
                f"datasets of the same name; the file has: {found})"
            )
        if dataset.ndim < 1 or dataset.dtype.kind not in "fiub":
            raise self.error(
                f"dataset {name!r} in {path!r} must be a numeric array with at least "
                f"one axis, got shape {dataset.shape} of type {dataset.dtype}"
            )
        try:  # the declared shape, before h5py allocates it
            limits.check_allocation(dataset.shape, self._dtype.itemsize, f"dataset {name!r}")
        except limits.SizeLimitError as exc:
            raise self.error(f"HDF5 file {path!r}: {exc}") from None
        return self._as_blob_type(dataset[()], path, name)

    def _as_blob_type(self, values, path: str, name: str):
        """``values`` in the blobs' float type; a finite value too large for it (a float64
        file read into float32 blobs) is refused, where a cast would make it inf."""
        with np.errstate(over="ignore"):
            cast = np.asarray(values, dtype=self._dtype)
        if values.dtype.kind == "f" and values.dtype.itemsize > self._dtype.itemsize:
            overflow = np.isfinite(values) & ~np.isfinite(cast)
            if overflow.any():
                index = np.unravel_index(int(np.argmax(overflow)), values.shape)
                raise self.error(
                    f"dataset {name!r} in {path!r}: value {values[index]:g} at row "
                    f"{index[0]} (index {tuple(int(i) for i in index)}) is beyond the "
                    f"range of {self._dtype} blobs"
                )
        return cast

    def _next_file(self) -> None:
        """At the end of a file: the next one (wrapping, reshuffling), or reshuffle rows."""
        if len(self.filenames) > 1:
            self._file_pos += 1
            if self._file_pos == len(self.filenames):
                self._file_pos = 0
                if self.shuffle:
                    get_rng().shuffle(self._file_order)
            self._load(self._file_order[self._file_pos])
        elif self.shuffle:
            get_rng().shuffle(self._rows)
        self._row = 0

    def _advance(self, rows: int) -> None:
        """Move ``rows`` on in the stream of rows, into the next files as needed."""
        self._row += rows
        while self._row >= len(self._rows):
            carry = self._row - len(self._rows)
            self._next_file()
            self._row = carry

    # ---- caffelite.resume --------------------------------------------------------
    def resume_state(self) -> dict:
        return {
            "file_order": self._file_order.tolist(),
            "file_pos": self._file_pos,
            "rows": self._rows.tolist() if self.shuffle else None,
            "row": self._row,
        }

    def restore_resume_state(self, state: dict) -> None:
        file_order = np.asarray(state["file_order"])
        if not is_permutation(file_order, len(self.filenames)):
            raise self.error(
                f"the resume state orders {len(file_order)} files; {self.source!r} now lists "
                f"{len(self.filenames)}: the list changed since the snapshot"
            )
        self._file_order = file_order
        self._file_pos = int(state["file_pos"])
        self._load(self._file_order[self._file_pos])  # may shuffle: the solver resets the rng
        rows = state["rows"]
        if rows is not None:
            if not is_permutation(rows, len(self._rows)):
                raise self.error(
                    f"the resume state orders {len(rows)} rows of "
                    f"{self.filenames[self._file_order[self._file_pos]]!r}, which now has "
                    f"{len(self._rows)}: the file changed since the snapshot"
                )
            self._rows = np.asarray(rows)
        self._row = int(state["row"])

    def reshape(self, bottom, top):
        for blob, shape in zip(top, self._row_shapes, strict=True):
            blob.reshape((self.batch_size,) + shape)

    def forward(self, bottom, top):
        xp = self.xp
        filled = 0
        stride = self._stride
        while filled < self.batch_size:
            left_in_file = -(-(len(self._rows) - self._row) // stride)
            take = min(self.batch_size - filled, left_in_file)
            rows = self._rows[self._row : self._row + take * stride : stride]
            for blob, array in zip(top, self._arrays, strict=True):
                blob.data[filled : filled + take] = xp.asarray(array[rows])
            filled += take
            self._advance(take * stride)


@register_layer("HDF5Output")
class HDF5OutputLayer(Layer):
    """Appends bottom 0 to dataset "data" and bottom 1 to "label" of an HDF5 file."""

    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 0
    allow_force_backward_bottoms = False

    DATASETS = ("data", "label")

    def setup(self, bottom, top):
        from caffelite.hdf5 import require_h5py

        h5py = require_h5py()
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is empty; give the output file")
        try:
            self._file = h5py.File(self.file_name, "w")
        except OSError as exc:
            raise self.error(f"cannot create HDF5 file {self.file_name!r}: {exc}") from None
        self._finalizer = weakref.finalize(self, self._file.close)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1] or not bottom[0].shape:
            raise self.error(
                f"data and label must have the same batch size (first axis); got shapes "
                f"{bottom[0].shape} and {bottom[1].shape}"
            )

    def forward(self, bottom, top):
        if not self._finalizer.alive:
            raise self.error(f"HDF5 file {self.file_name!r} is already closed")
        for name, blob in zip(self.DATASETS, bottom, strict=True):
            values = backend.to_numpy(blob.data).reshape(self._legacy_shape(name, blob))
            dataset = self._file.get(name)
            if dataset is None:
                self._file.create_dataset(
                    name, data=values, maxshape=(None,) + values.shape[1:], chunks=True
                )
                continue
            if dataset.shape[1:] != values.shape[1:]:
                raise self.error(
                    f"bottom {name!r} has shape {values.shape}, but earlier batches written to "
                    f"{self.file_name!r} had rows of shape {dataset.shape[1:]}"
                )
            start = dataset.shape[0]
            dataset.resize(start + values.shape[0], axis=0)
            dataset[start:] = values
        self._file.flush()

    def _legacy_shape(self, name: str, blob) -> tuple[int, int, int, int]:
        """Caffe's (num, channels, height, width): missing axes are 1; more than 4 fail."""
        if blob.num_axes > 4:
            raise self.error(
                f"bottom {name!r} has shape {blob.shape}; HDF5Output writes Caffe's 4-D "
                "num/channels/height/width form, so at most 4 axes"
            )
        return (blob.num, blob.channels, blob.height, blob.width)

    def backward(self, top, propagate_down, bottom):
        """An output sink: nothing flows back."""

    def close(self) -> None:
        """Close the output file (also done when the layer is garbage collected)."""
        self._finalizer()
