"""Blob: the n-d array pair (``data``, ``diff``) that layers read and write.

Memory is kept in flat buffers that only grow, so reshaping to a size that fits
reuses the allocation (as Caffe's Blob::Reshape does) and steady-state training
allocates nothing. ``diff`` is allocated on first use: inference never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy

from caffelite import backend, limits
from caffelite.errors import CaffeliteError
from caffelite.syncedmem import SyncedMemory

MAX_BLOB_AXES = 32


class _Count(int):
    """``blob.count`` works both as pycaffe's property and as Caffe's ``count(start, end)``."""

    def __new__(cls, shape: tuple[int, ...]):
        obj = super().__new__(cls, math.prod(shape))
        obj._shape = shape
        return obj

    def __call__(self, start: int = 0, end: int | None = None) -> int:
        return math.prod(self._shape[start:end])


def _as_shape(args) -> tuple[int, ...]:
    """Accept ``reshape(2, 3)``, ``reshape((2, 3))``, ``reshape([2, 3])`` or a BlobShape."""
    if len(args) == 1:
        (arg,) = args
        if hasattr(arg, "dim"):
            args = tuple(arg.dim)
        elif isinstance(arg, Iterable):
            args = tuple(arg)
    shape = tuple(int(d) for d in args)
    if len(shape) > MAX_BLOB_AXES:
        raise CaffeliteError(f"blob shape {shape} has more than {MAX_BLOB_AXES} axes")
    if any(d < 0 for d in shape):
        raise CaffeliteError(f"blob shape {shape} has a negative dimension")
    return shape


class Blob:
    """Holds ``data`` and its gradient ``diff`` with the same shape and float type.

    The values live in a :class:`~caffelite.syncedmem.SyncedMemory` each: host memory
    alone in CPU mode; host and device memory for a blob made in GPU mode. ``data`` and
    ``diff`` are then the device arrays inside a layer (a device scope) and numpy arrays
    everywhere else, so pycaffe code that writes ``blob.data[...]`` before ``forward()``
    and reads it after keeps working; the copies happen only when a side is stale.
    Caffe's explicit forms are here too: ``cpu_data()`` (read-only), ``mutable_cpu_data()``,
    ``gpu_data()``, ``mutable_gpu_data()`` and the same for diff.
    """

    def __init__(self, *shape, dtype=None):
        self.dtype = numpy.dtype(dtype) if dtype is not None else backend.default_dtype()
        #: Where this blob's memory has its device copy (None: host only, CPU mode).
        self.device = backend.new_memory_device()
        self._shape: tuple[int, ...] = ()
        self._data_mem: SyncedMemory | None = None
        self._diff_mem: SyncedMemory | None = None
        self._views: dict[str, object] = {}
        self.reshape(*shape) if shape else self.reshape(())

    # ---- shape -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    @property
    def count(self) -> _Count:
        return _Count(self._shape)

    def canonical_axis_index(self, axis: int) -> int:
        """Map a possibly negative axis to ``0..num_axes-1``, with a clear error."""
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise CaffeliteError(f"axis {axis} out of range for a {n}-axis blob {self._shape}")
        return axis + n if axis < 0 else axis

    def shape_at(self, axis: int) -> int:
        return self._shape[self.canonical_axis_index(axis)]

    def _legacy_shape(self, index: int) -> int:
        if len(self._shape) > 4:
            raise CaffeliteError(f"legacy accessors need at most 4 axes; blob is {self._shape}")
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self._legacy_shape(0))
    channels = property(lambda self: self._legacy_shape(1))
    height = property(lambda self: self._legacy_shape(2))
    width = property(lambda self: self._legacy_shape(3))

    def reshape(self, *shape) -> None:
        """Change the shape; memory is reused when the new size fits the old buffer."""
        shape = _as_shape(shape)
        if shape == self._shape and self._data_mem is not None:
            return  # every layer reshapes its tops before each forward: keep the views
        count = math.prod(shape)
        if self._data_mem is None or self._data_mem.size < count:
            try:
                limits.check_allocation(shape, self.dtype.itemsize)
            except limits.SizeLimitError as exc:
                exc.blob = self  # the Net names the layer and the blob
                raise
            self._data_mem = SyncedMemory(max(count, 1), self.dtype, self.device)
            self._diff_mem = None
        if self._diff_mem is not None and self._diff_mem.size < count:
            self._diff_mem = None
        self._shape = shape
        self._views = {}

    def reshape_like(self, other: Blob) -> None:
        self.reshape(other.shape)

    @property
    def data_memory(self) -> SyncedMemory:
        """The SyncedMemory behind ``data`` (shared by blobs that share data)."""
        return self._data_mem

    # ---- data and diff -----------------------------------------------------
    def _view(self, key: str, flat):
        """``flat``'s first ``count`` values in this blob's shape, made once per reshape."""
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = flat[: math.prod(self._shape)].reshape(self._shape)
        return view

    def _in_device_scope(self) -> bool:
        return self.device is not None and backend.current_scope() is self.device

    @property
    def data(self):
        """The values, for reading and writing: device array in a device scope, else numpy."""
        if self._in_device_scope():
            return self._view("gpu_data", self._data_mem.mutable_gpu_data())
        return self._view("cpu_data", self._data_mem.mutable_cpu_data())

    @data.setter
    def data(self, value) -> None:
        self.data[...] = value

    @property
    def diff(self):
        """The gradient, allocated (zeroed) on first use: inference never pays for it."""
        if self._in_device_scope():
            return self._view("gpu_diff", self._diff_memory().mutable_gpu_data())
        return self._view("cpu_diff", self._diff_memory().mutable_cpu_data())

    @diff.setter
    def diff(self, value) -> None:
        self.diff[...] = value

    def _diff_memory(self) -> SyncedMemory:
        if self._diff_mem is None:
            self._diff_mem = SyncedMemory(self._data_mem.size, self.dtype, self.device)
        return self._diff_mem

    @property
    def has_diff(self) -> bool:
        return self._diff_mem is not None

    def cpu_data(self) -> numpy.ndarray:
        """The host values, synced, read-only: reading moves no head (snapshots, display)."""
        return _read_only(self._view("cpu_data", self._data_mem.cpu_data()))

    def cpu_diff(self) -> numpy.ndarray:
        return _read_only(self._view("cpu_diff", self._diff_memory().cpu_data()))

    def mutable_cpu_data(self) -> numpy.ndarray:
        return self._view("cpu_data", self._data_mem.mutable_cpu_data())

    def mutable_cpu_diff(self) -> numpy.ndarray:
        return self._view("cpu_diff", self._diff_memory().mutable_cpu_data())

    def gpu_data(self):
        """The device values, synced, for reading (as Caffe's ``gpu_data()``)."""
        return self._view("gpu_data", self._data_mem.gpu_data())

    def gpu_diff(self):
        return self._view("gpu_diff", self._diff_memory().gpu_data())

    def mutable_gpu_data(self):
        return self._view("gpu_data", self._data_mem.mutable_gpu_data())

    def mutable_gpu_diff(self):
        return self._view("gpu_diff", self._diff_memory().mutable_gpu_data())

    def share_data(self, other: Blob) -> None:
        """Use ``other``'s data memory (same count), as Flatten and Reshape do."""
        self._check_same_count(other)
        self._data_mem = other._data_mem
        self._views = {}

    def share_diff(self, other: Blob) -> None:
        self._check_same_count(other)
        self._diff_mem = other._diff_memory()
        self._views = {}

    def _check_same_count(self, other: Blob) -> None:
        if self.count != other.count:
            raise CaffeliteError(
                f"cannot share memory between blobs of shapes {self._shape} and {other.shape}"
            )
        if self.device is not other.device:
            raise CaffeliteError(
                f"cannot share memory between a blob made in {_mode_name(self)} mode and one "
                f"made in {_mode_name(other)} mode"
            )

    # ---- serialisation -----------------------------------------------------
    def to_proto(self, write_diff: bool = False):
        """A BlobProto with the ``shape`` form (double fields for float64 blobs)."""
        from caffelite.proto import caffe_pb2

        proto = caffe_pb2.BlobProto()
        proto.shape.dim.extend(self._shape)
        double = self.dtype == numpy.float64
        fields = [("double_data" if double else "data", self.cpu_data())]
        if write_diff:
            fields.append(("double_diff" if double else "diff", self.cpu_diff()))
        for name, values in fields:
            set_packed(proto, name, values)
        return proto

    def from_proto(self, proto, reshape: bool = True) -> None:
        """Load a BlobProto in the ``shape`` form or the legacy 4-d form."""
        shape = proto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif not shapes_match(shape, self._shape):
            raise CaffeliteError(f"blob shape mismatch: file has {shape}, blob has {self._shape}")
        values = _proto_values(proto, "data")
        if values.size != self.count:
            raise CaffeliteError(
                f"BlobProto of shape {shape} carries {values.size} values, expected {self.count}"
            )
        self.mutable_cpu_data()[...] = values.reshape(self._shape)
        diff = _proto_values(proto, "diff")
        if diff.size == self.count and diff.size:
            self.mutable_cpu_diff()[...] = diff.reshape(self._shape)

    def __repr__(self) -> str:
        return f"Blob(shape={self._shape}, dtype={self.dtype.name})"


def _read_only(view: numpy.ndarray) -> numpy.ndarray:
    read_only = view.view()
    read_only.flags.writeable = False
    return read_only


def _mode_name(blob: Blob) -> str:
    return "CPU" if blob.device is None else "GPU"


def set_packed(proto, field_name: str, values) -> None:
    """Fill the packed repeated float/double field ``field_name`` of ``proto`` with ``values``.

    The field is handed to protobuf as its wire bytes (tag, length, little-endian
    values), which it parses in C: no Python float per value, so snapshots of large
    nets neither take long nor make a memory spike.
    """
    field = proto.DESCRIPTOR.fields_by_name[field_name]
    dtype = "<f8" if field.type == field.TYPE_DOUBLE else "<f4"
    payload = numpy.ascontiguousarray(backend.to_numpy(values), dtype=dtype).tobytes()
    proto.ClearField(field_name)
    if payload:
        proto.MergeFromString(_varint(field.number << 3 | 2) + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def shapes_match(file_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Equal shapes, or a legacy 4-d shape equal to ``shape`` padded with leading 1s
    (Caffe's Blob::ShapeEquals: an old (1, 1, N, K) weight is today's (N, K))."""
    if file_shape == shape:
        return True
    if len(file_shape) == 4 and len(shape) <= 4:
        return file_shape == (1,) * (4 - len(shape)) + tuple(shape)
    return False


def proto_shape(proto) -> tuple[int, ...]:
    """The shape a BlobProto declares: legacy num/channels/height/width win if present."""
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim)


def _proto_values(proto, kind: str) -> numpy.ndarray:
    single = getattr(proto, kind)
    double = getattr(proto, "double_" + kind)
    if len(double) and not len(single):
        return numpy.asarray(double, dtype=numpy.float64)
    return numpy.asarray(single, dtype=numpy.float32)
